// The CUDA kernels' host entry points: the forward pass's ops with the same meaning as their CPU
// twins (kernels/cpu), over device pointers, asynchronous on ctx.stream(). None of them
// allocates, copies to the host or synchronises. Shapes are checked with KILN_CHECK (bugs).
//
// Sequences: ops that work per sequence take a device array of Span (one per sequence, in row
// order: spans[i].begin = Σ_{j<i} spans[j].n) and the total row count; they run every sequence
// in one launch. Per-slot state lives in one allocation per layer kind; a slot's part starts at
// state_base + slot · slot_stride (floats), laid out as the CPU twin's state argument.
//
// Numerics: all accumulation is fp32. Transcendentals use the full-precision CUDA functions
// (expf, log1pf, sqrtf — no --use_fast_math), so f32 ops match the CPU within a few ulps; the
// tests give each op's tolerance.
#pragma once

#include <cstdint>

#include "kernels/base/dtype.h"
#include "kernels/cuda/runtime.h"

namespace kiln::cuda {

// One sequence of a batch (device memory, POD): rows [begin, begin + n) of the batch are
// positions [pos0, pos0 + n) of the sequence held in state slot `slot`.
struct Span {
  int32_t slot;
  int32_t pos0;
  int32_t begin;
  int32_t n;
};

// A weight matrix in device memory, [rows][cols] as an nn.Linear weight (y = W x), rows
// row_stride bytes apart. dtype: f32, f16, bf16, q8_0, q4_k or q6_k, stored as on the host
// (kernels/base/dtype.h); data and row_stride 4-byte aligned for f32, 2-byte aligned otherwise.
struct DeviceMatrix {
  DType dtype = DType::kF32;
  const void* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;  // bytes
};

// ---- GEMM / GEMV (gemm.cu) ------------------------------------------------------------------

// Up to this many rows (tokens) matmul uses the GEMV kernel: it streams each weight byte once,
// dequantises in registers and keeps the activations in f32. Above it, cuBLAS.
inline constexpr int64_t kGemvMaxRows = 16;

// y[t][r] = Σ_c w[r][c] · x[t][c] for t < n, r < w.rows (as cpu::matmul). x: [n] rows with stride
// x_stride floats; y: [n] rows with stride y_stride floats; y must not alias x.
// n ≤ kGemvMaxRows: the GEMV kernel (exact weights, f32 activations). Otherwise cuBLAS, fp32
// compute and accumulation, no TF32:
//  - f32 weights: SGEMM (GemmEx, CUBLAS_COMPUTE_32F) on x in place.
//  - f16 / bf16 weights: x split into hi = T(x) and lo = T(x − hi) in the weight type T, then two
//    16-bit GemmEx calls into y (W·hi, then += W·lo), on the tensor cores. x's error is at most
//    2^-16·|x| for bf16; for f16 it is max(2^-22·|x|, 2^-25) (lo is subnormal below 2^-14), and
//    |x| > 65504 overflows to inf (the range of the f16 weights themselves).
//  - q8_0 / q4_k / q6_k weights: chunks of rows dequantised to f32 (exactly) in the scratch,
//    then an f32 GemmEx with x in place: exact up to fp32 rounding.
// Needs ctx scratch of matmul_scratch_bytes(w, n).
void matmul(Context& ctx, const DeviceMatrix& w, const float* x, int64_t x_stride, int64_t n,
            float* y, int64_t y_stride);
// Scratch bytes matmul(w, n) needs: 0 on the GEMV path and for f32 weights; 4·n·cols (rounded
// up) for f16/bf16 (hi and lo); 4·min(rows, 4096)·cols (rounded up) for the quantised dtypes.
int64_t matmul_scratch_bytes(const DeviceMatrix& w, int64_t n);

// Grouped expert matmul for the MoE, without a host round trip: E experts of identical shape
// and dtype, expert e's matrix at w.data + e · expert_stride bytes (w describes expert 0).
// order[offsets[e] .. offsets[e+1]) lists the assignment ids routed to expert e (see moe_group);
// for each such assignment a:
//   y[a][r] = Σ_c W_e[r][c] · x[a / x_row_div][c]
// (x_row_div = k reads the token's row for gate/up; 1 reads the assignment's own row for down).
// Each expert's weights are read once per call for all of its assignments. x rows are x_stride
// floats apart, y rows y_stride. offsets: [E+1] device ints, offsets[E] = n_assign.
void grouped_matmul(Context& ctx, const DeviceMatrix& w, int64_t expert_stride, int64_t E,
                    const int32_t* offsets, const int32_t* order, int64_t n_assign,
                    const float* x, int64_t x_stride, int64_t x_row_div, float* y,
                    int64_t y_stride);

// out[t][:] = table row (ids[t] − vocab_begin) in f32 when ids[t] ∈ [vocab_begin, vocab_end),
// else zeros (a vocab-parallel shard), exactly as dequantised on the CPU. table: any
// DeviceMatrix dtype; ids: device [n]; out: [n][cols].
void embedding_lookup(Context& ctx, const DeviceMatrix& table, const int32_t* ids, int64_t n,
                      int64_t vocab_begin, int64_t vocab_end, float* out);

// ---- element-wise and norms (elementwise.cu, norm.cu) -----------------------------------------

// out[i] = SiLU(gate[i]) · up[i]; out may alias gate or up.
void silu_mul(Context& ctx, const float* gate, const float* up, int64_t n, float* out);
// x[i] = σ(x[i])
void sigmoid_inplace(Context& ctx, float* x, int64_t n);
// y[i] += x[i]
void add_inplace(Context& ctx, float* y, const float* x, int64_t n);
// y[r] = w ⊙ x[r] / sqrt(mean(x[r]²) + eps), rows of `dim`; y may alias x.
void rms_norm(Context& ctx, const float* x, const float* w, int64_t n_rows, int64_t dim,
              float eps, float* y);
// rms_norm on rows x_stride (x) and y_stride (y) floats apart, e.g. a column range of wider
// rows; y may alias x row for row.
void rms_norm_strided(Context& ctx, const float* x, int64_t x_stride, const float* w,
                      int64_t n_rows, int64_t dim, float eps, float* y, int64_t y_stride);
// The final norm on chosen rows: y[i] = rms_norm(x[rows[i]]) for i < n_rows (rows: device ints).
void rms_norm_rows(Context& ctx, const float* x, const int32_t* rows, int64_t n_rows,
                   const float* w, int64_t dim, float eps, float* y);
// h[r] += delta[r]; y[r] = rms_norm(h[r]) (as cpu::add_rms_norm).
void add_rms_norm(Context& ctx, float* h, const float* delta, const float* w, int64_t n_rows,
                  int64_t dim, float eps, float* y);
// In place per row: x = scale · x / sqrt(Σx² + eps) (as cpu::l2_norm).
void l2_norm(Context& ctx, float* x, int64_t n_rows, int64_t dim, float eps, float scale);
// y[r][j] = w[j] · o[r][j] / sqrt(mean(o[r]²) + eps) · σ(z[r][j]) (as
// cpu::gated_rms_norm_sigmoid); y may alias o.
void gated_rms_norm_sigmoid(Context& ctx, const float* o, const float* z, const float* w,
                            int64_t n_rows, int64_t dim, float eps, float* y);

// ---- KDA (conv.cu, kda.cu) ------------------------------------------------------------------

// For every span: cpu::causal_conv1d_silu on its rows of x (row stride x_stride), writing y
// (row stride y_stride) and advancing the slot's conv state [taps−1][C] at
// state_base + slot · slot_stride. w: [C][taps] f32. y must not alias x.
void causal_conv1d_silu(Context& ctx, const float* x, int64_t x_stride, const Span* spans,
                        int64_t n_spans, int64_t n_rows, int64_t C, const float* w, int taps,
                        float* state_base, int64_t slot_stride, float* y, int64_t y_stride);

// The fused KDA gate, for T rows of H heads of K channels (C = H·K). In: qkv [T][3C], the conv
// outputs [q | k | v] of each row; f [T][C] decay-gate pre-activations; beta [T][H] logits.
// Out: q, k, v [T][C] contiguous (q L2-normalised and scaled by K^-1/2, k L2-normalised, with
// l2_eps as cpu::l2_norm), f in place = a_neg[h] · softplus(f + dt_bias) (as cpu::kda_gate),
// beta in place = σ(beta). Equals cpu::kda_gate + cpu::sigmoid_inplace + the split copy +
// cpu::l2_norm on q and k.
void kda_prepare(Context& ctx, const float* qkv, int64_t T, int64_t H, int64_t K,
                 const float* a_neg, const float* dt_bias, float l2_eps, float* q, float* k,
                 float* v, float* f, float* beta);

// q, k, g: [rows][H][K]; v, o: [rows][H][V]; beta: [rows][H]; a slot's state is [H][K][V] fp32
// at state_base + slot · slot_stride. For every span, its rows in order (as cpu::kda_recurrent).
void kda_recurrent(Context& ctx, const float* q, const float* k, const float* v, const float* g,
                   const float* beta, const Span* spans, int64_t n_spans, int64_t H, int64_t K,
                   int64_t V, float* state_base, int64_t slot_stride, float* o);
// The same result by the chunked WY/UT form (as cpu::kda_chunked), chunk ∈ {16, 32, 64}; the tail
// chunk may be short. Exponents only of differences G_r − G_s ≤ 0 (kimi-linear.md §8.2).
// max_n: the largest span length (sizes the launch).
void kda_chunked(Context& ctx, const float* q, const float* k, const float* v, const float* g,
                 const float* beta, const Span* spans, int64_t n_spans, int64_t max_n, int64_t H,
                 int64_t K, int64_t V, int64_t chunk, float* state_base, int64_t slot_stride,
                 float* o);

// ---- MLA (mla.cu) ---------------------------------------------------------------------------

// The paged latent cache of one MLA layer: page p's rows [page_tokens][R+P] start at
// base + p · page_stride floats. tables: every span's block table concatenated (device ints);
// span i's table starts at table_offsets[i] (device ints, [n_spans]).
struct LatentPages {
  float* base = nullptr;
  int64_t page_stride = 0;
  int64_t page_tokens = 0;
  const int32_t* tables = nullptr;
  const int32_t* table_offsets = nullptr;
};

// Copies kv [n_rows][L] to each span's positions [pos0, pos0 + n) in its pages.
void write_latent(Context& ctx, const float* kv, const Span* spans, int64_t n_spans,
                  int64_t n_rows, int64_t L, const LatentPages& pages);
// As cpu::mla_attention_absorbed for every span: q [n_rows][H][R+P] absorbed queries; row t of
// span s attends causally to positions [0, pos0 + (t − begin)] of its slot's pages (which must
// already hold them: call write_latent first). out: [n_rows][H][R].
void mla_attention_absorbed(Context& ctx, const float* q, const Span* spans, int64_t n_spans,
                            int64_t n_rows, int64_t H, int64_t R, int64_t P,
                            const LatentPages& pages, float scale, float* out);

// ---- MoE (moe.cu) ---------------------------------------------------------------------------

// As cpu::moe_route per token: ids/weights [T][k] ordered by descending selection score (ties:
// lower expert id first). bias may be null.
void moe_route(Context& ctx, const float* logits, int64_t T, int64_t E, const float* bias, int k,
               bool renormalize, float scale, int32_t* ids, float* weights);
// Counting sort of the n assignments (ids[a] = expert of assignment a) by expert, stable:
// offsets [E+1], order [n] (assignment ids of expert e, ascending, at offsets[e]..offsets[e+1]).
// Uses one block; n ≤ 2^20.
void moe_group(Context& ctx, const int32_t* ids, int64_t n, int64_t E, int32_t* offsets,
               int32_t* order);
// out[t][d] += Σ_{j<k} weights[t·k + j] · y[t·k + j][d], j in order (deterministic, no atomics).
void moe_combine(Context& ctx, const float* y, const float* weights, int64_t T, int64_t k,
                 int64_t D, float* out);

// ---- sampling (sampling.cu) -------------------------------------------------------------------

// Per row of `vocab` logits: the index of the largest value (lowest index on ties; NaN never
// wins). out: [rows] device ints.
void argmax_rows(Context& ctx, const float* logits, int64_t rows, int64_t vocab, int32_t* out);
// Per row: the k largest values and their indices, descending (ties: lower index first).
// k ≤ 64. out_ids/out_vals: [rows][k].
void topk_rows(Context& ctx, const float* logits, int64_t rows, int64_t vocab, int k,
               int32_t* out_ids, float* out_vals);

}  // namespace kiln::cuda
