// Matrix products with weights in their stored dtype (f32, f16, bf16, q8_0, q4_k, q6_k), fp32
// accumulation. One entry point for GEMV (n = 1, decode) and GEMM (n > 1, prefill); threads split
// the weight rows so each thread streams disjoint rows and each weight byte is read once per call.
//
// Activations: f32, except for the decode tokens of products over quantised weights (q8_0,
// q4_k, q6_k): their activations are quantised to int8 first, as llama.cpp does (per 32 values
// for q8_0, per 256 for q4_k/q6_k; gemm_int8.h), and dotted with the weights in exact integer
// arithmetic. That is several times less work per weight than converting it to f32, which is what
// bounds quantised decode; the result is the dot product of the dequantised weights with the
// quantised activations (ref::matmul_int8_activations), about 1e-3 from f32 activations.
// Which tokens are decode tokens is the caller's to say (int8_tokens), so that a token's
// arithmetic depends only on itself, never on what else shares the call: the model passes the
// tokens of its short spans. ThreadPool::set_exact_activations(true) keeps f32 everywhere.
#pragma once

#include <cstdint>

#include "kernels/base/matrix.h"
#include "kernels/cpu/thread_pool.h"

namespace kiln::cpu {

// int8_tokens: the first int8_tokens of the n tokens are decode tokens (above); kInt8Auto: all
// of them when n ≤ 4, none otherwise.
inline constexpr int64_t kInt8Auto = -1;

// y[t][r] = sum_c w[r][c] * x[t][c] for t in [0, n), r in [0, w.rows).
// x: [n][w.cols] with row stride x_stride (floats); y: [n][w.rows] with row stride y_stride.
// y must not alias x.
void matmul(ThreadPool& pool, const MatrixView& w, const float* x, int64_t x_stride, int64_t n,
            float* y, int64_t y_stride, int64_t int8_tokens = kInt8Auto);

// How many of the n tokens matmul over `t` weights takes through the integer path.
int64_t matmul_int8_tokens(const ThreadPool& pool, DType t, int64_t n,
                           int64_t int8_tokens = kInt8Auto);

// matmul on the calling thread only, with the same values: for callers that split the work over
// something else (the MoE runs whole experts per thread). `pool` gives only the settings.
void matmul_serial(const ThreadPool& pool, const MatrixView& w, const float* x, int64_t x_stride,
                   int64_t n, float* y, int64_t y_stride, int64_t int8_tokens = kInt8Auto);

// out[t][:] = table row ids[t], converted to f32. out: [n][table.cols] contiguous.
void embedding_lookup(const MatrixView& table, const int32_t* ids, int64_t n, float* out);

}  // namespace kiln::cpu
