// Reference norms, element-wise ops and the causal conv, written straight from their contracts.
#include <cmath>
#include <vector>

#include "kernels/ref/ref.h"

namespace kiln::ref {
namespace {

double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

double mean_square(const float* x, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
  return s / double(n);
}

}  // namespace

void rms_norm(const float* x, const float* w, int64_t n_rows, int64_t dim, float eps, float* y) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const double inv = 1.0 / std::sqrt(mean_square(x + r * dim, dim) + eps);
    for (int64_t i = 0; i < dim; ++i) {
      y[r * dim + i] = float(double(x[r * dim + i]) * inv * (w ? w[i] : 1.0f));
    }
  }
}

void add_rms_norm(float* h, const float* delta, const float* w, int64_t n_rows, int64_t dim,
                  float eps, float* y) {
  for (int64_t i = 0; i < n_rows * dim; ++i) h[i] += delta[i];
  rms_norm(h, w, n_rows, dim, eps, y);
}

void l2_norm(float* x, int64_t n_rows, int64_t dim, float eps, float scale) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const double inv = scale / std::sqrt(mean_square(x + r * dim, dim) * double(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) x[r * dim + i] = float(x[r * dim + i] * inv);
  }
}

void gated_rms_norm_sigmoid(const float* o, const float* z, const float* w, int64_t n_rows,
                            int64_t dim, float eps, float* y) {
  for (int64_t r = 0; r < n_rows; ++r) {
    const double inv = 1.0 / std::sqrt(mean_square(o + r * dim, dim) + eps);
    for (int64_t i = 0; i < dim; ++i) {
      const int64_t k = r * dim + i;
      y[k] = float(double(w[i]) * o[k] * inv * sigmoid(z[k]));
    }
  }
}

void silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = float(gate[i] * sigmoid(gate[i]) * up[i]);
}

void causal_conv1d_silu(const float* x, int64_t x_stride, int64_t T, int64_t C, const float* w,
                        int K, float* state, float* y, int64_t y_stride) {
  // Full input history: K−1 carried rows followed by the T new rows.
  std::vector<float> hist(size_t((K - 1 + T) * C));
  for (int64_t s = 0; s < K - 1; ++s)
    for (int64_t c = 0; c < C; ++c) hist[size_t(s * C + c)] = state[s * C + c];
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c) hist[size_t((K - 1 + t) * C + c)] = x[t * x_stride + c];
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0.0;
      for (int j = 0; j < K; ++j) acc += double(w[c * K + j]) * hist[size_t((t + j) * C + c)];
      y[t * y_stride + c] = float(acc * sigmoid(acc));
    }
  }
  for (int64_t s = 0; s < K - 1; ++s)
    for (int64_t c = 0; c < C; ++c) state[s * C + c] = hist[size_t((T + s) * C + c)];
}

}  // namespace kiln::ref
