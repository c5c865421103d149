// MLA attention in the absorbed (MQA-over-latent) form, for one sequence, no RoPE.
#pragma once

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace kiln::cpu {

// q: [T][H][R+P], per head [q̄ (R) | q_pe (P)] where q̄ = W_UKᵀ q_nope.
// cache: [n_ctx][R+P] rows [c (R) | k_pe (P)] for positions 0.. (rows beyond pos0+T−1 unused).
// Token t sits at position pos0 + t and attends causally to positions [0, pos0 + t].
// out[t][h] = Σ_τ softmax_τ(scale · q[t][h]·cache[τ]) · cache[τ][0:R]   → out: [T][H][R].
void mla_attention_absorbed(ThreadPool& pool, const float* q, int64_t T, int64_t H, int64_t R,
                            int64_t P, const float* cache, int64_t pos0, float scale, float* out);

}  // namespace kiln::cpu
