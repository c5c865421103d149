// KDA gate and the token-by-token recurrence (decode path). Heads are independent and split
// across the pool; each head's K×V state (64 KiB at K = V = 128) stays in that thread's L2.
// The chunked prefill form lives in kda_chunked.cpp.
#include "kernels/cpu/kda.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/vec_math.h"

namespace kiln::cpu {
namespace {

// row ← α·row; acc += kd·row  (one pass of S' = Diag(α)S fused with Sᵀk).
void decay_row_dot(float* row, float alpha, float kd, float* acc, int64_t V) {
  const __m256 a = _mm256_set1_ps(alpha), kv = _mm256_set1_ps(kd);
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) {
    const __m256 r = _mm256_mul_ps(_mm256_loadu_ps(row + j), a);
    _mm256_storeu_ps(row + j, r);
    _mm256_storeu_ps(acc + j, _mm256_fmadd_ps(kv, r, _mm256_loadu_ps(acc + j)));
  }
  for (; j < V; ++j) {
    row[j] *= alpha;
    acc[j] += kd * row[j];
  }
}

// row += kd·bu; acc += qd·row  (the rank-1 write fused with the read-after-write Sᵀq).
void write_row_dot(float* row, float kd, const float* bu, float qd, float* acc, int64_t V) {
  const __m256 kv = _mm256_set1_ps(kd), qv = _mm256_set1_ps(qd);
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) {
    const __m256 r = _mm256_fmadd_ps(kv, _mm256_loadu_ps(bu + j), _mm256_loadu_ps(row + j));
    _mm256_storeu_ps(row + j, r);
    _mm256_storeu_ps(acc + j, _mm256_fmadd_ps(qv, r, _mm256_loadu_ps(acc + j)));
  }
  for (; j < V; ++j) {
    row[j] += kd * bu[j];
    acc[j] += qd * row[j];
  }
}

// One head over T tokens; S: [K][V], scratch: 2V + K floats.
void recurrent_head(const float* q, const float* k, const float* v, const float* g,
                    const float* beta, int64_t T, int64_t H, int64_t K, int64_t V, float* S,
                    float* o, float* scratch) {
  float* pred = scratch;         // Sᵀk, then β·u
  float* out = scratch + V;      // Sᵀq
  float* alpha = scratch + 2 * V;  // exp(g_t)
  for (int64_t t = 0; t < T; ++t) {
    const float* qt = q + t * H * K;
    const float* kt = k + t * H * K;
    vec::exp_of(g + t * H * K, K, alpha);
    std::fill(pred, pred + V, 0.0f);
    for (int64_t d = 0; d < K; ++d) decay_row_dot(S + d * V, alpha[d], kt[d], pred, V);
    const float b = beta[t * H];
    const float* vt = v + t * H * V;
    for (int64_t j = 0; j < V; ++j) pred[j] = b * (vt[j] - pred[j]);
    std::fill(out, out + V, 0.0f);
    for (int64_t d = 0; d < K; ++d) write_row_dot(S + d * V, kt[d], pred, qt[d], out, V);
    std::copy(out, out + V, o + t * H * V);
  }
}

}  // namespace

void kda_gate(float* f, int64_t T, int64_t H, int64_t K, const float* a_neg, const float* dt_bias) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      float* fr = f + (t * H + h) * K;
      const float* br = dt_bias + h * K;
      for (int64_t d = 0; d < K; ++d) {
        const float x = fr[d] + br[d];
        fr[d] = a_neg[h] * (x > 20.0f ? x : std::log1p(std::exp(x)));
      }
    }
  }
}

void kda_recurrent(ThreadPool& pool, const float* q, const float* k, const float* v,
                   const float* g, const float* beta, int64_t T, int64_t H, int64_t K, int64_t V,
                   float* state, float* o) {
  pool.parallel_for(H, 1, [&](int64_t h0, int64_t h1) {
    thread_local std::vector<float> scratch;  // [2V + K], grows once
    const auto need = static_cast<size_t>(2 * V + K);
    if (scratch.size() < need) scratch.resize(need);
    for (int64_t h = h0; h < h1; ++h) {
      recurrent_head(q + h * K, k + h * K, v + h * V, g + h * K, beta + h, T, H, K, V,
                     state + h * K * V, o + h * V, scratch.data());
    }
  });
}

}  // namespace kiln::cpu
