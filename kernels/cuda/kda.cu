// KDA's delta-rule core on the GPU, batched over sequences (spans): the exact recurrence
// (twin: cpu::kda_recurrent, kimi-linear.md §3.2) and the chunked WY/UT form (twin:
// cpu::kda_chunked, §3.3). One block per (span, head); the head's K×V fp32 state lives in shared
// memory for the whole span and is written back to its slot once at the end. Every decay factor
// is exp of a non-positive number (§8.2): exp(g), exp(G_r), exp(G_r − G_s) for s ≤ r and
// exp(G_last − G_r).
#include <cmath>
#include <cstdint>

#include <fmt/format.h>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"

namespace kiln::cuda {
namespace {

constexpr int kChunkThreads = 256;  // threads of a chunked block; ≥ kMaxChunk
constexpr int kMaxChunk = 64;       // rows of a chunk (the forward substitution: one column per thread)
constexpr int kMaxPerThread = 32;   // chunk·V elements per thread in the in-place T·Y product
constexpr int64_t kDefaultSmem = 48 * 1024;  // dynamic shared memory without an opt-in

// Allows `bytes` of dynamic shared memory for `kernel` on ctx's device (an opt-in above 48 KiB),
// failing loudly when the device cannot give that much to one block.
template <class Kernel>
void allow_shared_memory(const Context& ctx, Kernel kernel, int64_t bytes) {
  int optin = 0;
  KILN_CUDA_CHECK(
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, ctx.device()));
  KILN_CHECK_MSG(bytes <= optin, fmt::format("KDA needs {} bytes of shared memory per block, the "
                                             "device allows {}", bytes, optin));
  if (bytes > kDefaultSmem) {
    KILN_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(bytes)));
  }
}

// ---- recurrent ----------------------------------------------------------------------------

// Block (span i, head h); thread j < V owns value column j of the state, S[d][j] for all d, so
// the state needs no synchronisation between threads. Per token (row = begin + t):
//   S[d][j] ← α[d]·S[d][j],  pred = Σ_d k[d]·S[d][j]      (decay fused with Sᵀk)
//   u = β·(v[j] − pred)
//   S[d][j] ← S[d][j] + k[d]·u,  o[j] = Σ_d q[d]·S[d][j]   (write fused with the read after it)
// k, q and α = exp(g) of the token are staged in shared memory, shared by every column.
// Shared memory: S [K][V], ks [K], qs [K], as [K].
__global__ void kda_recurrent_kernel(const float* __restrict__ q, const float* __restrict__ k,
                                     const float* __restrict__ v, const float* __restrict__ g,
                                     const float* __restrict__ beta, const Span* spans, int H,
                                     int K, int V, float* state_base, int64_t slot_stride,
                                     float* __restrict__ o) {
  extern __shared__ float smem[];
  float* S = smem;       // [K][V]
  float* ks = S + K * V;  // [K]
  float* qs = ks + K;     // [K]
  float* as = qs + K;     // [K]
  const Span sp = spans[blockIdx.x];
  const int h = static_cast<int>(blockIdx.y);
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  float* state = state_base + static_cast<int64_t>(sp.slot) * slot_stride +
                 static_cast<int64_t>(h) * K * V;
  for (int e = tid; e < K * V; e += nt) S[e] = state[e];
  const int j = tid;  // this thread's value column (idle when j ≥ V)
  for (int t = 0; t < sp.n; ++t) {
    const int64_t row = static_cast<int64_t>(sp.begin) + t;
    const int64_t qk_off = (row * H + h) * K;  // q/k/g rows: [row][H][K]
    // The previous token's readers of ks/qs/as are done (and, at t = 0, the state load).
    __syncthreads();
    for (int d = tid; d < K; d += nt) {
      ks[d] = k[qk_off + d];
      qs[d] = q[qk_off + d];
      as[d] = expf(g[qk_off + d]);
    }
    __syncthreads();
    if (j < V) {
      float pred = 0.0f;
      for (int d = 0; d < K; ++d) {
        const float s = S[d * V + j] * as[d];
        S[d * V + j] = s;
        pred = fmaf(ks[d], s, pred);
      }
      const int64_t v_off = (row * H + h) * V;  // v/o rows: [row][H][V]
      const float u = beta[row * H + h] * (v[v_off + j] - pred);
      float out = 0.0f;
      for (int d = 0; d < K; ++d) {
        const float s = fmaf(ks[d], u, S[d * V + j]);
        S[d * V + j] = s;
        out = fmaf(qs[d], s, out);
      }
      o[v_off + j] = out;
    }
  }
  __syncthreads();  // the load above used another thread mapping than the column owners
  for (int e = tid; e < K * V; e += nt) state[e] = S[e];
}

