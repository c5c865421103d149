// SequenceSampler, token_logprob and StopMatcher (contracts in sampling.h). The filters and the
// draw are cpu::sample_token's; this file adds what is per sequence (penalties, bias, banned ids,
// the seeded generator, the fallback).
#include "cluster/engine/sampling.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include "kernels/base/check.h"
#include "kernels/cpu/sampling.h"

namespace kiln::serve {
namespace {

using Cand = std::pair<float, int32_t>;  // (logit, token id)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kMaxTopLogprobs = 20;

// Larger value first, lower id on ties.
bool higher(const Cand& a, const Cand& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

bool in_vocab(int32_t token, int64_t vocab) { return token >= 0 && token < vocab; }

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
    : options_(options),
      params_{options.temperature, std::max(options.top_k, 0), options.top_p, options.min_p},
      vocab_(vocab),
      rng_(seed) {
  KILN_CHECK(vocab >= 1);
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
  // One draw per non-greedy call: 53 bits → u in [0, 1).
  const double u = cpu::is_greedy(params_) ? 0.0 : static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  int32_t token = cpu::sample_token(logits, vocab_, params_, u, scratch_);
  if (token < 0 || !(logits[token] > kNegInf))
    token = raw_best >= 0 ? raw_best : cpu::argmax(logits, vocab_);
  return token;
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
