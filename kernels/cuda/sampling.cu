// Greedy and top-k selection over rows of logits on the GPU: argmax_rows and topk_rows. One block
// per row. Both rank (value, index) pairs by one strict total order: larger value first, NaN
// after every number, ties (and NaNs among themselves) by lower index. So argmax is the lowest
// index of the largest number (NaN never wins; an all-NaN row gives 0), and top-k lists the k
// first pairs in that order.
#include <cstdint>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 512;  // a multiple of 32

// A (value, index) pair; i < 0 is "none", which every real pair ranks before.
struct Cand {
  float v;
  int i;
};

// Whether real pair a ranks before real pair b (distinct indices).
__device__ __forceinline__ bool before(Cand a, Cand b) {
  const bool na = isnan(a.v), nb = isnan(b.v);
  if (na != nb) return nb;                  // a number ranks before NaN
  if (!na && a.v != b.v) return a.v > b.v;  // −0 == +0 falls through to the index
  return a.i < b.i;
}

// Whether c should replace the running best `cur`.
__device__ __forceinline__ bool better(Cand c, Cand cur) {
  return c.i >= 0 && (cur.i < 0 || before(c, cur));
}

// The block's best pair, returned to every thread. All threads call it; it may be called
// repeatedly: each thread reads `result` before it can reach the next call's first barrier,
// and thread 0 writes `result` only after that barrier.
__device__ Cand block_best(Cand c) {
  __shared__ Cand warp_best[32];
  __shared__ Cand result;
  for (int o = 16; o > 0; o >>= 1) {
    const Cand other{__shfl_xor_sync(0xffffffffu, c.v, o), __shfl_xor_sync(0xffffffffu, c.i, o)};
    if (better(other, c)) c = other;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_best[warp] = c;
  __syncthreads();
  if (threadIdx.x == 0) {
    const int n_warps = static_cast<int>((blockDim.x + 31) >> 5);
    for (int w = 1; w < n_warps; ++w) {
      if (better(warp_best[w], c)) c = warp_best[w];
    }
    result = c;
  }
  __syncthreads();
  return result;
}

__global__ void argmax_kernel(const float* logits, int64_t vocab, int32_t* out) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  Cand best{0.0f, -1};
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    const Cand c{row[i], static_cast<int>(i)};
    if (better(c, best)) best = c;
  }
  best = block_best(best);
  if (threadIdx.x == 0) out[blockIdx.x] = best.i;  // an all-NaN row: its first NaN, 0
}

// Round r finds the best pair ranked after round r−1's pick: the r-th pair of the row's order.
// Each round re-reads the row (k ≤ 64 passes; rows are few and stay in L2).
__global__ void topk_kernel(const float* logits, int64_t vocab, int k, int32_t* out_ids,
                            float* out_vals) {
  const float* row = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  const int64_t out = static_cast<int64_t>(blockIdx.x) * k;
  Cand prev{0.0f, -1};  // the previous round's pick, the same in every thread
  for (int r = 0; r < k; ++r) {
    Cand best{0.0f, -1};
    for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
      const Cand c{row[i], static_cast<int>(i)};
      if (prev.i >= 0 && !before(prev, c)) continue;  // picked in an earlier round
      if (better(c, best)) best = c;
    }
    best = block_best(best);  // k ≤ vocab, so some pair is left: best.i ≥ 0
    if (threadIdx.x == 0) {
      out_ids[out + r] = best.i;
      out_vals[out + r] = best.v;
    }
    prev = best;
  }
}

void check_shape(int64_t rows, int64_t vocab) {
  KILN_CHECK(rows >= 0 && rows <= 0x7fffffff && vocab >= 1 && vocab <= 0x7fffffff);
}

}  // namespace

void argmax_rows(Context& ctx, const float* logits, int64_t rows, int64_t vocab, int32_t* out) {
  check_shape(rows, vocab);
  if (rows == 0) return;
  KILN_CHECK(logits != nullptr && out != nullptr);
  argmax_kernel<<<static_cast<unsigned>(rows), kThreads, 0, ctx.stream()>>>(logits, vocab, out);
  KILN_CUDA_LAUNCH_CHECK();
}

void topk_rows(Context& ctx, const float* logits, int64_t rows, int64_t vocab, int k,
               int32_t* out_ids, float* out_vals) {
  check_shape(rows, vocab);
  KILN_CHECK(k >= 1 && k <= 64 && k <= vocab);
  if (rows == 0) return;
  KILN_CHECK(logits != nullptr && out_ids != nullptr && out_vals != nullptr);
  topk_kernel<<<static_cast<unsigned>(rows), kThreads, 0, ctx.stream()>>>(logits, vocab, k,
                                                                          out_ids, out_vals);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
