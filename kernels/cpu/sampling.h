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

struct SamplingParams {
  float temperature = 1.0f;  // 0 → greedy
  int32_t top_k = 0;         // 0 → off
  float top_p = 1.0f;        // 1 → off
  float min_p = 0.0f;        // 0 → off
};

// Samples one token from logits: temperature, then top-k, top-p (nucleus), min-p filters, then
// inverse-CDF sampling with `u` uniform in [0, 1). scratch is reused across calls.
int32_t sample_token(const float* logits, int64_t n, const SamplingParams& params, float u,
                     std::vector<std::pair<float, int32_t>>& scratch);

}  // namespace kiln::cpu
