// Naive reference twins of the kernels in kernels/cpu, for parity tests: same contracts and
// shapes as the cpu:: functions (see those headers) minus the ThreadPool, written as plain loops
// with double accumulation so they are obviously correct. Slow; never on a serving path.
#pragma once

#include <cstdint>

#include "kernels/base/matrix.h"

namespace kiln::ref {

// gemm.h
void matmul(const MatrixView& w, const float* x, int64_t x_stride, int64_t n, float* y,
            int64_t y_stride);
void embedding_lookup(const MatrixView& table, const int32_t* ids, int64_t n, float* out);
// The integer path of gemm.h for quantised weights: each x row quantised in blocks of `block`
// values (32 for q8_0 weights, 256 for q4_k/q6_k): d = amax/127, q = nearest-even(x·(127/amax)),
// in fp32; bsums (block 256 only, may be null otherwise) = Σ q per 16 values. Then the
// dequantised weights dotted with d·q in double.
void quantize_activations(int block, const float* x, int64_t K, int8_t* q, float* d,
                          int16_t* bsums);
void matmul_int8_activations(const MatrixView& w, const float* x, int64_t x_stride, int64_t n,
                             float* y, int64_t y_stride);

// norm.h
void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t dim, float eps, float* y);
void add_rms_norm(float* h, const float* delta, const float* w, int64_t n_rows, int64_t dim,
                  float eps, float* y);
void l2_norm(float* x, int64_t n_rows, int64_t dim, float eps, float scale);
void gated_rms_norm_sigmoid(const float* o, const float* z, const float* w, int64_t n_rows,
                            int64_t dim, float eps, float* y);

// elementwise.h / conv.h
void silu_mul(const float* gate, const float* up, int64_t n, float* out);
void causal_conv1d_silu(const float* x, int64_t x_stride, int64_t T, int64_t C, const float* w,
                        int K, float* state, float* y, int64_t y_stride);

// kda.h: the gate and the §3.2 recurrence (the chunked form is tested against the recurrence).
void kda_gate(float* f, int64_t T, int64_t H, int64_t K, const float* a_neg, const float* dt_bias);
void kda_recurrent(const float* q, const float* k, const float* v, const float* g,
                   const float* beta, int64_t T, int64_t H, int64_t K, int64_t V, float* state,
                   float* o);

// mla.h: the absorbed form over pages of latent rows, and the non-absorbed form of
// kimi-linear.md §4 steps 4–5 over one contiguous cache:
// q_nope: [T][H][N], q_pe: [T][H][P], cache: [n_ctx][R+P] rows [c | k_pe],
// w_uk: [H][N][R] (k_nope = W_UK c), w_uv: [H][V][R] (v = W_UV c), out: [T][H][V].
void mla_attention_absorbed(const float* q, int64_t T, int64_t H, int64_t R, int64_t P,
                            const float* const* pages, int64_t page_tokens, int64_t pos0,
                            float scale, float* out);
void mla_attention_expanded(const float* q_nope, const float* q_pe, int64_t T, int64_t H,
                            int64_t N, int64_t P, const float* cache, int64_t R,
                            const float* w_uk, const float* w_uv, int64_t V, int64_t pos0,
                            float scale, float* out);

// moe.h / sampling.h
void moe_route(const float* logits, int64_t T, int64_t n_experts, const float* bias, int k,
               bool renormalize, float scale, int32_t* ids, float* weights);
void softmax(float* x, int64_t n);
int32_t argmax(const float* x, int64_t n);

}  // namespace kiln::ref
