// Sampler: per-request token choice from a row of logits (greedy, temperature, top-k, top-p,
// min-p) with its own seeded generator, so the same seed and request give the same tokens.
#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "kernels/cpu/sampling.h"

namespace kiln {

class Sampler {
 public:
  Sampler(const cpu::SamplingParams& params, uint64_t seed) : params_(params), rng_(seed) {}
  int32_t sample(const float* logits, int64_t vocab);
  const cpu::SamplingParams& params() const { return params_; }

 private:
  cpu::SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> scratch_;
};

}  // namespace kiln
