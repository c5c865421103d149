// Reference matmul and embedding lookup: dequantise each row with the scalar converters of
// kernels/base/dtype.h, accumulate in double.
#include <cmath>
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

void quantize_activations(int block, const float* x, int64_t K, int8_t* q, float* d,
                          int16_t* bsums) {
  for (int64_t b = 0; b < K / block; ++b) {
    const float* xb = x + b * block;
    float amax = 0.0f;
    for (int i = 0; i < block; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
    const float scale = amax != 0.0f ? 127.0f / amax : 0.0f;
    d[b] = amax / 127.0f;
    for (int i = 0; i < block; ++i) {
      q[b * block + i] = static_cast<int8_t>(std::nearbyint(xb[i] * scale));
    }
  }
  if (bsums == nullptr) return;
  for (int64_t g = 0; g < K / 16; ++g) {
    int s = 0;
    for (int i = 0; i < 16; ++i) s += q[g * 16 + i];
    bsums[g] = static_cast<int16_t>(s);
  }
}

void matmul_int8_activations(const MatrixView& w, const float* x, int64_t x_stride, int64_t n,
                             float* y, int64_t y_stride) {
  KILN_CHECK(w.dtype == DType::kQ8_0 || w.dtype == DType::kQ4_K || w.dtype == DType::kQ6_K);
  const int block = w.dtype == DType::kQ8_0 ? 32 : 256;
  const auto K = static_cast<size_t>(w.cols);
  std::vector<float> xq(static_cast<size_t>(n) * K), row(K), d(K / block);
  std::vector<int8_t> q(K);
  for (int64_t t = 0; t < n; ++t) {
    quantize_activations(block, x + t * x_stride, w.cols, q.data(), d.data(), nullptr);
    for (size_t c = 0; c < K; ++c) xq[t * K + c] = d[c / block] * static_cast<float>(q[c]);
  }
  for (int64_t r = 0; r < w.rows; ++r) {
    dequantize_row(w.dtype, w.row(r), row.data(), w.cols);
    for (int64_t t = 0; t < n; ++t) {
      double s = 0.0;
      for (size_t c = 0; c < K; ++c) s += double(row[c]) * double(xq[t * K + c]);
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
