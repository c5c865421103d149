// KDA block (kimi-linear.md §3): projections, short conv + SiLU, L2 norm and q scaling, beta,
// fine-grained decay gate, delta-rule core (recurrent for single tokens, chunked for prefill),
// gated RMSNorm with the sigmoid gate, output projection.
#include "shard/blocks.h"

namespace kiln {

void kda_forward(const ModelConfig& c, const KdaWeights& w, int64_t kda_index,
                 const BlockContext& b, const float* x, float* out) {
  const int64_t T = b.n_tokens(), D = c.hidden_size, H = c.kda_num_heads, K = c.kda_head_dim;
  const int64_t C = H * K, r = c.kda_gate_rank;
  Backend& be = b.be;
  float* proj = be.buffer(Buf::kKdaProj);  // q̂ k̂ v̂ side by side [T][3C]
  float* qkv = be.buffer(Buf::kKdaConv);   // conv outputs likewise
  float* low = be.buffer(Buf::kKdaLow);
  float* gate = be.buffer(Buf::kKdaGate);
  float* z = be.buffer(Buf::kKdaZ);
  float* beta = be.buffer(Buf::kKdaBeta);
  float* o = be.buffer(Buf::kKdaCore);

  be.matmul(w.q, x, D, proj, 3 * C);
  be.matmul(w.k, x, D, proj + C, 3 * C);
  be.matmul(w.v, x, D, proj + 2 * C, 3 * C);
  be.matmul(w.f_a, x, D, low, r);
  be.matmul(w.f_b, low, r, gate, C);
  be.matmul(w.g_a, x, D, low, r);
  be.matmul(w.g_b, low, r, z, C);
  be.matmul(w.b, x, D, beta, H);
  const FloatView* conv_w[3] = {&w.conv_q, &w.conv_k, &w.conv_v};
  for (int which = 0; which < 3; ++which) {
    be.causal_conv(b.state, kda_index, which, proj, 3 * C, C, *conv_w[which], qkv);
  }
  // The projections are consumed: contiguous q, k, v [T][C] each go there.
  float* q = proj;
  float* k = proj + T * C;
  float* v = proj + 2 * T * C;
  be.kda_prepare(qkv, H, K, w.a_neg, w.dt_bias, q, k, v, gate, beta);
  b.dump("kda.q", q, T, C);
  b.dump("kda.k", k, T, C);
  b.dump("kda.v", v, T, C);
  b.dump("kda.g", gate, T, C);
  b.dump("kda.beta", beta, T, H);
  be.kda_core(b.state, kda_index, q, k, v, gate, beta, H, K, o);
  b.dump("kda.core", o, T, C);
  be.gated_rms_norm_sigmoid(o, z, w.o_norm, T * H, K, c.rms_norm_eps, o);
  b.row_parallel.forward(be, w.o, o, C, out, T);
}

}  // namespace kiln
