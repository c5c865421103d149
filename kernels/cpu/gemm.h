// Matrix products with weights in their stored dtype (f32, f16, bf16, q8_0), fp32 accumulation.
// One entry point for GEMV (n = 1, decode) and GEMM (n > 1, prefill); threads split the weight
// rows so each thread streams disjoint rows and each weight byte is read once per call.
#pragma once

#include <cstdint>

#include "kernels/base/matrix.h"
#include "kernels/cpu/thread_pool.h"

namespace kiln::cpu {

// y[t][r] = sum_c w[r][c] * x[t][c] for t in [0, n), r in [0, w.rows).
// x: [n][w.cols] with row stride x_stride (floats); y: [n][w.rows] with row stride y_stride.
// y must not alias x.
void matmul(ThreadPool& pool, const MatrixView& w, const float* x, int64_t x_stride, int64_t n,
            float* y, int64_t y_stride);

// matmul on the calling thread only, with the same values: for callers that split the work over
// something else (the MoE runs whole experts per thread).
void matmul_serial(const MatrixView& w, const float* x, int64_t x_stride, int64_t n, float* y,
                   int64_t y_stride);

// out[t][:] = table row ids[t], converted to f32. out: [n][table.cols] contiguous.
void embedding_lookup(const MatrixView& table, const int32_t* ids, int64_t n, float* out);

}  // namespace kiln::cpu
