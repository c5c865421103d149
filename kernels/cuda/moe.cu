// MoE routing, grouping and combining on the GPU: moe_route (twin: cpu::moe_route), moe_group
// (the stable counting sort of assignments by expert that shard/ffn_block.cpp does on the host)
// and moe_combine (the weighted sum of each token's expert outputs). All deterministic: no
// floating-point atomics, fixed summation orders.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"

namespace kiln::cuda {
namespace {

constexpr int kRouteThreads = 256;
constexpr int kMaxRouteExperts = 4096;  // scores and probabilities in shared memory: 32 KiB
constexpr int kMaxTopK = 64;            // as the CPU twin
constexpr int kGroupWarps = 16;
constexpr int kMaxGroupExperts = 512;   // per-warp counts [16][512] ints: 32 KiB
constexpr int kCombineThreads = 256;

// A candidate (score, expert). `a` ranks before `b` when its score is larger, or equal with a
// lower index: the CPU twin's order (descending score, ties to the lower expert). A NaN score
// never ranks before anything: route_kernel maps NaN scores to −∞ and uses NaN to mark experts
// already chosen.
__device__ __forceinline__ bool ranks_before(float sa, int ia, float sb, int ib) {
  return sa > sb || (sa == sb && ia < ib);
}

// One block per token. Round r picks the best expert not yet chosen by a block-wide arg-max under
// ranks_before, so ids come out in the twin's order; thread 0 then sums the k probabilities in
// that order and scales them, as the twin does.
__global__ void route_kernel(const float* logits, int64_t E, const float* bias, int k,
                             bool renormalize, float scale, int32_t* ids, float* weights) {
  extern __shared__ float smem[];
  float* sel = smem;       // [E] selection scores p + bias (NaN once chosen)
  float* prob = smem + E;  // [E] p = σ(logit)
  __shared__ float warp_s[32];
  __shared__ int warp_i[32];
  __shared__ int chosen[kMaxTopK];
  const int64_t tok = blockIdx.x;
  const float* lt = logits + tok * E;
  for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
    const float p = 1.0f / (1.0f + expf(-lt[e]));
    const float s = bias ? p + bias[e] : p;
    prob[e] = p;
    sel[e] = isnan(s) ? -INFINITY : s;
  }
  __syncthreads();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int n_warps = static_cast<int>((blockDim.x + 31) >> 5);
  for (int r = 0; r < k; ++r) {
    // Index E stands for "none": every real candidate ranks before it, even at −∞.
    float bs = -INFINITY;
    int bi = static_cast<int>(E);
    for (int64_t e = threadIdx.x; e < E; e += blockDim.x) {
      if (ranks_before(sel[e], static_cast<int>(e), bs, bi)) {
        bs = sel[e];
        bi = static_cast<int>(e);
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const float os = __shfl_xor_sync(0xffffffffu, bs, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (ranks_before(os, oi, bs, bi)) {
        bs = os;
        bi = oi;
      }
    }
    if (lane == 0) {
      warp_s[warp] = bs;
      warp_i[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int wi = 1; wi < n_warps; ++wi) {
        if (ranks_before(warp_s[wi], warp_i[wi], bs, bi)) {
          bs = warp_s[wi];
          bi = warp_i[wi];
        }
      }
      // k ≤ E leaves an unchosen expert (a non-NaN score), so bi < E here.
      chosen[r] = bi;
      sel[bi] = NAN;  // out of later rounds
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    int32_t* it = ids + tok * k;
    float* wt = weights + tok * k;
    float sum = 0.0f;
    for (int i = 0; i < k; ++i) sum += prob[chosen[i]];
    // 1e-20 as the twin (and the HF reference): guards an all-zero selection.
    const float mul = renormalize ? scale / (sum + 1e-20f) : scale;
    for (int i = 0; i < k; ++i) {
      it[i] = chosen[i];
      wt[i] = prob[chosen[i]] * mul;
    }
  }
}

// One block of kGroupWarps warps (thread i ↔ expert i in the scan, so blockDim = kMaxGroupExperts).
// Warp w owns the contiguous assignment range [a0, a1) = [w·chunk, (w+1)·chunk) ∩ [0, n).
//  1. counts[w][e] = how many of warp w's assignments go to expert e (shared atomics: only the
//     totals matter, not the order of the increments).
//  2. offsets[e] = Σ_{e' < e} Σ_w counts[w][e'] (a block scan over experts), and counts[w][e]
//     becomes warp w's first slot for expert e: offsets[e] + Σ_{w' < w} counts[w'][e].
//  3. Each warp walks its range in ascending order, 32 assignments a step; lanes with the same
//     expert find each other with __match_any_sync and take consecutive slots in lane order. So
//     within an expert, order is ascending in assignment id: stable.
// Ids outside [0, E) (a bug upstream) are left out rather than written out of bounds.
__global__ void group_kernel(const int32_t* ids, int64_t n, int E, int32_t* offsets,
                             int32_t* order) {
  __shared__ int counts[kGroupWarps][kMaxGroupExperts];
  __shared__ int scan[kMaxGroupExperts];
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid & 31, warp = tid >> 5;
  for (int i = tid; i < kGroupWarps * kMaxGroupExperts; i += blockDim.x) {
    counts[i / kMaxGroupExperts][i % kMaxGroupExperts] = 0;
  }
  __syncthreads();
  const int64_t chunk = (n + kGroupWarps - 1) / kGroupWarps;
  const int64_t a0 = min(n, warp * chunk), a1 = min(n, a0 + chunk);
  for (int64_t a = a0 + lane; a < a1; a += 32) {
    const int e = ids[a];
    if (e >= 0 && e < E) atomicAdd(&counts[warp][e], 1);
  }
  __syncthreads();
  // Inclusive Hillis–Steele scan of the per-expert totals; thread tid holds expert tid.
  int total = 0;
  if (tid < E) {
    for (int w = 0; w < kGroupWarps; ++w) total += counts[w][tid];
  }
  scan[tid] = total;
  __syncthreads();
  for (int off = 1; off < kMaxGroupExperts; off <<= 1) {
    const int add = tid >= off ? scan[tid - off] : 0;
    __syncthreads();
    scan[tid] += add;
    __syncthreads();
  }
  if (tid < E) {
    int run = scan[tid] - total;  // exclusive prefix: the expert's first slot
    offsets[tid] = run;
    for (int w = 0; w < kGroupWarps; ++w) {
      const int c = counts[w][tid];
      counts[w][tid] = run;
      run += c;
    }
  }
  if (tid == 0) offsets[E] = scan[kMaxGroupExperts - 1];  // n when every id is valid
  __syncthreads();
  for (int64_t base = a0; base < a1; base += 32) {  // uniform across the warp
    const int64_t a = base + lane;
    int e = a < a1 ? ids[a] : -1;
    if (e >= E) e = -1;  // -1: no slot (past the range, or an invalid id)
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));  // same-expert lanes below this one
    const int pos = e >= 0 ? counts[warp][e] + rank : 0;
    __syncwarp();  // every lane has read counts before the group's first lane advances it
    if (e >= 0) {
      order[pos] = static_cast<int32_t>(a);
      if (rank == 0) counts[warp][e] += __popc(peers);
    }
    __syncwarp();
  }
}

// out[t][d] += Σ_j weights[t·k + j] · y[t·k + j][d], one thread per (t, d), j ascending.
__global__ void combine_kernel(const float* y, const float* weights, int64_t T, int64_t k,
                               int64_t D, float* out) {
  const int64_t total = T * D;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += stride) {
    const int64_t t = idx / D, d = idx % D;
    float acc = out[idx];
    for (int64_t j = 0; j < k; ++j) acc = fmaf(weights[t * k + j], y[(t * k + j) * D + d], acc);
    out[idx] = acc;
  }
}

}  // namespace

