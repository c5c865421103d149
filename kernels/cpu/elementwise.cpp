// Fused element-wise fp32 ops (SwiGLU's SiLU·up, axpy, sigmoid) with AVX2. The last n % 8
// elements of silu_mul and sigmoid_inplace go through the same vector code on a zero-padded copy,
// so an element's result does not depend on its index or on n: a token's row gives the same bits
// wherever it sits in a batch.
#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/vec_math.h"

namespace kiln::cpu {
namespace {

__m256 silu_mul8(__m256 g, __m256 u) { return _mm256_mul_ps(_mm256_mul_ps(g, vec::sigmoid(g)), u); }

}  // namespace

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, silu_mul8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  }
  if (i < n) {
    alignas(32) float g[8] = {}, u[8] = {};
    std::copy(gate + i, gate + n, g);
    std::copy(up + i, up + n, u);
    _mm256_store_ps(g, silu_mul8(_mm256_load_ps(g), _mm256_load_ps(u)));
    std::copy(g, g + (n - i), out + i);
  }
}

void axpy(float a, const float* x, int64_t n, float* y) { vec::axpy(a, x, n, y); }

void sigmoid_inplace(float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, vec::sigmoid(_mm256_loadu_ps(x + i)));
  if (i < n) {
    alignas(32) float t[8] = {};
    std::copy(x + i, x + n, t);
    _mm256_store_ps(t, vec::sigmoid(_mm256_load_ps(t)));
    std::copy(t, t + (n - i), x + i);
  }
}

}  // namespace kiln::cpu