// ---- chunked ------------------------------------------------------------------------------

// Shared-memory plan of the chunked kernel, in floats (C = chunk):
//   S  [K][V]       the running state
//   GB [C][K + 1]   per chunk: G (cumulative log decay), then exp(G), then k ⊙ exp(G_last − G);
//                   rows padded by one float so that threads on different rows and the same
//                   channel d hit different banks
//   LX [C][C]       L (strictly lower, diagonal set to 1), then X = (I + L)⁻¹, then T = X·Diag(β)
//   AM [C][C]       A (lower with diagonal)
//   Y  [C][V]       V − (Γ⊙K)·S, then V_new = T·Y
//   bet [C]         β of the chunk's rows
//   gl [K]          exp(G_last)
struct ChunkLayout {
  int K, V, C, GS;
  __host__ __device__ ChunkLayout(int K_, int V_, int C_) : K(K_), V(V_), C(C_), GS(K_ + 1) {}
  __host__ __device__ int64_t floats() const {
    return int64_t{K} * V + int64_t{C} * GS + 2 * int64_t{C} * C + int64_t{C} * V + C + K;
  }
};

// Block (span i, head h), kChunkThreads threads. The span's rows go in chunks of C from its
// first row; in a chunk of nc rows (rows r, s < nc; q/k/g/v below are the chunk's rows):
//   1. G_r = Σ_{m≤r} g_m                                    (one thread per channel d)
//   2. L[r][s] = β_r Σ_d k_r[d] k_s[d] e^{G_r[d]−G_s[d]}   (s < r)
//      A[r][s] =     Σ_d q_r[d] k_s[d] e^{G_r[d]−G_s[d]}   (s ≤ r)     (one thread per (r, s))
//   3. X = (I + L)⁻¹ by forward substitution, row by row; T = X·Diag(β)
//   4. Y = V − (Γ⊙K)·S  with Γ_r = e^{G_r}             (so T·Y = U − W·S = V_new of §3.3)
//   5. Y ← T·Y                                          (V_new)
//   6. O = (Γ⊙Q)·S + A·V_new
//   7. S ← Diag(e^{G_last})·S + (K ⊙ e^{G_last − G})ᵀ·V_new
// Element-wise passes map a flat index e to (row, column) with the column fastest, so a warp
// reads consecutive columns of S/Y and one broadcast row of GB/LX/AM.
__global__ void __launch_bounds__(kChunkThreads)
    kda_chunked_kernel(const float* __restrict__ q, const float* __restrict__ k,
                       const float* __restrict__ v, const float* __restrict__ g,
                       const float* __restrict__ beta, const Span* spans, int H, int K, int V,
                       int C, float* state_base, int64_t slot_stride, float* __restrict__ o) {
  extern __shared__ float smem[];
  const ChunkLayout lay(K, V, C);
  const int GS = lay.GS;
  float* S = smem;
  float* GB = S + K * V;
  float* LX = GB + C * GS;
  float* AM = LX + C * C;
  float* Y = AM + C * C;
  float* bet = Y + C * V;
  float* gl = bet + C;

  const Span sp = spans[blockIdx.x];
  const int h = static_cast<int>(blockIdx.y);
  const int tid = static_cast<int>(threadIdx.x);
  constexpr int nt = kChunkThreads;
  float* state = state_base + static_cast<int64_t>(sp.slot) * slot_stride +
                 static_cast<int64_t>(h) * K * V;
  for (int e = tid; e < K * V; e += nt) S[e] = state[e];
  // Element offsets of chunk row r in q/k/g ([row][H][K]), v/o ([row][H][V]) and beta ([row][H]).
  auto qk_off = [&](int64_t row) { return (row * H + h) * K; };
  auto vo_off = [&](int64_t row) { return (row * H + h) * V; };

  for (int t0 = 0; t0 < sp.n; t0 += C) {
    const int nc = min(C, sp.n - t0);
    const int64_t row0 = static_cast<int64_t>(sp.begin) + t0;  // batch row of chunk row 0

    // 1. G by a sequential sum per channel (as the CPU twin); β of the rows.
    for (int d = tid; d < K; d += nt) {
      float run = 0.0f;
      for (int r = 0; r < nc; ++r) {
        run += g[qk_off(row0 + r) + d];
        GB[r * GS + d] = run;
      }
    }
    for (int r = tid; r < nc; r += nt) bet[r] = beta[(row0 + r) * H + h];
    __syncthreads();  // also orders the state load (first chunk) and the last chunk's step 7

    // 2. L and A with pairwise decays; g ≤ 0 makes G non-increasing in r, so G_r − G_s ≤ 0.
    for (int e = tid; e < nc * nc; e += nt) {
      const int r = e / nc, s = e % nc;
      float kk = 0.0f, qk = 0.0f;
      if (s <= r) {
        const float* kr = k + qk_off(row0 + r);
        const float* qr = q + qk_off(row0 + r);
        const float* ksr = k + qk_off(row0 + s);
        const float* Gr = GB + r * GS;
        const float* Gs = GB + s * GS;
        for (int d = 0; d < K; ++d) {
          const float kb = ksr[d] * expf(Gr[d] - Gs[d]);
          kk = fmaf(kr[d], kb, kk);
          qk = fmaf(qr[d], kb, qk);
        }
      }
      // Row r of X starts as e_r: the diagonal of L is never read, so it holds X's 1.
      LX[r * C + s] = s < r ? bet[r] * kk : (s == r ? 1.0f : 0.0f);
      AM[r * C + s] = s <= r ? qk : 0.0f;
    }
    __syncthreads();

    // 3. Forward substitution, in place: X[r][c] = −Σ_{c≤m<r} L[r][m]·X[m][c] for c < r, where
    // rows m < r already hold X and row r still holds L until every thread has read it.
    for (int r = 1; r < nc; ++r) {
      const int c = tid;  // column; nc ≤ kMaxChunk ≤ kChunkThreads
      float x = 0.0f;
      if (c < r) {
        for (int m = c; m < r; ++m) x = fmaf(-LX[r * C + m], LX[m * C + c], x);
      }
      __syncthreads();
      if (c < r) LX[r * C + c] = x;
      __syncthreads();
    }
    // T = X·Diag(β) (columns scaled), and GB ← Γ = exp(G) for steps 4 and 6.
    for (int e = tid; e < nc * nc; e += nt) {
      const int r = e / nc, c = e % nc;
      if (c <= r) LX[r * C + c] *= bet[c];
    }
    for (int e = tid; e < nc * K; e += nt) {
      const int r = e / K, d = e % K;
      GB[r * GS + d] = expf(GB[r * GS + d]);
    }
    __syncthreads();

    // 4. Y[r][j] = v_r[j] − Σ_d (Γ_r[d]·k_r[d])·S[d][j]
    for (int e = tid; e < nc * V; e += nt) {
      const int r = e / V, j = e % V;
      const float* kr = k + qk_off(row0 + r);
      const float* Gam = GB + r * GS;
      float y = v[vo_off(row0 + r) + j];
      for (int d = 0; d < K; ++d) y = fmaf(-(Gam[d] * kr[d]), S[d * V + j], y);
      Y[e] = y;  // Y is [nc][V]: e = r·V + j
    }
    __syncthreads();

    // 5. V_new = T·Y in place: every thread reads its outputs' inputs, then all write.
    {
      float acc[kMaxPerThread];
#pragma unroll
      for (int i = 0; i < kMaxPerThread; ++i) {
        const int e = tid + i * nt;
        acc[i] = 0.0f;
        if (e < nc * V) {
          const int r = e / V, j = e % V;
          float a = 0.0f;
          for (int s = 0; s <= r; ++s) a = fmaf(LX[r * C + s], Y[s * V + j], a);
          acc[i] = a;
        }
      }
      __syncthreads();
#pragma unroll
      for (int i = 0; i < kMaxPerThread; ++i) {
        const int e = tid + i * nt;
        if (e < nc * V) Y[e] = acc[i];
      }
      __syncthreads();
    }

    // 6. o_r[j] = Σ_d (Γ_r[d]·q_r[d])·S[d][j] + Σ_{s≤r} A[r][s]·V_new[s][j]
    for (int e = tid; e < nc * V; e += nt) {
      const int r = e / V, j = e % V;
      const float* qr = q + qk_off(row0 + r);
      const float* Gam = GB + r * GS;
      float acc = 0.0f;
      for (int d = 0; d < K; ++d) acc = fmaf(Gam[d] * qr[d], S[d * V + j], acc);
      for (int s = 0; s <= r; ++s) acc = fmaf(AM[r * C + s], Y[s * V + j], acc);
      o[vo_off(row0 + r) + j] = acc;
    }
    __syncthreads();  // step 6 read Γ from GB, which is overwritten next

    // 7a. GB ← k ⊙ exp(G_last − G), gl ← exp(G_last); G is summed again exactly as in step 1
    // (exp(G) cannot be turned back into G, and dividing by it could overflow).
    for (int d = tid; d < K; d += nt) {
      float run = 0.0f;
      for (int r = 0; r < nc; ++r) {
        run += g[qk_off(row0 + r) + d];
        GB[r * GS + d] = run;
      }
      const float glast = run;
      for (int r = 0; r < nc; ++r) {
        GB[r * GS + d] = expf(glast - GB[r * GS + d]) * k[qk_off(row0 + r) + d];
      }
      gl[d] = expf(glast);
    }
    __syncthreads();

    // 7b. S[d][j] ← e^{G_last[d]}·S[d][j] + Σ_r KD[r][d]·V_new[r][j]  (each thread its own elements)
    for (int e = tid; e < K * V; e += nt) {
      const int d = e / V, j = e % V;
      float s = gl[d] * S[e];
      for (int r = 0; r < nc; ++r) s = fmaf(GB[r * GS + d], Y[r * V + j], s);
      S[e] = s;
    }
    __syncthreads();  // the next chunk rewrites GB and bet and reads S
  }
  __syncthreads();  // an empty span: the state load used another mapping
  for (int e = tid; e < K * V; e += nt) state[e] = S[e];
}

