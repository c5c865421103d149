// KDA chunked (WY / UT-transform) form, kimi-linear.md §3.3, for prefill. Per head the chunks are
// scanned in order; inside a chunk the work is small dense products (C×K by K×V), done with a
// 4×16 register-tiled kernel. Every decay factor is exp of a non-positive number (§8.2): pairwise
// exp(G_r − G_s) inside 16-row diagonal sub-blocks, factors anchored at the sub-block's first row
// elsewhere, exp(G_r) and exp(G_last − G_r); so no overflow for any g ≤ 0.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/base/check.h"
#include "kernels/cpu/kda.h"
#include "kernels/cpu/vec_math.h"

namespace kiln::cpu {
namespace {

constexpr int64_t kMaxChunk = 256;
constexpr int64_t kSub = 16;  // sub-block of the intra-chunk matrices with pairwise decays

// Cm[M][N] += Am[M][P] · Bm[P][N]; leading dimensions in floats.
void gemm_acc(int64_t M, int64_t N, int64_t P, const float* Am, int64_t lda, const float* Bm,
              int64_t ldb, float* Cm, int64_t ldc) {
  int64_t j = 0;
  for (; j + 16 <= N; j += 16) {
    int64_t i = 0;
    for (; i + 4 <= M; i += 4) {
      __m256 acc[4][2];
      for (int r = 0; r < 4; ++r) {
        acc[r][0] = _mm256_loadu_ps(Cm + (i + r) * ldc + j);
        acc[r][1] = _mm256_loadu_ps(Cm + (i + r) * ldc + j + 8);
      }
      for (int64_t p = 0; p < P; ++p) {
        const __m256 b0 = _mm256_loadu_ps(Bm + p * ldb + j), b1 = _mm256_loadu_ps(Bm + p * ldb + j + 8);
        for (int r = 0; r < 4; ++r) {
          const __m256 a = _mm256_broadcast_ss(Am + (i + r) * lda + p);
          acc[r][0] = _mm256_fmadd_ps(a, b0, acc[r][0]);
          acc[r][1] = _mm256_fmadd_ps(a, b1, acc[r][1]);
        }
      }
      for (int r = 0; r < 4; ++r) {
        _mm256_storeu_ps(Cm + (i + r) * ldc + j, acc[r][0]);
        _mm256_storeu_ps(Cm + (i + r) * ldc + j + 8, acc[r][1]);
      }
    }
    for (; i < M; ++i)
      for (int64_t p = 0; p < P; ++p) vec::axpy(Am[i * lda + p], Bm + p * ldb + j, 16, Cm + i * ldc + j);
  }
  if (j < N) {  // column tail
    for (int64_t i = 0; i < M; ++i)
      for (int64_t p = 0; p < P; ++p) vec::axpy(Am[i * lda + p], Bm + p * ldb + j, N - j, Cm + i * ldc + j);
  }
}

// Σ_d a[d]·b[d]·exp(x[d] − y[d]) for both (a, c) pairs at once: returns {Σ a b e, Σ c b e}.
void decayed_dots(const float* a, const float* c, const float* b, const float* x, const float* y,
                  int64_t K, float* out_ab, float* out_cb) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 8 <= K; d += 8) {
    const __m256 e = vec::exp(_mm256_sub_ps(_mm256_loadu_ps(x + d), _mm256_loadu_ps(y + d)));
    const __m256 be = _mm256_mul_ps(_mm256_loadu_ps(b + d), e);
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), be, s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(c + d), be, s1);
  }
  float r0 = vec::hsum(s0), r1 = vec::hsum(s1);
  for (; d < K; ++d) {
    const float be = b[d] * std::exp(x[d] - y[d]);
    r0 += a[d] * be;
    r1 += c[d] * be;
  }
  *out_ab = r0;
  *out_cb = r1;
}

// Per-thread scratch for one chunk of up to C rows, sized once.
struct Scratch {
  std::vector<float> G, L, A, KG, Wn, U, QG, KDt, Ka, Qa, Kbt;
  void ensure(int64_t C, int64_t K, int64_t V) {
    auto grow = [](std::vector<float>& b, int64_t n) {
      if (b.size() < static_cast<size_t>(n)) b.resize(static_cast<size_t>(n));
    };
    grow(G, C * K), grow(L, C * C), grow(A, C * C), grow(KG, C * K), grow(Wn, C * K);
    grow(U, C * V), grow(QG, C * K), grow(KDt, K * C);
    grow(Ka, kSub * K), grow(Qa, kSub * K), grow(Kbt, K * kSub);
  }
};

