// Softmax, argmax and the token sampler (contracts in sampling.h).
#include "kernels/cpu/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/base/check.h"
#include "kernels/cpu/vec_math.h"

namespace kiln::cpu {
namespace {

using Cand = std::pair<float, int32_t>;  // (logit or probability, token id)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Larger value first, lower id on ties: a strict total order, so every selection below picks the
// same set whether it sorts or partitions.
bool higher(const Cand& a, const Cand& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

// Keeps the k best of c, sorted best first: O(n + k log k).
void keep_top_k(std::vector<Cand>& c, size_t k) {
  std::nth_element(c.begin(), c.begin() + static_cast<ptrdiff_t>(k - 1), c.end(), higher);
  c.resize(k);
  std::sort(c.begin(), c.end(), higher);
}

// Size of the nucleus of c (probabilities): the shortest best-first prefix whose mass reaches
// `need`, at least 1. Sorted c: a scan. Otherwise a quickselect on mass moves the nucleus to the
// front of c (unordered within) in expected O(n): the prefix [0, lo) is in the nucleus with mass
// `cum` < need, and the candidate that completes it lies in [lo, hi).
size_t nucleus(std::vector<Cand>& c, double need, bool sorted) {
  if (sorted) {
    double cum = 0.0;
    size_t keep = 0;
    while (keep < c.size() && (keep == 0 || cum < need)) cum += c[keep++].first;
    return keep;
  }
  size_t lo = 0, hi = c.size();
  double cum = 0.0;
  while (hi - lo > 1) {
    const size_t mid = lo + (hi - lo) / 2;
    const auto first = c.begin() + static_cast<ptrdiff_t>(lo);
    std::nth_element(first, c.begin() + static_cast<ptrdiff_t>(mid),
                     c.begin() + static_cast<ptrdiff_t>(hi), higher);
    double mass = 0.0;
    for (size_t i = lo; i < mid; ++i) mass += c[i].first;
    if (cum + mass >= need) {
      hi = mid;
    } else {
      cum += mass;
      lo = mid;
    }
  }
  return lo + 1;
}

// Inverse CDF of the candidates (unnormalised p) at u: the first whose running mass exceeds
// u·total; candidates with p = 0 are skipped, so rounding never lands on one.
int32_t inverse_cdf(const std::vector<Cand>& c, double u) {
  double total = 0.0;
  for (const auto& x : c) total += x.first;
  const double target = u * total;
  double cum = 0.0;
  int32_t last = -1;
  for (const auto& x : c) {
    if (x.first <= 0.0f) continue;  // underflowed: never drawn, not even by rounding
    cum += x.first;
    last = x.second;
    if (cum > target) return x.second;
  }
  return last;  // u·total rounded up to the full sum
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

int32_t sample_token(const float* logits, int64_t n, const SamplingParams& params, double u,
                     std::vector<std::pair<float, int32_t>>& scratch) {
  KILN_CHECK(n >= 1);
  if (is_greedy(params)) return argmax(logits, n);
  float mx = kNegInf;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, logits[i]);  // skips NaN
  if (!(mx > kNegInf)) return -1;
  if (std::isinf(mx)) return argmax(logits, n);  // +∞: every temperature's limit
  auto& c = scratch;
  c.clear();
  for (int64_t i = 0; i < n; ++i)
    if (logits[i] > kNegInf) c.emplace_back(logits[i], static_cast<int32_t>(i));
  bool sorted = false;
  const auto k = static_cast<size_t>(std::max(params.top_k, 0));
  if (k > 0 && k < c.size()) {  // on logits, before exp: only k exponentials
    keep_top_k(c, k);
    sorted = true;
  }
  const float inv_t = 1.0f / params.temperature;
  double total = 0.0;
  for (auto& x : c) total += (x.first = std::exp((x.first - mx) * inv_t));  // the max is 1
  if (params.top_p < 1.0f) c.resize(nucleus(c, double(params.top_p) * total, sorted));
  if (params.min_p > 0.0f) {  // relative to the max probability, exp(0) = 1, always kept
    const float cut = std::min(params.min_p, 1.0f);
    std::erase_if(c, [&](const Cand& x) { return x.first < cut; });
  }
  return inverse_cdf(c, u);
}

}  // namespace kiln::cpu
