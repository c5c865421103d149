// MatrixView: a non-owning view of a weight matrix in its stored dtype, in the orientation of a
// PyTorch nn.Linear weight: [rows = out features][cols = in features], y = W x.
// Rows may be strided (a per-head slice of a larger matrix); a row holds `cols` elements stored
// contiguously (for q8_0, cols/32 blocks).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/base/dtype.h"

namespace kiln {

struct MatrixView {
  DType dtype = DType::kF32;
  const std::byte* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  // bytes between the starts of consecutive rows

  const std::byte* row(int64_t r) const { return data + r * row_stride; }
  // Rows [begin, begin + n) as a view.
  MatrixView slice_rows(int64_t begin, int64_t n) const {
    return {dtype, data + begin * row_stride, n, cols, row_stride};
  }
  // Columns [begin, begin + n) of every row as a view (begin and n block-aligned for q8_0).
  MatrixView slice_cols(int64_t begin, int64_t n) const {
    return {dtype, data + dtype_row_bytes(dtype, begin), rows, n, row_stride};
  }
  static MatrixView contiguous(DType t, const void* data, int64_t rows, int64_t cols) {
    return {t, static_cast<const std::byte*>(data), rows, cols, dtype_row_bytes(t, cols)};
  }
};

}  // namespace kiln
