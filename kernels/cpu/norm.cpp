// RMSNorm, fused residual-add + RMSNorm, per-row L2 norm and KDA's sigmoid-gated RMSNorm, fp32
// with AVX2. Rows are independent; these run on the calling thread (they are bandwidth-trivial
// next to the matmuls around them).
#include "kernels/cpu/norm.h"

#include <cmath>

#include "kernels/cpu/vec_math.h"

namespace kiln::cpu {
namespace {

// y = w ⊙ x · inv (w may be null: no weight), vectorised with a scalar tail.
void scale_row(const float* x, const float* w, float inv, int64_t dim, float* y) {
  const __m256 iv = _mm256_set1_ps(inv);
  int64_t i = 0;
  for (; i + 8 <= dim; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), iv);
    if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
    _mm256_storeu_ps(y + i, v);
  }
  for (; i < dim; ++i) y[i] = x[i] * inv * (w ? w[i] : 1.0f);
}

float rms_inv(const float* x, int64_t dim, float eps) {
  return 1.0f / std::sqrt(vec::sum_squares(x, dim) / static_cast<float>(dim) + eps);
}

}  // namespace

void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t dim, float eps, float* y) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* xr = x + r * dim;
    scale_row(xr, w, rms_inv(xr, dim, eps), dim, y + r * dim);
  }
}

void add_rms_norm(float* h, const float* delta, const float* w, int64_t n_rows, int64_t dim,
                  float eps, float* y) {
  for (int64_t r = 0; r < n_rows; ++r) {
    float* hr = h + r * dim;
    vec::axpy(1.0f, delta + r * dim, dim, hr);
    scale_row(hr, w, rms_inv(hr, dim, eps), dim, y + r * dim);
  }
}

void l2_norm(float* x, int64_t n_rows, int64_t dim, float eps, float scale) {
  for (int64_t r = 0; r < n_rows; ++r) {
    float* xr = x + r * dim;
    vec::scale(scale / std::sqrt(vec::sum_squares(xr, dim) + eps), xr, dim);
  }
}

void gated_rms_norm_sigmoid(const float* o, const float* z, const float* w, int64_t n_rows,
                            int64_t dim, float eps, float* y) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* orow = o + r * dim;
    const float* zr = z + r * dim;
    float* yr = y + r * dim;
    const float inv = rms_inv(orow, dim, eps);
    const __m256 iv = _mm256_set1_ps(inv);
    int64_t i = 0;
    for (; i + 8 <= dim; i += 8) {
      const __m256 n = _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(orow + i), iv),
                                     _mm256_loadu_ps(w + i));
      _mm256_storeu_ps(yr + i, _mm256_mul_ps(n, vec::sigmoid(_mm256_loadu_ps(zr + i))));
    }
    for (; i < dim; ++i) yr[i] = w[i] * orow[i] * inv / (1.0f + std::exp(-zr[i]));
  }
}

}  // namespace kiln::cpu
