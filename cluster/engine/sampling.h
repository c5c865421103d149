// Per-sequence token choice for the server: penalties, logit bias, banned tokens, then the
// temperature / top-k / top-p / min-p sampler with the sequence's own seeded generator, so the same
// seed and request give the same tokens alone or in any batch. Also log-probabilities and the
// stop-string matcher.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cluster/engine/request.h"
#include "kernels/cpu/sampling.h"

namespace kiln::serve {

// Not thread-safe: one per sequence, used by the engine thread only.
class SequenceSampler {
 public:
  // vocab: logits row length. seed: the sequence's seed (the request seed, or drawn, plus the
  // choice index so n > 1 choices differ).
  SequenceSampler(const SamplingOptions& options, uint64_t seed, int64_t vocab);

  // Chooses the next token from `logits` [vocab] (the model's raw row, modified in place as
  // scratch). Order (as vLLM): repetition penalty over prompt ∪ generated tokens (logit > 0
  // divided by it, < 0 multiplied, each token once), frequency and presence penalties over
  // generated tokens (logit −= f·count + p·[count > 0]), logit_bias added, `banned` ids set to −∞,
  // then cpu::sample_token: greedy (temperature < cpu::kGreedyTemperature, as vLLM: argmax,
  // lowest id on ties) or temperature → top-k → top-p → min-p → draw with u = 53 bits of the
  // sequence's generator (one draw per non-greedy call). The generated tokens are the ones passed
  // to accept(), which the caller must do for every chosen token. Ids outside [0, vocab) in
  // prompt, banned or logit_bias are ignored. If no token is left with a logit above −∞, returns
  // the argmax of the raw row (always a valid id).
  // O(vocab + |prompt| + k log k) per call; allocates nothing once warm.
  int32_t sample(float* logits, std::span<const int32_t> prompt, std::span<const int32_t> banned);
  // Records a generated token (for the repetition, presence and frequency penalties).
  void accept(int32_t token);

 private:
  void apply_penalties(float* logits, std::span<const int32_t> prompt);

  SamplingOptions options_;
  cpu::SamplingParams params_;  // the filters of options_, for cpu::sample_token
  int64_t vocab_;
  std::mt19937_64 rng_;
  std::unordered_map<int32_t, int32_t> counts_;     // generated token → times
  std::vector<std::pair<float, int32_t>> scratch_;  // [≤ vocab] candidates (logit, then p; id)
  std::vector<uint8_t> seen_;  // [vocab] repetition-penalty mask, all zero between calls
};

// Natural-log softmax of the raw row [vocab] at `token` (in [0, vocab)), and the top_k (clamped
// to [0, min(20, vocab)]) best tokens with theirs, best first (ties: lower id first). Computed in
// double with the max subtracted; a row that is all −∞ counts as uniform. Does not modify logits.
TokenLogprob token_logprob(const float* logits, int64_t vocab, int32_t token, int top_k);

// Finds stop strings in streamed text. push() takes each new piece of (UTF-8-complete) text and
// returns what can be emitted now: text that cannot be the start of a stop string is released;
// a tail that is a proper prefix of some stop string is held back until it is decided. When a stop
// string completes (possibly spanning many pushes), `stopped` is set and `emit` ends just before
// it; later pushes return nothing (with `stopped` set). When the same push completes several
// stop strings, the one starting earliest wins. Empty stop strings are ignored. Plain
// substring search, never a regex from user input. Not thread-safe.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  struct Result {
    std::string emit;
    bool stopped = false;
  };
  Result push(std::string_view text);
  // End of generation without a stop: the held-back text, which is then cleared (empty after a
  // stop).
  std::string flush();
  bool empty() const { return stops_.empty(); }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace kiln::serve
