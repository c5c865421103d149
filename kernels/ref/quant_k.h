// ggml's k-quant formats q4_k and q6_k (block layouts in kernels/base/dtype.h): naive reference
// dequantisers, written as plain loops over the documented layout, and simple row quantisers.
// The quantisers are not ggml's (no iterative scale search): they produce valid blocks whose
// error is bounded as stated below, which is what make-model and the tests need.
#pragma once

#include <cstdint>

#include "kernels/base/dtype.h"

namespace kiln::ref {

// n % 256 == 0; y[n].
void dequantize_row_q4_k(const BlockQ4_K* in, float* y, int64_t n);
void dequantize_row_q6_k(const BlockQ6_K* in, float* y, int64_t n);

// q4_k, per 32-element sub-block: min/max affine (offset = −min(0, min x), step = range/15),
// step and offset rounded to 6 bits against the super-block's f16 d/dmin, values rounded to the
// nearest of the 16 levels. Error per element: half a step (range/30) plus the 6-bit rounding of
// step and offset. Measured on Gaussian data: max |err| ≈ 6.6% of the super-block's amax,
// NMSE ≈ 6e-3 (the step of 4 bits over 32 values itself gives ≈ 6e-3; ggml's search does better).
void quantize_row_q4_k(const float* x, BlockQ4_K* out, int64_t n);
// q6_k, per 16-element sub-block: symmetric max-abs (step = amax/31), step rounded to an int8
// against the super-block's f16 d, values rounded to the nearest q − 32 ∈ [−32, 31]. Measured on
// Gaussian data: max |err| ≈ 1.6% of amax (up to ~4% when amax ≲ 0.01 makes d a coarse f16
// subnormal), NMSE ≈ 4e-4.
void quantize_row_q6_k(const float* x, BlockQ6_K* out, int64_t n);

}  // namespace kiln::ref
