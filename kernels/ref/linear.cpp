// Reference matmul and embedding lookup: dequantise each row with the scalar converters of
// kernels/base/dtype.h, accumulate in double.
#include <vector>

#include "kernels/base/check.h"
#include "kernels/ref/ref.h"

namespace kiln::ref {

void matmul(const MatrixView& w, const float* x, int64_t x_stride, int64_t n, float* y,
            int64_t y_stride) {
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row(w.dtype, w.row(r), row.data(), w.cols);
    for (int64_t t = 0; t < n; ++t) {
      double s = 0.0;
      for (int64_t c = 0; c < w.cols; ++c) s += double(row[size_t(c)]) * x[t * x_stride + c];
      y[t * y_stride + r] = static_cast<float>(s);
    }
  }
}

void embedding_lookup(const MatrixView& table, const int32_t* ids, int64_t n, float* out) {
  for (int64_t t = 0; t < n; ++t) {
    KILN_CHECK(ids[t] >= 0 && ids[t] < table.rows);
    dequantize_row(table.dtype, table.row(ids[t]), out + t * table.cols, table.cols);
  }
}

}  // namespace kiln::ref