// Shape checks shared by both forms.
void check_kda_args(const float* q, const float* k, const float* v, const float* g,
                    const float* beta, const Span* spans, int64_t n_spans, int64_t H, int64_t K,
                    int64_t V, const float* state_base, int64_t slot_stride, const float* o) {
  KILN_CHECK(n_spans >= 0 && n_spans <= 0x7fffffff);
  KILN_CHECK(H >= 1 && H <= 65535 && K >= 1 && V >= 1);
  KILN_CHECK(slot_stride >= H * K * V);
  KILN_CHECK(n_spans == 0 || (spans != nullptr && state_base != nullptr));
  KILN_CHECK(n_spans == 0 ||
             (q != nullptr && k != nullptr && v != nullptr && g != nullptr && beta != nullptr &&
              o != nullptr));
}

}  // namespace

void kda_recurrent(Context& ctx, const float* q, const float* k, const float* v, const float* g,
                   const float* beta, const Span* spans, int64_t n_spans, int64_t H, int64_t K,
                   int64_t V, float* state_base, int64_t slot_stride, float* o) {
  check_kda_args(q, k, v, g, beta, spans, n_spans, H, K, V, state_base, slot_stride, o);
  KILN_CHECK(V <= 1024);  // one thread per value column
  if (n_spans == 0) return;
  const int threads = static_cast<int>((V + 31) / 32 * 32);
  const int64_t smem = (K * V + 3 * K) * static_cast<int64_t>(sizeof(float));
  allow_shared_memory(ctx, kda_recurrent_kernel, smem);
  const dim3 grid(static_cast<unsigned>(n_spans), static_cast<unsigned>(H));
  kda_recurrent_kernel<<<grid, threads, static_cast<size_t>(smem), ctx.stream()>>>(
      q, k, v, g, beta, spans, static_cast<int>(H), static_cast<int>(K), static_cast<int>(V),
      state_base, slot_stride, o);
  KILN_CUDA_LAUNCH_CHECK();
}

