// Softmax, argmax and token sampling. Filters apply in the order temperature, top-k, top-p,
// min-p; the survivors are sampled by inverse CDF with the caller's uniform u. Candidates are
// walked in descending-probability order (ties: lower token id) whenever top-k or top-p sorted
// them, otherwise in token-id order; either way P(token) is its renormalised probability.
#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>

#include "kernels/base/check.h"
#include "kernels/cpu/vec_math.h"

namespace kiln::cpu {
namespace {

using Cand = std::pair<float, int32_t>;

bool higher(const Cand& a, const Cand& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

int32_t inverse_cdf(const std::vector<Cand>& c, float u) {
  double total = 0.0;
  for (const auto& x : c) total += x.first;
  const double target = double(u) * total;
  double cum = 0.0;
  for (const auto& x : c) {
    cum += x.first;
    if (cum > target) return x.second;
  }
  return c.back().second;  // u·total rounded up to the full sum
}

}  // namespace

void softmax(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double z = 0.0;
  for (int64_t i = 0; i < n; ++i) z += (x[i] = std::exp(x[i] - mx));
  vec::scale(static_cast<float>(1.0 / z), x, n);
}

int32_t argmax(const float* x, int64_t n) {
  // Start from the first number (0 when there is none); after it a NaN never compares greater,
  // so the scan is the plain one.
  int64_t best = 0;
  while (best < n && std::isnan(x[best])) ++best;
  if (best == n) return 0;
  for (int64_t i = best + 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return static_cast<int32_t>(best);
}

int32_t sample_token(const float* logits, int64_t n, const SamplingParams& params, float u,
                     std::vector<std::pair<float, int32_t>>& scratch) {
  KILN_CHECK(n >= 1);
  if (params.temperature <= 0.0f) return argmax(logits, n);
  auto& c = scratch;
  c.resize(static_cast<size_t>(n));
  const float inv_t = 1.0f / params.temperature;
  for (int64_t i = 0; i < n; ++i) c[size_t(i)] = {logits[i] * inv_t, static_cast<int32_t>(i)};
  bool sorted = false;
  if (params.top_k > 0 && params.top_k < n) {
    std::partial_sort(c.begin(), c.begin() + params.top_k, c.end(), higher);
    c.resize(static_cast<size_t>(params.top_k));
    sorted = true;
  }
  float mx = -INFINITY;
  for (const auto& x : c) mx = std::max(mx, x.first);
  double total = 0.0;
  for (auto& x : c) total += (x.first = std::exp(x.first - mx));  // unnormalised, max = 1
  if (params.top_p < 1.0f) {
    if (!sorted) std::sort(c.begin(), c.end(), higher);
    sorted = true;
    const double need = double(params.top_p) * total;
    double cum = 0.0;
    size_t keep = 0;
    while (keep < c.size() && (keep == 0 || cum < need)) cum += c[keep++].first;
    c.resize(keep);
  }
  if (params.min_p > 0.0f) {  // relative to the max probability, which is exp(0) = 1 here
    const float cut = params.min_p;
    c.erase(std::remove_if(c.begin(), c.end(), [&](const Cand& x) { return x.first < cut; }),
            c.end());
  }
  return inverse_cdf(c, u);
}

}  // namespace kiln::cpu
