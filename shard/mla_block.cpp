// MLA block (kimi-linear.md §4), NoPE, absorbed form for prefill and decode: the latent
// [c | k_pe] of every token goes to the cache; queries are absorbed through W_UKᵀ, attention is
// MQA over the latent rows, and W_UV maps the attended latent back per head.
#include <cmath>

#include "kernels/base/check.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/mla.h"
#include "kernels/cpu/norm.h"
#include "shard/blocks.h"

namespace kiln {

void mla_forward(const ModelConfig& c, const MlaWeights& w, int64_t mla_index,
                 const BatchContext& b, const float* x, float* out) {
  const int64_t T = b.n_tokens, D = c.hidden_size, H = c.mla_num_heads;
  const int64_t N = c.qk_nope_head_dim, P = c.qk_rope_head_dim, R = c.kv_lora_rank;
  const int64_t V = c.v_head_dim, L = R + P;
  cpu::ThreadPool& pool = b.pool;
  Workspace& ws = b.ws;
  float* q = ws.get(Workspace::kA, T * H * (N + P));   // [T][H][N+P]
  float* kv = ws.get(Workspace::kB, T * L);            // [T][R+P]
  float* qa = ws.get(Workspace::kC, T * H * L);        // absorbed queries [T][H][R+P]
  float* ol = ws.get(Workspace::kD, T * H * R);        // attended latent [T][H][R]
  float* ov = ws.get(Workspace::kE, T * H * V);        // per-head outputs [T][H][V]

  cpu::matmul(pool, w.q, x, D, T, q, H * (N + P));
  cpu::matmul(pool, w.kv_a, x, D, T, kv, L);
  for (int64_t t = 0; t < T; ++t) {
    cpu::rms_norm(kv + t * L, w.kv_a_norm.data(), 1, R, c.kv_a_norm_eps, kv + t * L);
  }
  for (const SeqSpan& s : b.seqs) {
    KILN_CHECK(s.pos0 + s.n <= b.state.max_context());
    float* cache = b.state.latent(s.slot, mla_index);
    std::copy_n(kv + s.begin * L, s.n * L, cache + s.pos0 * L);
  }
  for (int64_t h = 0; h < H; ++h) {
    cpu::matmul(pool, w.k_b[h], q + h * (N + P), H * (N + P), T, qa + h * L, H * L);
  }
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      std::copy_n(q + (t * H + h) * (N + P) + N, P, qa + (t * H + h) * L + R);
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(N + P));
  for (const SeqSpan& s : b.seqs) {
    cpu::mla_attention_absorbed(pool, qa + s.begin * H * L, s.n, H, R, P,
                                b.state.latent(s.slot, mla_index), s.pos0, scale,
                                ol + s.begin * H * R);
  }
  for (int64_t h = 0; h < H; ++h) {
    cpu::matmul(pool, w.v_b[h], ol + h * R, H * R, T, ov + h * V, H * V);
  }
  b.dump("mla.latent", kv, T, L);
  b.dump("mla.heads", ov, T, H * V);
  cpu::matmul(pool, w.o, ov, H * V, T, out, D);
}

}  // namespace kiln