void moe_route(Context& ctx, const float* logits, int64_t T, int64_t E, const float* bias, int k,
               bool renormalize, float scale, int32_t* ids, float* weights) {
  KILN_CHECK(T >= 0 && T <= 0x7fffffff);
  KILN_CHECK(E >= 1 && E <= kMaxRouteExperts && k >= 1 && k <= kMaxTopK && k <= E);
  if (T == 0) return;
  KILN_CHECK(logits != nullptr && ids != nullptr && weights != nullptr);
  const size_t smem = 2 * static_cast<size_t>(E) * sizeof(float);
  route_kernel<<<static_cast<unsigned>(T), kRouteThreads, smem, ctx.stream()>>>(
      logits, E, bias, k, renormalize, scale, ids, weights);
  KILN_CUDA_LAUNCH_CHECK();
}

void moe_group(Context& ctx, const int32_t* ids, int64_t n, int64_t E, int32_t* offsets,
               int32_t* order) {
  KILN_CHECK(n >= 0 && n <= (int64_t{1} << 20));
  KILN_CHECK(E >= 1 && E <= kMaxGroupExperts);
  KILN_CHECK(offsets != nullptr && (n == 0 || (ids != nullptr && order != nullptr)));
  static_assert(kGroupWarps * 32 == kMaxGroupExperts, "the scan maps one thread to each expert");
  group_kernel<<<1, kGroupWarps * 32, 0, ctx.stream()>>>(ids, n, static_cast<int>(E), offsets,
                                                         order);
  KILN_CUDA_LAUNCH_CHECK();
}

void moe_combine(Context& ctx, const float* y, const float* weights, int64_t T, int64_t k,
                 int64_t D, float* out) {
  KILN_CHECK(T >= 0 && k >= 1 && D >= 0);
  if (T == 0 || D == 0) return;
  KILN_CHECK(y != nullptr && weights != nullptr && out != nullptr);
  const int64_t blocks = std::min<int64_t>((T * D + kCombineThreads - 1) / kCombineThreads, 4096);
  combine_kernel<<<static_cast<unsigned>(blocks), kCombineThreads, 0, ctx.stream()>>>(
      y, weights, T, k, D, out);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