// Token-row strides inside one head: q/k/g rows are H·K apart, v/o rows H·V, beta H.
struct HeadView {
  const float *q, *k, *v, *g, *beta;
  float* o;
  int64_t H, K, V;
  const float* qr(int64_t t) const { return q + t * H * K; }
  const float* kr(int64_t t) const { return k + t * H * K; }
  const float* vr(int64_t t) const { return v + t * H * V; }
  const float* gr(int64_t t) const { return g + t * H * K; }
};

// Off-diagonal sub-block rows [i0, i1) × columns [j0, j1), j1 ≤ i0, of L and A as small GEMMs.
// Anchoring at row i0 splits exp(G_r − G_s) = exp(G_r − G_{i0}) · exp(G_{i0} − G_s) with both
// exponents ≤ 0 (s < i0 ≤ r), so neither factor can overflow.
void offdiag_block(const HeadView& hv, int64_t t0, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                   int64_t C, Scratch& s) {
  const int64_t K = hv.K, nj = j1 - j0;
  const float* ga = s.G.data() + i0 * K;
  float* tmp = s.Wn.data();  // free until wy_factors
  for (int64_t sc = j0; sc < j1; ++sc) {
    vec::exp_diff(ga, s.G.data() + sc * K, K, tmp);
    vec::mul(tmp, hv.kr(t0 + sc), K, tmp);
    for (int64_t d = 0; d < K; ++d) s.Kbt[d * kSub + (sc - j0)] = tmp[d];
  }
  gemm_acc(i1 - i0, nj, K, s.Ka.data(), K, s.Kbt.data(), kSub, s.L.data() + i0 * C + j0, C);
  gemm_acc(i1 - i0, nj, K, s.Qa.data(), K, s.Kbt.data(), kSub, s.A.data() + i0 * C + j0, C);
  for (int64_t r = i0; r < i1; ++r) vec::scale(hv.beta[(t0 + r) * hv.H], s.L.data() + r * C + j0, nj);
}

// Steps 1, 2 and 5 of §3.3 for rows [0, n) of the chunk at token t0: the chunk-local cumulative
// log decay G, the strictly lower L (with β_r) and the lower-with-diagonal A. Diagonal 16×16
// sub-blocks use pairwise exp(G_r − G_s); the others are anchored GEMMs (offdiag_block).
void decay_matrices(const HeadView& hv, int64_t t0, int64_t n, int64_t C, Scratch& s) {
  const int64_t K = hv.K;
  for (int64_t r = 0; r < n; ++r) {
    const float* gr = hv.gr(t0 + r);
    for (int64_t d = 0; d < K; ++d) s.G[r * K + d] = (r ? s.G[(r - 1) * K + d] : 0.0f) + gr[d];
  }
  std::fill(s.A.begin(), s.A.begin() + n * C, 0.0f);
  std::fill(s.L.begin(), s.L.begin() + n * C, 0.0f);
  for (int64_t i0 = 0; i0 < n; i0 += kSub) {
    const int64_t i1 = std::min(n, i0 + kSub);
    for (int64_t r = i0; r < i1; ++r) {
      const float br = hv.beta[(t0 + r) * hv.H];
      for (int64_t sc = i0; sc <= r; ++sc) {
        float kk, qk;
        decayed_dots(hv.kr(t0 + r), hv.qr(t0 + r), hv.kr(t0 + sc), s.G.data() + r * K,
                     s.G.data() + sc * K, K, &kk, &qk);
        if (sc < r) s.L[r * C + sc] = br * kk;
        s.A[r * C + sc] = qk;
      }
    }
    if (i0 == 0) continue;
    for (int64_t r = i0; r < i1; ++r) {  // row factors anchored at i0, shared by every column block
      vec::exp_diff(s.G.data() + r * K, s.G.data() + i0 * K, K, s.Ka.data() + (r - i0) * K);
      vec::mul(s.Ka.data() + (r - i0) * K, hv.qr(t0 + r), K, s.Qa.data() + (r - i0) * K);
      vec::mul(s.Ka.data() + (r - i0) * K, hv.kr(t0 + r), K, s.Ka.data() + (r - i0) * K);
    }
    for (int64_t j0 = 0; j0 < i0; j0 += kSub) offdiag_block(hv, t0, i0, i1, j0, j0 + kSub, C, s);
  }
}

// Step 3, in place over L: T = (I + L)⁻¹ Diag(β) by forward substitution.
void ut_transform(const HeadView& hv, int64_t t0, int64_t n, int64_t C, Scratch& s) {
  float* X = s.L.data();
  for (int64_t r = 0; r < n; ++r) {
    float* xr = X + r * C;
    // Row r of X is e_r − Σ_{m<r} L[r][m] X[m]; row r of L is only overwritten at the end.
    float acc[kMaxChunk];
    std::fill(acc, acc + r + 1, 0.0f);
    acc[r] = 1.0f;
    for (int64_t m = 0; m < r; ++m) {
      const float l = xr[m];
      if (l != 0.0f) vec::axpy(-l, X + m * C, m + 1, acc);
    }
    std::copy(acc, acc + r + 1, xr);
  }
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c <= r; ++c) X[r * C + c] *= hv.beta[(t0 + c) * hv.H];
}

