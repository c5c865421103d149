// Fused element-wise fp32 ops (SwiGLU's SiLU·up, axpy, sigmoid) with AVX2 and a scalar tail.
#include "kernels/cpu/elementwise.h"

#include <cmath>

#include "kernels/cpu/vec_math.h"

namespace kiln::cpu {

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 s = _mm256_mul_ps(g, vec::sigmoid(g));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void axpy(float a, const float* x, int64_t n, float* y) { vec::axpy(a, x, n, y); }

void sigmoid_inplace(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, vec::sigmoid(_mm256_loadu_ps(x + i)));
  for (; i < n; ++i) x[i] = 1.0f / (1.0f + std::exp(-x[i]));
}

}  // namespace kiln::cpu
