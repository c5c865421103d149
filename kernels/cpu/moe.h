// MoE routing (sigmoid scores, selection bias, top-k, renormalise, scale).
#pragma once

#include <cstdint>

namespace kiln::cpu {

// For each token t: p = σ(logits[t]); choose the k experts with the largest p + bias (bias may be
// null); weights = p of the chosen experts, divided by their sum when renormalize, times scale.
// ids/weights: [T][k], ordered by descending selection score.
void moe_route(const float* logits, int64_t T, int64_t n_experts, const float* bias, int k,
               bool renormalize, float scale, int32_t* ids, float* weights);

}  // namespace kiln::cpu
