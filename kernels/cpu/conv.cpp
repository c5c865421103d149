// Causal depthwise conv + SiLU. Taps are transposed once per call to [K][C] so the inner loop
// runs over contiguous channels; the input window of each tap is either a row of x or a row of
// the carried state.
#include "kernels/cpu/conv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/base/check.h"
#include "kernels/cpu/vec_math.h"

namespace kiln::cpu {
namespace {

constexpr int kMaxTaps = 16;

// Shifts the K−1 carried inputs forward by T tokens of x (state must be read before this).
void update_state(const float* x, int64_t x_stride, int64_t T, int64_t C, int K, float* state) {
  const int64_t keep = K - 1;
  const size_t row_bytes = static_cast<size_t>(C) * sizeof(float);
  if (T < keep) {
    std::memmove(state, state + T * C, static_cast<size_t>(keep - T) * row_bytes);
  }
  for (int64_t s = std::max<int64_t>(0, keep - T); s < keep; ++s) {
    std::memcpy(state + s * C, x + (T - keep + s) * x_stride, row_bytes);
  }
}

}  // namespace

void causal_conv1d_silu(const float* x, int64_t x_stride, int64_t T, int64_t C, const float* w,
                        int K, float* state, float* y, int64_t y_stride) {
  KILN_CHECK(K >= 1 && K <= kMaxTaps && C >= 0 && T >= 0);
  thread_local std::vector<float> wt;  // [K][C] transposed taps, grows once
  if (wt.size() < static_cast<size_t>(K * C)) wt.resize(static_cast<size_t>(K * C));
  for (int64_t c = 0; c < C; ++c)
    for (int j = 0; j < K; ++j) wt[static_cast<size_t>(j * C + c)] = w[c * K + j];
  const float* rows[kMaxTaps];  // per tap, the input row it multiplies
  for (int64_t t = 0; t < T; ++t) {
    for (int j = 0; j < K; ++j) {
      const int64_t s = t - (K - 1) + j;
      rows[j] = s >= 0 ? x + s * x_stride : state + (K - 1 + s) * C;
    }
    float* yt = y + t * y_stride;
    int64_t c = 0;
    for (; c + 8 <= C; c += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int j = 0; j < K; ++j) {
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(wt.data() + j * C + c), _mm256_loadu_ps(rows[j] + c),
                              acc);
      }
      _mm256_storeu_ps(yt + c, _mm256_mul_ps(acc, vec::sigmoid(acc)));
    }
    for (; c < C; ++c) {
      float acc = 0.0f;
      for (int j = 0; j < K; ++j) acc += wt[static_cast<size_t>(j * C + c)] * rows[j][c];
      yt[c] = acc / (1.0f + std::exp(-acc));
    }
  }
  update_state(x, x_stride, T, C, K, state);
}

}  // namespace kiln::cpu
