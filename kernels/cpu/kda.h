// Kimi Delta Attention core for one sequence: gate, recurrent step and the chunked (WY/UT) form.
// Layouts: q, k, g: [T][H][K]; v, o: [T][H][V]; beta: [T][H]; state: [H][K][V] fp32 (key-major:
// row d of a head's state is key channel d, so the decay scales rows).
// q must already be L2-normalised and scaled by K^-1/2, k L2-normalised.
#pragma once

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace kiln::cpu {

// In place: f[t][h*K+d] ← a_neg[h] · softplus(f[t][h*K+d] + dt_bias[h*K+d]) (log decay, ≤ 0).
// a_neg[h] = −exp(A_log[h]). softplus uses the linear branch above 20.
void kda_gate(float* f, int64_t T, int64_t H, int64_t K, const float* a_neg, const float* dt_bias);

// The exact recurrence (kimi-linear.md §3.2), token by token:
//   S ← Diag(exp g_t) S;  u = v_t − Sᵀk_t;  S ← S + β_t k_t uᵀ;  o_t = Sᵀ q_t.
void kda_recurrent(ThreadPool& pool, const float* q, const float* k, const float* v,
                   const float* g, const float* beta, int64_t T, int64_t H, int64_t K, int64_t V,
                   float* state, float* o);

// The same result computed chunk by chunk (§3.3) with chunk size `chunk` (e.g. 16 or 64); the
// tail chunk may be short. Exponents are always of differences G_r − G_s ≤ 0 (§8.2).
void kda_chunked(ThreadPool& pool, const float* q, const float* k, const float* v, const float* g,
                 const float* beta, int64_t T, int64_t H, int64_t K, int64_t V, int64_t chunk,
                 float* state, float* o);

}  // namespace kiln::cpu
