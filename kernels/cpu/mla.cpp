// Absorbed MLA attention over the latent cache. Work units are (token, block of 8 heads): a unit
// reads each cache row once for all its heads (scores, then the softmax-weighted sum of the first
// R values), so the cache is streamed H/8 times per token rather than H times.
#include "kernels/cpu/mla.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/base/check.h"
#include "kernels/cpu/vec_math.h"

namespace kiln::cpu {
namespace {

constexpr int64_t kHeadBlock = 8;

// In place over n scores: p = exp(s − max) / Σ exp(s − max).
void softmax_row(float* s, int64_t n) {
  __m256 mv = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + i));
  float mx = vec::hmax(mv);
  for (; i < n; ++i) mx = std::max(mx, s[i]);
  const __m256 m8 = _mm256_set1_ps(mx);
  __m256 zv = _mm256_setzero_ps();
  for (i = 0; i + 8 <= n; i += 8) {
    const __m256 e = vec::exp(_mm256_sub_ps(_mm256_loadu_ps(s + i), m8));
    _mm256_storeu_ps(s + i, e);
    zv = _mm256_add_ps(zv, e);
  }
  float z = vec::hsum(zv);
  for (; i < n; ++i) z += (s[i] = std::exp(s[i] - mx));
  vec::scale(1.0f / z, s, n);
}

// Heads [h0, h0 + nh) of token t; scores: [nh][n] scratch.
void attend_heads(const float* q, int64_t H, int64_t R, int64_t W, const float* cache, int64_t n,
                  float scale, int64_t t, int64_t h0, int64_t nh, float* scores, float* out) {
  const float* qt = q + (t * H + h0) * W;
  for (int64_t tau = 0; tau < n; ++tau) {
    const float* c = cache + tau * W;
    for (int64_t i = 0; i < nh; ++i) scores[i * n + tau] = scale * vec::dot(qt + i * W, c, W);
  }
  for (int64_t i = 0; i < nh; ++i) softmax_row(scores + i * n, n);
  float* ot = out + (t * H + h0) * R;
  std::fill(ot, ot + nh * R, 0.0f);
  for (int64_t tau = 0; tau < n; ++tau) {
    const float* c = cache + tau * W;
    for (int64_t i = 0; i < nh; ++i) vec::axpy(scores[i * n + tau], c, R, ot + i * R);
  }
}

}  // namespace

void mla_attention_absorbed(ThreadPool& pool, const float* q, int64_t T, int64_t H, int64_t R,
                            int64_t P, const float* cache, int64_t pos0, float scale, float* out) {
  KILN_CHECK(T >= 0 && H >= 1 && R >= 1 && P >= 0 && pos0 >= 0);
  const int64_t blocks = (H + kHeadBlock - 1) / kHeadBlock;
  pool.parallel_for(T * blocks, 1, [&](int64_t u0, int64_t u1) {
    thread_local std::vector<float> scores;  // [kHeadBlock][n_ctx], grows once per context size
    const size_t need = static_cast<size_t>(kHeadBlock * (pos0 + T));
    if (scores.size() < need) scores.resize(need);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t t = u / blocks, h0 = (u % blocks) * kHeadBlock;
      attend_heads(q, H, R, R + P, cache, pos0 + t + 1, scale, t, h0,
                   std::min(kHeadBlock, H - h0), scores.data(), out);
    }
  });
}

}  // namespace kiln::cpu
