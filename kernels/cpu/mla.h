// MLA attention in the absorbed (MQA-over-latent) form, for one sequence, no RoPE.
#pragma once

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace kiln::cpu {

// q: [T][H][R+P], per head [q̄ (R) | q_pe (P)] where q̄ = W_UKᵀ q_nope.
// pages: the latent cache as pages of page_tokens rows [c (R) | k_pe (P)], in position order:
// position τ's row is pages[τ / page_tokens] + (τ % page_tokens)·(R+P). At least
// ceil((pos0 + T) / page_tokens) pages; rows beyond position pos0+T−1 are unused.
// Token t sits at position pos0 + t and attends causally to positions [0, pos0 + t].
// out[t][h] = Σ_τ softmax_τ(scale · q[t][h]·row(τ)) · row(τ)[0:R]   → out: [T][H][R].
// Each (token, head) sums in position order whatever the page size and the other tokens.
void mla_attention_absorbed(ThreadPool& pool, const float* q, int64_t T, int64_t H, int64_t R,
                            int64_t P, const float* const* pages, int64_t page_tokens,
                            int64_t pos0, float scale, float* out);

}  // namespace kiln::cpu
