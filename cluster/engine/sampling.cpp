// SequenceSampler, token_logprob and StopMatcher (contracts in sampling.h). The draw reuses
// cpu::argmax but not cpu::sample_token, which cannot serve here: it converts u to float (u near 1
// rounds to 1.0f and then returns its last candidate, which may be a banned −∞ id), turns an
// all −∞ row into NaN, and sorts the whole vocabulary for top-p. The filters are the same
// (temperature → top-k → top-p → min-p, ties to the lower id), on candidates with a finite logit.
#include "cluster/engine/sampling.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "kernels/base/check.h"
#include "kernels/cpu/sampling.h"

namespace kiln::serve {
namespace {

using Cand = std::pair<float, int32_t>;  // (logit or probability, token id)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kGreedyBelow = 1e-5f;  // vLLM's _SAMPLING_EPS: 1/temperature would overflow soon
constexpr int kMaxTopLogprobs = 20;

// Larger value first, lower id on ties: a strict total order, so every selection below picks the
// same set whether it sorts or partitions.
bool higher(const Cand& a, const Cand& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

bool in_vocab(int32_t token, int64_t vocab) { return token >= 0 && token < vocab; }

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

// Length of the longest tail of `text` that is a proper prefix of some stop string.
size_t prefix_tail(std::string_view text, const std::vector<std::string>& stops) {
  size_t best = 0;
  for (const auto& s : stops)
    for (size_t len = std::min(s.size() - 1, text.size()); len > best; --len)
      if (text.substr(text.size() - len) == std::string_view(s).substr(0, len)) {
        best = len;
        break;
      }
  return best;
}

}  // namespace

SequenceSampler::SequenceSampler(const SamplingOptions& options, uint64_t seed, int64_t vocab)
    : options_(options), vocab_(vocab), rng_(seed) {
  KILN_CHECK(vocab >= 1);
  options_.top_k = std::max(options_.top_k, 0);
}

void SequenceSampler::accept(int32_t token) { ++counts_[token]; }

void SequenceSampler::apply_penalties(float* logits, std::span<const int32_t> prompt) {
  const float rep = options_.repetition_penalty;
  if (rep != 1.0f) {
    if (seen_.empty()) seen_.assign(static_cast<size_t>(vocab_), 0);
    auto penalise = [&](int32_t t) {
      if (!in_vocab(t, vocab_) || seen_[size_t(t)]) return;
      seen_[size_t(t)] = 1;
      float& x = logits[t];
      x = x > 0.0f ? x / rep : x * rep;
    };
    for (int32_t t : prompt) penalise(t);
    for (const auto& [t, n] : counts_) penalise(t);
    // Clear only what was set: O(|prompt| + distinct generated), not O(vocab).
    for (int32_t t : prompt)
      if (in_vocab(t, vocab_)) seen_[size_t(t)] = 0;
    for (const auto& [t, n] : counts_)
      if (in_vocab(t, vocab_)) seen_[size_t(t)] = 0;
  }
  const float freq = options_.frequency_penalty, pres = options_.presence_penalty;
  if (freq != 0.0f || pres != 0.0f)
    for (const auto& [t, n] : counts_)  // every entry has n ≥ 1
      if (in_vocab(t, vocab_)) logits[t] -= freq * static_cast<float>(n) + pres;
  for (const auto& [t, bias] : options_.logit_bias)
    if (in_vocab(t, vocab_)) logits[t] += bias;
}

int32_t SequenceSampler::sample(float* logits, std::span<const int32_t> prompt,
                                std::span<const int32_t> banned) {
  // The fallback is the raw row's argmax. Penalties and bias are finite changes, so without
  // banned ids a row left with nothing above −∞ was all −∞ raw and its argmax (0) is unchanged;
  // with banned ids it must be taken before they are overwritten.
  const int32_t raw_best = banned.empty() ? -1 : cpu::argmax(logits, vocab_);
  apply_penalties(logits, prompt);
  for (int32_t t : banned)
    if (in_vocab(t, vocab_)) logits[t] = kNegInf;
  int32_t token;
  if (!(options_.temperature >= kGreedyBelow)) {
    token = cpu::argmax(logits, vocab_);
  } else {
    const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;  // 53 bits → [0, 1)
    token = draw(logits, u);
  }
  if (token < 0 || !(logits[token] > kNegInf))
    token = raw_best >= 0 ? raw_best : cpu::argmax(logits, vocab_);
  return token;
}

int32_t SequenceSampler::draw(const float* logits, double u) {
  float mx = kNegInf;
  for (int64_t i = 0; i < vocab_; ++i) mx = std::max(mx, logits[i]);  // skips NaN
  if (!(mx > kNegInf)) return -1;
  if (std::isinf(mx)) return cpu::argmax(logits, vocab_);  // +∞: every temperature's limit
  auto& c = scratch_;
  c.clear();
  for (int64_t i = 0; i < vocab_; ++i)
    if (logits[i] > kNegInf) c.emplace_back(logits[i], static_cast<int32_t>(i));
  bool sorted = false;
  const auto k = static_cast<size_t>(options_.top_k);
  if (k > 0 && k < c.size()) {  // on logits, before exp: only k exponentials
    keep_top_k(c, k);
    sorted = true;
  }
  const float inv_t = 1.0f / options_.temperature;
  double total = 0.0;
  for (auto& x : c) total += (x.first = std::exp((x.first - mx) * inv_t));  // the max is 1
  if (options_.top_p < 1.0f) {
    c.resize(nucleus(c, double(options_.top_p) * total, sorted));
  }
  if (options_.min_p > 0.0f) {  // relative to the max probability, exp(0) = 1, always kept
    const float cut = std::min(options_.min_p, 1.0f);
    std::erase_if(c, [&](const Cand& x) { return x.first < cut; });
  }
  total = 0.0;
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

TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t token, int top_k) {
  KILN_CHECK(vocab >= 1 && in_vocab(token, vocab));
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, double(logits[i]));
  // Shifted logit: the max (even ±∞, so an all −∞ row is uniform) maps to exactly 0.
  auto shifted = [&](int64_t i) { return logits[i] == mx ? 0.0 : double(logits[i]) - mx; };
  double z = 0.0;
  for (int64_t i = 0; i < vocab; ++i) z += std::exp(shifted(i));
  const double log_z = std::log(z);

