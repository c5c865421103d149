#include "cluster/engine/sampler.h"

namespace kiln {

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  if (params_.temperature <= 0.0f) return cpu::argmax(logits, vocab);
  // 53 random bits → u in [0, 1).
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  return cpu::sample_token(logits, vocab, params_, static_cast<float>(u), scratch_);
}

}  // namespace kiln