void kda_chunked(Context& ctx, const float* q, const float* k, const float* v, const float* g,
                 const float* beta, const Span* spans, int64_t n_spans, int64_t max_n, int64_t H,
                 int64_t K, int64_t V, int64_t chunk, float* state_base, int64_t slot_stride,
                 float* o) {
  check_kda_args(q, k, v, g, beta, spans, n_spans, H, K, V, state_base, slot_stride, o);
  KILN_CHECK(chunk >= 1 && chunk <= kMaxChunk);
  KILN_CHECK(chunk * V <= int64_t{kChunkThreads} * kMaxPerThread);  // the in-place T·Y product
  KILN_CHECK(max_n >= 0);
  // Every block scans its own span's chunks in order, so the grid does not depend on max_n.
  if (n_spans == 0) return;
  const ChunkLayout lay(static_cast<int>(K), static_cast<int>(V), static_cast<int>(chunk));
  const int64_t smem = lay.floats() * static_cast<int64_t>(sizeof(float));
  allow_shared_memory(ctx, kda_chunked_kernel, smem);
  const dim3 grid(static_cast<unsigned>(n_spans), static_cast<unsigned>(H));
  kda_chunked_kernel<<<grid, kChunkThreads, static_cast<size_t>(smem), ctx.stream()>>>(
      q, k, v, g, beta, spans, static_cast<int>(H), static_cast<int>(K), static_cast<int>(V),
      static_cast<int>(chunk), state_base, slot_stride, o);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