  TokenLogprob out;
  out.token = token;
  out.logprob = static_cast<float>(shifted(token) - log_z);
  // Top k by a bounded insertion sort over one pass: O(vocab) when few values enter the list.
  const auto k =
      static_cast<size_t>(std::clamp<int64_t>(top_k, 0, std::min<int64_t>(kMaxTopLogprobs, vocab)));
  std::array<Cand, kMaxTopLogprobs> best;
  size_t n = 0;
  for (int64_t i = 0; i < vocab && k > 0; ++i) {
    const Cand x{logits[i], static_cast<int32_t>(i)};
    if (n == k && !higher(x, best[n - 1])) continue;
    size_t pos = n < k ? n++ : k - 1;
    for (; pos > 0 && higher(x, best[pos - 1]); --pos) best[pos] = best[pos - 1];
    best[pos] = x;
  }
  out.top.reserve(n);
  for (size_t i = 0; i < n; ++i)
    out.top.emplace_back(best[i].second, static_cast<float>(shifted(best[i].second) - log_z));
  return out;
}

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
}

StopMatcher::Result StopMatcher::push(std::string_view text) {
  Result r;
  if (stopped_) {
    r.stopped = true;
    return r;
  }
  if (stops_.empty()) {
    r.emit = text;
    return r;
  }
  // Every stop that ends in `text` starts in held_ + text: held_ is the longest tail that could
  // begin one, and everything before it was released only because it could not.
  held_.append(text);
  size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    r.emit = held_.substr(0, first);
    r.stopped = stopped_ = true;
    held_.clear();
    return r;
  }
  // A held tail starts with a stop string's first byte, a UTF-8 lead byte, so both parts stay
  // UTF-8-complete.
  const size_t release = held_.size() - prefix_tail(held_, stops_);
  r.emit = held_.substr(0, release);
  held_.erase(0, release);
  return r;
}

std::string StopMatcher::flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace kiln::serve