// Step 4 and the decayed operands of step 6: Wn = −T·(Γ⊙K) (negated so V_new = U + Wn·S is a
// plain accumulate), U = T·V, QG = Q⊙Γ, KDt = (K ⊙ exp(G_last − G))ᵀ.
void wy_factors(const HeadView& hv, int64_t t0, int64_t n, int64_t C, Scratch& s) {
  const int64_t K = hv.K, V = hv.V;
  const float* glast = s.G.data() + (n - 1) * K;
  for (int64_t r = 0; r < n; ++r) {
    const float* kr = hv.kr(t0 + r);
    const float* Gr = s.G.data() + r * K;
    float* kg = s.KG.data() + r * K;
    float* qg = s.QG.data() + r * K;
    float* kd = s.Wn.data();  // Wn is free until the products below; row of k ⊙ exp(G_last − G_r)
    vec::exp_of(Gr, K, kg);
    vec::exp_diff(glast, Gr, K, kd);
    vec::mul(kg, hv.qr(t0 + r), K, qg);
    vec::mul(kg, kr, K, kg);
    vec::mul(kd, kr, K, kd);
    for (int64_t d = 0; d < K; ++d) s.KDt[d * C + r] = kd[d];
  }
  std::fill(s.Wn.begin(), s.Wn.begin() + n * K, 0.0f);
  std::fill(s.U.begin(), s.U.begin() + n * V, 0.0f);
  gemm_acc(n, K, n, s.L.data(), C, s.KG.data(), K, s.Wn.data(), K);
  for (int64_t i = 0; i < n * K; ++i) s.Wn[size_t(i)] = -s.Wn[size_t(i)];
  gemm_acc(n, V, n, s.L.data(), C, hv.v + t0 * hv.H * V, hv.H * V, s.U.data(), V);
}

// Step 6: V_new = U − W·S;  O = (Q⊙Γ)·S + A·V_new;  S ← Diag(Γ_last)·S + (K⊙exp(G_last−G))ᵀ·V_new.
void chunk_apply(const HeadView& hv, int64_t t0, int64_t n, int64_t C, Scratch& s, float* S) {
  const int64_t K = hv.K, V = hv.V, ldo = hv.H * V;
  float* o = hv.o + t0 * ldo;
  gemm_acc(n, V, K, s.Wn.data(), K, S, V, s.U.data(), V);  // U now holds V_new
  for (int64_t r = 0; r < n; ++r) std::fill(o + r * ldo, o + r * ldo + V, 0.0f);
  gemm_acc(n, V, K, s.QG.data(), K, S, V, o, ldo);
  gemm_acc(n, V, n, s.A.data(), C, s.U.data(), V, o, ldo);
  const float* glast = s.G.data() + (n - 1) * K;
  float* gam_last = s.Wn.data();  // Wn is no longer needed
  vec::exp_of(glast, K, gam_last);
  for (int64_t d = 0; d < K; ++d) vec::scale(gam_last[d], S + d * V, V);
  gemm_acc(K, V, n, s.KDt.data(), C, s.U.data(), V, S, V);
}

}  // namespace

void kda_chunked(ThreadPool& pool, const float* q, const float* k, const float* v, const float* g,
                 const float* beta, int64_t T, int64_t H, int64_t K, int64_t V, int64_t chunk,
                 float* state, float* o) {
  KILN_CHECK(chunk >= 1 && chunk <= kMaxChunk);
  pool.parallel_for(H, 1, [&](int64_t h0, int64_t h1) {
    thread_local Scratch scratch;
    scratch.ensure(chunk, K, V);
    for (int64_t h = h0; h < h1; ++h) {
      const HeadView hv{q + h * K, k + h * K, v + h * V, g + h * K, beta + h, o + h * V, H, K, V};
      for (int64_t t0 = 0; t0 < T; t0 += chunk) {
        const int64_t n = std::min(chunk, T - t0);
        decay_matrices(hv, t0, n, chunk, scratch);
        ut_transform(hv, t0, n, chunk, scratch);
        wy_factors(hv, t0, n, chunk, scratch);
        chunk_apply(hv, t0, n, chunk, scratch, state + h * K * V);
      }
    }
  });
}

}  // namespace kiln::cpu
