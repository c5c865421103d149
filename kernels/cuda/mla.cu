// MLA on the GPU over the paged latent cache, batched over sequences (spans): write_latent
// scatters each span's new latent rows into its pages (twin: write_latent in
// shard/mla_block.cpp), and mla_attention_absorbed is the absorbed (MQA-over-latent) attention
// (twin: cpu::mla_attention_absorbed, kimi-linear.md §4). One block per (row, head): each warp
// runs an fp32 online softmax over a strided subset of the positions, then the warps' partial
// (max, sum, weighted sum) are merged in shared memory.
#include <cmath>
#include <cstdint>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/span.cuh"

namespace kiln::cuda {
namespace {

constexpr int kWriteThreads = 128;  // columns of one latent row per step
constexpr int kWarps = 8;           // warps of an attention block
constexpr int kAttnThreads = kWarps * 32;
constexpr int kMaxRPerLane = 16;    // value columns per lane: R ≤ 32 · 16 = 512
constexpr int64_t kMaxSmem = 48 * 1024;

// Row `pos` of span `si`'s latent cache: page tables[table_offsets[si] + pos / page_tokens],
// row pos % page_tokens of it, rows W floats apart. T: float or const float.
template <class T>
__device__ T* latent_row(T* base, int64_t page_stride, int64_t page_tokens, const int32_t* table,
                         int64_t pos, int64_t W) {
  const int64_t page = table[pos / page_tokens];
  return base + page * page_stride + (pos % page_tokens) * W;
}

// Block t: batch row t → position pos0 + (t − begin) of its span; the block copies the L floats.
__global__ void write_latent_kernel(const float* __restrict__ kv, const Span* spans, int n_spans,
                                    int64_t L, float* base, int64_t page_stride,
                                    int64_t page_tokens, const int32_t* tables,
                                    const int32_t* table_offsets) {
  const int64_t t = blockIdx.x;
  const int si = find_span(spans, n_spans, t);
  const Span sp = spans[si];
  const int64_t pos = sp.pos0 + (t - sp.begin);
  const int32_t* table = tables + table_offsets[si];
  float* dst = latent_row(base, page_stride, page_tokens, table, pos, L);
  const float* src = kv + t * L;
  for (int64_t c = threadIdx.x; c < L; c += blockDim.x) dst[c] = src[c];
}

// Σ over the warp's lanes; every lane gets the same value (the xor butterfly adds the same two
// operands on both partners of each step).
__device__ float warp_sum(float x) {
  for (int off = 16; off > 0; off >>= 1) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// Block (t, h): row t of the batch, head h; W = R + P. Row t of span s attends to positions
// τ ∈ [0, n_ctx), n_ctx = pos0 + (t − begin) + 1. Warp w takes τ = w, w + kWarps, ... and keeps
//   m = max score so far,  l = Σ e^{score − m},  acc[c] = Σ e^{score − m} · row(τ)[c]  (c < R),
// lane `lane` holding columns c = lane + 32 i. Then out[c] = Σ_w acc_w[c] e^{m_w − M} /
// Σ_w l_w e^{m_w − M} with M = max_w m_w (a warp without positions has m = −∞, l = acc = 0).
// Shared memory: qs [W], part_acc [kWarps][R], part_m [kWarps], part_l [kWarps].
__global__ void __launch_bounds__(kAttnThreads)
    mla_absorbed_kernel(const float* __restrict__ q, const Span* spans, int n_spans, int H, int R,
                        int P, const float* base, int64_t page_stride, int64_t page_tokens,
                        const int32_t* tables, const int32_t* table_offsets, float scale,
                        float* __restrict__ out) {
  extern __shared__ float smem[];
  const int W = R + P;
  float* qs = smem;
  float* part_acc = qs + W;
  float* part_m = part_acc + kWarps * R;
  float* part_l = part_m + kWarps;

  const int64_t t = blockIdx.x;
  const int h = static_cast<int>(blockIdx.y);
  const int tid = static_cast<int>(threadIdx.x), warp = tid / 32, lane = tid % 32;
  const int si = find_span(spans, n_spans, t);
  const Span sp = spans[si];
  const int64_t n_ctx = sp.pos0 + (t - sp.begin) + 1;
  const int32_t* table = tables + table_offsets[si];
  const float* qrow = q + (t * H + h) * W;  // q: [n_rows][H][W]
  for (int c = tid; c < W; c += kAttnThreads) qs[c] = qrow[c];
  __syncthreads();

  float m = -INFINITY, l = 0.0f;
  float acc[kMaxRPerLane];
#pragma unroll
  for (int i = 0; i < kMaxRPerLane; ++i) acc[i] = 0.0f;
  for (int64_t tau = warp; tau < n_ctx; tau += kWarps) {
    const float* row = latent_row(base, page_stride, page_tokens, table, tau, W);
    float val[kMaxRPerLane];  // this lane's value columns of the row, kept for the sum below
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kMaxRPerLane; ++i) {
      const int c = lane + 32 * i;
      val[i] = c < R ? row[c] : 0.0f;
      if (c < R) dot = fmaf(qs[c], val[i], dot);
    }
    for (int c = R + lane; c < W; c += 32) dot = fmaf(qs[c], row[c], dot);
    const float s = scale * warp_sum(dot);  // identical in every lane: uniform updates below
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // e^{−∞} = 0 on the warp's first position
    const float p = expf(s - m_new);
    l = fmaf(l, corr, p);
#pragma unroll
    for (int i = 0; i < kMaxRPerLane; ++i) acc[i] = fmaf(acc[i], corr, p * val[i]);
    m = m_new;
  }
#pragma unroll
  for (int i = 0; i < kMaxRPerLane; ++i) {
    const int c = lane + 32 * i;
    if (c < R) part_acc[warp * R + c] = acc[i];
  }
  if (lane == 0) {
    part_m[warp] = m;
    part_l[warp] = l;
  }
  __syncthreads();

  // Warp 0 always has position 0, so M is finite, and the warp holding M has l ≥ 1.
  float M = part_m[0];
  for (int w = 1; w < kWarps; ++w) M = fmaxf(M, part_m[w]);
  float wgt[kWarps];
  float denom = 0.0f;
  for (int w = 0; w < kWarps; ++w) {
    wgt[w] = expf(part_m[w] - M);  // 0 for a warp without positions (m = −∞)
    denom = fmaf(part_l[w], wgt[w], denom);
  }
  const float inv = 1.0f / denom;
  float* orow = out + (t * H + h) * R;  // out: [n_rows][H][R]
  for (int c = tid; c < R; c += kAttnThreads) {
    float num = 0.0f;
    for (int w = 0; w < kWarps; ++w) num = fmaf(part_acc[w * R + c], wgt[w], num);
    orow[c] = num * inv;
  }
}

void check_pages(const LatentPages& pages, int64_t n_spans) {
  KILN_CHECK(pages.page_tokens >= 1 && pages.page_stride >= 0);
  KILN_CHECK(n_spans == 0 || (pages.base != nullptr && pages.tables != nullptr &&
                              pages.table_offsets != nullptr));
}

}  // namespace

void write_latent(Context& ctx, const float* kv, const Span* spans, int64_t n_spans,
                  int64_t n_rows, int64_t L, const LatentPages& pages) {
  KILN_CHECK(n_spans >= 0 && n_spans <= 0x7fffffff && n_rows >= 0 && n_rows <= 0x7fffffff);
  KILN_CHECK(L >= 1 && pages.page_stride >= pages.page_tokens * L);
  KILN_CHECK(n_rows == 0 || (n_spans >= 1 && spans != nullptr && kv != nullptr));
  check_pages(pages, n_spans);
  if (n_rows == 0) return;
  write_latent_kernel<<<static_cast<unsigned>(n_rows), kWriteThreads, 0, ctx.stream()>>>(
      kv, spans, static_cast<int>(n_spans), L, pages.base, pages.page_stride, pages.page_tokens,
      pages.tables, pages.table_offsets);
  KILN_CUDA_LAUNCH_CHECK();
}

void mla_attention_absorbed(Context& ctx, const float* q, const Span* spans, int64_t n_spans,
                            int64_t n_rows, int64_t H, int64_t R, int64_t P,
                            const LatentPages& pages, float scale, float* out) {
  KILN_CHECK(n_spans >= 0 && n_spans <= 0x7fffffff && n_rows >= 0 && n_rows <= 0x7fffffff);
  KILN_CHECK(H >= 1 && H <= 65535);                   // gridDim.y
  KILN_CHECK(R >= 1 && R <= 32 * kMaxRPerLane && P >= 0);
  KILN_CHECK(pages.page_stride >= pages.page_tokens * (R + P));
  KILN_CHECK(n_rows == 0 || (n_spans >= 1 && spans != nullptr && q != nullptr && out != nullptr));
  check_pages(pages, n_spans);
  const int64_t smem = (R + P + kWarps * R + 2 * kWarps) * static_cast<int64_t>(sizeof(float));
  KILN_CHECK(smem <= kMaxSmem);
  if (n_rows == 0) return;
  const dim3 grid(static_cast<unsigned>(n_rows), static_cast<unsigned>(H));
  mla_absorbed_kernel<<<grid, kAttnThreads, static_cast<size_t>(smem), ctx.stream()>>>(
      q, spans, static_cast<int>(n_spans), static_cast<int>(H), static_cast<int>(R),
      static_cast<int>(P), pages.base, pages.page_stride, pages.page_tokens, pages.tables,
      pages.table_offsets, scale, out);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
