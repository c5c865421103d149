// Reference MoE routing (full sort of the selection scores), softmax and argmax.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/ref/ref.h"

namespace kiln::ref {

void moe_route(const float* logits, int64_t T, int64_t n_experts, const float* bias, int k,
               bool renormalize, float scale, int32_t* ids, float* weights) {
  std::vector<int32_t> order(static_cast<size_t>(n_experts));
  std::vector<float> p(static_cast<size_t>(n_experts)), s(static_cast<size_t>(n_experts));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t e = 0; e < n_experts; ++e) {
      p[size_t(e)] = float(1.0 / (1.0 + std::exp(-double(logits[t * n_experts + e]))));
      s[size_t(e)] = bias ? p[size_t(e)] + bias[e] : p[size_t(e)];
    }
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return s[size_t(a)] > s[size_t(b)]; });
    double sum = 0.0;
    for (int i = 0; i < k; ++i) sum += p[size_t(order[size_t(i)])];
    for (int i = 0; i < k; ++i) {
      ids[t * k + i] = order[size_t(i)];
      const double w = p[size_t(order[size_t(i)])];
      weights[t * k + i] = float(renormalize ? w / (sum + 1e-20) * scale : w * scale);
    }
  }
}

void softmax(float* x, int64_t n) {
  double mx = -INFINITY, z = 0.0;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, double(x[i]));
  for (int64_t i = 0; i < n; ++i) z += std::exp(x[i] - mx);
  for (int64_t i = 0; i < n; ++i) x[i] = float(std::exp(x[i] - mx) / z);
}

int32_t argmax(const float* x, int64_t n) {
  int32_t best = 0;
  for (int64_t i = 0; i < n; ++i)
    if (x[i] > x[best] || (std::isnan(x[best]) && !std::isnan(x[i]))) best = int32_t(i);
  return best;
}

}  // namespace kiln::ref
