// Absorbed MLA attention over the paged latent cache. Work units are (token, block of ≤ 16 heads).
// Cache rows are taken in 64-position blocks (their row addresses looked up once per block) that
// stay in L1/L2 while every head of the unit uses them for its scores (4-head × 2-position
// register tiles) and then its weighted value sum (4-head × 16-column tiles), with the softmax
// kept online (running max and sum per head, earlier sums rescaled when the max grows): each unit
// streams the cache from memory once. The blocks do not depend on the page size or the batch.
#include "kernels/cpu/mla.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/base/check.h"
#include "kernels/cpu/vec_math.h"

namespace kiln::cpu {
namespace {

constexpr int64_t kHeadBlock = 16;  // heads per work unit (fewer when a call has few tokens)
constexpr int64_t kPosBlock = 64;   // cache rows per L2-resident block (147 KiB at 576 wide)

// In place over n scores: s ← exp(s − mx); returns Σ of the results.
float exp_shifted_sum(float* s, int64_t n, float mx) {
  const __m256 m8 = _mm256_set1_ps(mx);
  __m256 zv = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = vec::exp(_mm256_sub_ps(_mm256_loadu_ps(s + i), m8));
    _mm256_storeu_ps(s + i, e);
    zv = _mm256_add_ps(zv, e);
  }
  float z = vec::hsum(zv);
  for (; i < n; ++i) z += (s[i] = std::exp(s[i] - mx));
  return z;
}

// Row addresses of positions [p0, p1) (at most kPosBlock) → rows[0 .. p1 − p0).
void block_rows(const float* const* pages, int64_t page_tokens, int64_t W, int64_t p0, int64_t p1,
                const float** rows) {
  int64_t page = p0 / page_tokens, r = p0 % page_tokens;
  for (int64_t p = p0; p < p1; ++p) {
    rows[p - p0] = pages[page] + r * W;
    if (++r == page_tokens) {
      r = 0;
      ++page;
    }
  }
}

// s[i][p] = scale · q_i · c[p] for NH heads × NP positions; rows of q and c are W floats.
template <int NH, int NP>
void score_tile(const float* q, const float* const* c, int64_t W, float scale, float* s,
                int64_t ld) {
  __m256 acc[NH][NP];
  for (int i = 0; i < NH; ++i)
    for (int p = 0; p < NP; ++p) acc[i][p] = _mm256_setzero_ps();
  const int64_t w8 = W & ~int64_t{7};
  for (int64_t d = 0; d < w8; d += 8) {
    __m256 cv[NP];
    for (int p = 0; p < NP; ++p) cv[p] = _mm256_loadu_ps(c[p] + d);
    for (int i = 0; i < NH; ++i) {
      const __m256 qv = _mm256_loadu_ps(q + i * W + d);
      for (int p = 0; p < NP; ++p) acc[i][p] = _mm256_fmadd_ps(qv, cv[p], acc[i][p]);
    }
  }
  for (int i = 0; i < NH; ++i) {
    for (int p = 0; p < NP; ++p) {
      float v = vec::hsum(acc[i][p]);
      for (int64_t d = w8; d < W; ++d) v += q[i * W + d] * c[p][d];
      s[i * ld + p] = scale * v;
    }
  }
}

// out[i][j..j+16) += Σ_{t0≤τ<t1} p[i][τ] · rows[τ − t0][j..j+16) for NH heads (p rows n
// apart).
template <int NH>
void value_tile(const float* pr, int64_t n, int64_t t0, int64_t t1, const float* const* rows,
                int64_t j, float* out, int64_t R) {
  __m256 acc[NH][2];
  for (int i = 0; i < NH; ++i) {
    acc[i][0] = _mm256_loadu_ps(out + i * R + j);
    acc[i][1] = _mm256_loadu_ps(out + i * R + j + 8);
  }
  for (int64_t tau = t0; tau < t1; ++tau) {
    const __m256 c0 = _mm256_loadu_ps(rows[tau - t0] + j);
    const __m256 c1 = _mm256_loadu_ps(rows[tau - t0] + j + 8);
    for (int i = 0; i < NH; ++i) {
      const __m256 pv = _mm256_broadcast_ss(pr + i * n + tau);
      acc[i][0] = _mm256_fmadd_ps(pv, c0, acc[i][0]);
      acc[i][1] = _mm256_fmadd_ps(pv, c1, acc[i][1]);
    }
  }
  for (int i = 0; i < NH; ++i) {
    _mm256_storeu_ps(out + i * R + j, acc[i][0]);
    _mm256_storeu_ps(out + i * R + j + 8, acc[i][1]);
  }
}

// The latent cache as seen by one sequence: page_tokens rows of W floats per page.
struct Pages {
  const float* const* pages;
  int64_t page_tokens, W;
};

// Scores of nh consecutive heads (q rows W apart) against the m ≤ kPosBlock rows: s[i][p],
// rows of s kPosBlock apart.
void block_scores(const float* q, int64_t nh, const float* const* rows, int64_t m, int64_t W,
                  float scale, float* s) {
  int64_t i = 0;
  for (; i + 4 <= nh; i += 4) {
    int64_t p = 0;
    for (; p + 2 <= m; p += 2) {
      score_tile<4, 2>(q + i * W, rows + p, W, scale, s + i * kPosBlock + p, kPosBlock);
    }
    if (p < m) score_tile<4, 1>(q + i * W, rows + p, W, scale, s + i * kPosBlock + p, kPosBlock);
  }
  for (; i < nh; ++i) {
    for (int64_t p = 0; p < m; ++p) {
      score_tile<1, 1>(q + i * W, rows + p, W, scale, s + i * kPosBlock + p, kPosBlock);
    }
  }
}

// Heads [h0, h0 + nh) of token t attending to positions [0, n); s: [nh][kPosBlock] scratch.
void attend_heads(const float* q, int64_t H, int64_t R, const Pages& c, int64_t n, float scale,
                  int64_t t, int64_t h0, int64_t nh, float* s, float* out) {
  const float* qt = q + (t * H + h0) * c.W;
  float* ot = out + (t * H + h0) * R;
  std::fill(ot, ot + nh * R, 0.0f);
  float mx[kHeadBlock], z[kHeadBlock];
  std::fill_n(mx, nh, -INFINITY);
  std::fill_n(z, nh, 0.0f);
  const int64_t r16 = R & ~int64_t{15};
  const float* rows[kPosBlock];
  for (int64_t t0 = 0; t0 < n; t0 += kPosBlock) {
    const int64_t m = std::min(n, t0 + kPosBlock) - t0;
    block_rows(c.pages, c.page_tokens, c.W, t0, t0 + m, rows);
    block_scores(qt, nh, rows, m, c.W, scale, s);
    for (int64_t i = 0; i < nh; ++i) {  // online softmax: probabilities relative to the new max
      float* si = s + i * kPosBlock;
      const float bm = *std::max_element(si, si + m);
      if (bm > mx[i]) {
        const float corr = std::exp(mx[i] - bm);  // 0 for the first block
        vec::scale(corr, ot + i * R, R);
        z[i] *= corr;
        mx[i] = bm;
      }
      z[i] += exp_shifted_sum(si, m, mx[i]);
    }
    for (int64_t j = 0; j < r16; j += 16) {
      int64_t i = 0;
      for (; i + 4 <= nh; i += 4)
        value_tile<4>(s + i * kPosBlock, kPosBlock, 0, m, rows, j, ot + i * R, R);
      for (; i < nh; ++i) value_tile<1>(s + i * kPosBlock, kPosBlock, 0, m, rows, j, ot + i * R, R);
    }
    for (int64_t i = 0; i < nh && r16 < R; ++i)  // column tail
      for (int64_t p = 0; p < m; ++p)
        vec::axpy(s[i * kPosBlock + p], rows[p] + r16, R - r16, ot + i * R + r16);
  }
  for (int64_t i = 0; i < nh; ++i) vec::scale(1.0f / z[i], ot + i * R, R);
}

}  // namespace

void mla_attention_absorbed(ThreadPool& pool, const float* q, int64_t T, int64_t H, int64_t R,
                            int64_t P, const float* const* pages, int64_t page_tokens, int64_t pos0,
                            float scale, float* out) {
  KILN_CHECK(T >= 0 && H >= 1 && R >= 1 && P >= 0 && pos0 >= 0 && page_tokens >= 1);
  const Pages c{pages, page_tokens, R + P};
  // Decode has one token per sequence: smaller head blocks give every thread a unit (each unit
  // streams the cache; a head's arithmetic does not depend on its block, so results are the same).
  int64_t hb = kHeadBlock;
  while (hb > 4 && T * ((H + hb - 1) / hb) < pool.size()) hb /= 2;
  const int64_t blocks = (H + hb - 1) / hb;
  pool.parallel_for(T * blocks, 1, [&](int64_t u0, int64_t u1) {
    float probs[kHeadBlock * kPosBlock];  // one position block's scores, then probabilities
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t t = u / blocks, h0 = (u % blocks) * hb;
      attend_heads(q, H, R, c, pos0 + t + 1, scale, t, h0, std::min(hb, H - h0), probs, out);
    }
  });
}

}  // namespace kiln::cpu
