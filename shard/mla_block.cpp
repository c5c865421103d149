// MLA block (kimi-linear.md §4), NoPE, absorbed form for prefill and decode: the latent
// [c | k_pe] of every token goes to its slot's latent pages; queries are absorbed through W_UKᵀ,
// attention is MQA over the latent rows, and W_UV maps the attended latent back per head.
#include <cmath>

#include "shard/blocks.h"

namespace kiln {

void mla_forward(const ModelConfig& c, const MlaWeights& w, int64_t mla_index,
                 const BlockContext& b, const float* x, float* out) {
  const int64_t T = b.n_tokens(), D = c.hidden_size, H = c.mla_num_heads;
  const int64_t N = c.qk_nope_head_dim, P = c.qk_rope_head_dim, R = c.kv_lora_rank;
  const int64_t V = c.v_head_dim, L = R + P;
  Backend& be = b.be;
  float* q = be.buffer(Buf::kMlaQ);            // [T][H][N+P]
  float* kv = be.buffer(Buf::kMlaLatent);      // [T][R+P]
  float* qa = be.buffer(Buf::kMlaAbsorbed);    // absorbed queries [T][H][R+P]
  float* ol = be.buffer(Buf::kMlaAttended);    // attended latent [T][H][R]
  float* ov = be.buffer(Buf::kMlaHeads);       // per-head outputs [T][H][V]

  be.matmul(w.q, x, D, q, H * (N + P));
  be.matmul(w.kv_a, x, D, kv, L);
  be.rms_norm(kv, L, w.kv_a_norm, c.kv_a_norm_eps, kv, L);  // the latent c, not k_pe
  be.mla_write_latent(b.state, mla_index, kv, L);
  for (int64_t h = 0; h < H; ++h) {
    be.matmul(w.k_b[static_cast<size_t>(h)], q + h * (N + P), H * (N + P), qa + h * L, H * L);
  }
  be.copy2d(q + N, N + P, qa + R, L, T * H, P);  // q_pe behind each absorbed query
  const float scale = 1.0f / std::sqrt(static_cast<float>(N + P));
  be.mla_attention(b.state, mla_index, qa, H, R, P, scale, ol);
  for (int64_t h = 0; h < H; ++h) {
    be.matmul(w.v_b[static_cast<size_t>(h)], ol + h * R, H * R, ov + h * V, H * V);
  }
  b.dump("mla.latent", kv, T, L);
  b.dump("mla.heads", ov, T, H * V);
  b.row_parallel.forward(be, w.o, ov, H * V, out, T);
}

}  // namespace kiln
