// KDA's input stage on the GPU: the causal depthwise conv + SiLU over a batch of sequences with
// per-slot carried state (twin: cpu::causal_conv1d_silu), and kda_prepare, the fused decay gate,
// beta sigmoid, q/k/v split and q/k L2 norms (twins: cpu::kda_gate, cpu::sigmoid_inplace,
// cpu::l2_norm, as combined by shard/kda_block.cpp).
#include <cmath>
#include <cstdint>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/span.cuh"

namespace kiln::cuda {
namespace {

constexpr int kMaxTaps = 16;      // as the CPU twin
constexpr int kConvThreads = 256;  // channels per block
constexpr int kPrepThreads = 128;  // one block per (token, head); a multiple of 32

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Block (t, cb): batch row t, channels [cb·kConvThreads, +kConvThreads).
//   y[t][c] = SiLU(Σ_{j<taps} w[c][j] · in(i − (taps−1) + j)[c]),  i = t − begin,
// where in(s) = x[begin + s] for s ≥ 0 and the slot's old state row (taps−1 + s) for s < 0.
// Only reads the state; conv_state_kernel advances it afterwards.
__global__ void conv_kernel(const float* x, int64_t x_stride, const Span* spans, int n_spans,
                            int64_t C, const float* w, int taps, const float* state_base,
                            int64_t slot_stride, float* y, int64_t y_stride) {
  const int64_t t = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const Span sp = spans[find_span(spans, n_spans, t)];
  const int64_t i = t - sp.begin;  // position within the span, in [0, n)
  const float* state = state_base + static_cast<int64_t>(sp.slot) * slot_stride;
  const float* wc = w + c * taps;
  float acc = 0.0f;
  for (int j = 0; j < taps; ++j) {
    const int64_t s = i - (taps - 1) + j;  // ≥ −(taps−1), so the state row below is ≥ 0
    const float in = s >= 0 ? x[(sp.begin + s) * x_stride + c] : state[(taps - 1 + s) * C + c];
    acc = fmaf(wc[j], in, acc);  // taps in order from 0, as the CPU twin's fmadd chain
  }
  y[t * y_stride + c] = acc * sigmoid(acc);
}

// Block (span, cb): the new state of the span's slot is the last taps−1 inputs of
// old state ++ the span's rows: new[r] = in(n − (taps−1) + r) for r < taps−1, with in() as above.
// When n < taps−1 this reads old rows n + r > r, so each thread loads its whole channel column
// into registers before writing any of it; distinct threads own distinct channels.
__global__ void conv_state_kernel(const float* x, int64_t x_stride, const Span* spans, int64_t C,
                                  int taps, float* state_base, int64_t slot_stride) {
  const int64_t c = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  const Span sp = spans[blockIdx.x];
  const int keep = taps - 1;
  float* state = state_base + static_cast<int64_t>(sp.slot) * slot_stride;
  float col[kMaxTaps - 1];
  for (int r = 0; r < keep; ++r) {
    const int64_t s = static_cast<int64_t>(sp.n) - keep + r;  // ≥ −keep + r ≥ −keep
    col[r] = s >= 0 ? x[(sp.begin + s) * x_stride + c] : state[(keep + s) * C + c];
  }
  for (int r = 0; r < keep; ++r) state[r * C + c] = col[r];
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Two block-wide sums at once, returned to every thread. Called once per kernel by all threads.
__device__ float2 block_sum2(float a, float b) {
  __shared__ float2 warp_sums[32];
  __shared__ float2 total;
  a = warp_sum(a);
  b = warp_sum(b);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = make_float2(a, b);
  __syncthreads();
  if (warp == 0) {
    const int n_warps = static_cast<int>((blockDim.x + 31) >> 5);
    const float2 p = lane < n_warps ? warp_sums[lane] : make_float2(0.0f, 0.0f);
    const float sa = warp_sum(p.x), sb = warp_sum(p.y);
    if (lane == 0) total = make_float2(sa, sb);
  }
  __syncthreads();
  return total;
}

// Block b = t·H + h handles head h of token t: channels [h·K, h·K + K) of the row.
//   q = q_scale · q̂ / sqrt(Σq̂² + eps), k = k̂ / sqrt(Σk̂² + eps), v = v̂   (q̂ k̂ v̂ from qkv [T][3C])
//   f = a_neg[h] · softplus(f + dt_bias)   (linear above 20),   beta[t][h] = σ(beta[t][h])
// f and beta are updated in place, each element by one thread.
__global__ void kda_prepare_kernel(const float* qkv, int64_t H, int64_t K, const float* a_neg,
                                   const float* dt_bias, float l2_eps, float q_scale, float* q,
                                   float* k, float* v, float* f, float* beta) {
  const int64_t b = blockIdx.x;
  const int64_t t = b / H, h = b % H;
  const int64_t C = H * K;
  const float* qi = qkv + t * 3 * C + h * K;  // q̂ of this head; k̂ at +C, v̂ at +2C
  const float* ki = qi + C;
  const float* vi = qi + 2 * C;
  const int64_t out = t * C + h * K;  // this head's offset in q, k, v and f
  float sq = 0.0f, sk = 0.0f;
  for (int64_t d = threadIdx.x; d < K; d += blockDim.x) {
    sq = fmaf(qi[d], qi[d], sq);
    sk = fmaf(ki[d], ki[d], sk);
    v[out + d] = vi[d];
    const float g = f[out + d] + dt_bias[h * K + d];
    f[out + d] = a_neg[h] * (g > 20.0f ? g : log1pf(expf(g)));
  }
  if (threadIdx.x == 0) beta[b] = sigmoid(beta[b]);  // beta is [T][H]: index t·H + h = b
  const float2 ss = block_sum2(sq, sk);
  const float aq = q_scale / sqrtf(ss.x + l2_eps);
  const float ak = 1.0f / sqrtf(ss.y + l2_eps);
  for (int64_t d = threadIdx.x; d < K; d += blockDim.x) {
    q[out + d] = aq * qi[d];
    k[out + d] = ak * ki[d];
  }
}

}  // namespace

void causal_conv1d_silu(Context& ctx, const float* x, int64_t x_stride, const Span* spans,
                        int64_t n_spans, int64_t n_rows, int64_t C, const float* w, int taps,
                        float* state_base, int64_t slot_stride, float* y, int64_t y_stride) {
  KILN_CHECK(taps >= 1 && taps <= kMaxTaps);
  KILN_CHECK(n_spans >= 0 && n_spans <= 0x7fffffff && n_rows >= 0 && n_rows <= 0x7fffffff);
  KILN_CHECK(C >= 0 && x_stride >= C && y_stride >= C);
  KILN_CHECK(slot_stride >= (taps - 1) * C);
  KILN_CHECK(n_rows == 0 || n_spans >= 1);  // the rows belong to spans
  if (C == 0 || n_spans == 0) return;
  KILN_CHECK(spans != nullptr && w != nullptr && state_base != nullptr);
  const unsigned channel_blocks = static_cast<unsigned>((C + kConvThreads - 1) / kConvThreads);
  KILN_CHECK(channel_blocks <= 65535);  // gridDim.y limit
  if (n_rows > 0) {
    KILN_CHECK(x != nullptr && y != nullptr);
    const dim3 grid(static_cast<unsigned>(n_rows), channel_blocks);
    conv_kernel<<<grid, kConvThreads, 0, ctx.stream()>>>(x, x_stride, spans,
                                                         static_cast<int>(n_spans), C, w, taps,
                                                         state_base, slot_stride, y, y_stride);
    KILN_CUDA_LAUNCH_CHECK();
  }
  if (taps > 1) {  // after conv_kernel on the same stream: it has read the old state
    const dim3 grid(static_cast<unsigned>(n_spans), channel_blocks);
    conv_state_kernel<<<grid, kConvThreads, 0, ctx.stream()>>>(x, x_stride, spans, C, taps,
                                                               state_base, slot_stride);
    KILN_CUDA_LAUNCH_CHECK();
  }
}

void kda_prepare(Context& ctx, const float* qkv, int64_t T, int64_t H, int64_t K,
                 const float* a_neg, const float* dt_bias, float l2_eps, float* q, float* k,
                 float* v, float* f, float* beta) {
  KILN_CHECK(T >= 0 && H >= 1 && K >= 1);
  KILN_CHECK(T * H <= 0x7fffffff);
  if (T == 0) return;
  KILN_CHECK(qkv != nullptr && a_neg != nullptr && dt_bias != nullptr && q != nullptr &&
             k != nullptr && v != nullptr && f != nullptr && beta != nullptr);
  // The scale the CPU path passes to cpu::l2_norm for q, computed the same way on the host.
  const float q_scale = 1.0f / std::sqrt(static_cast<float>(K));
  kda_prepare_kernel<<<static_cast<unsigned>(T * H), kPrepThreads, 0, ctx.stream()>>>(
      qkv, H, K, a_neg, dt_bias, l2_eps, q_scale, q, k, v, f, beta);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
