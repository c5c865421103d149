// Softmax and sampling helpers over one row of logits.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace kiln::cpu {

// In place, numerically stable softmax over n values.
void softmax(float* x, int64_t n);
// Index of the largest value (lowest index on ties); a NaN ranks below every number, as on the
// GPU (cuda::argmax_rows), so a row with one NaN keeps its true maximum; all NaN gives 0.
int32_t argmax(const float* x, int64_t n);

// Below this temperature sampling is greedy (vLLM's _SAMPLING_EPS: 1/temperature would overflow
// soon after).
inline constexpr float kGreedyTemperature = 1e-5f;

struct SamplingParams {
  float temperature = 1.0f;  // < kGreedyTemperature → greedy
  int32_t top_k = 0;         // ≤ 0 → off
  float top_p = 1.0f;        // 1 → off
  float min_p = 0.0f;        // 0 → off; above 1 counts as 1
};

inline bool is_greedy(const SamplingParams& p) { return !(p.temperature >= kGreedyTemperature); }

// The one token sampler (the server's SequenceSampler draws through it). Greedy parameters: the
// argmax (u unused). Otherwise, over the candidates with a logit above −∞ (NaN never is one):
// top-k on the logits, then p ∝ exp((logit − max) / temperature), top-p (the shortest best-first
// prefix whose mass reaches top_p of the total, at least one), min-p (p ≥ min_p × the max), then
// the inverse CDF at `u` in [0, 1) in double over the candidates in the order the filters leave
// them (token-id order when none ran; the order is fixed for given logits and parameters, and each
// candidate's chance is its renormalised p). A candidate whose p underflowed to 0 is never drawn,
// so u just below 1 gives the last candidate with p > 0. A +∞ max returns the argmax (every
// temperature's limit). Returns −1 when no logit is above −∞ (all −∞ or NaN): the caller decides
// the fallback. scratch is reused across calls; O(n + k log k), expected O(n) for top-p.
int32_t sample_token(const float* logits, int64_t n, const SamplingParams& params, double u,
                     std::vector<std::pair<float, int32_t>>& scratch);

}  // namespace kiln::cpu
