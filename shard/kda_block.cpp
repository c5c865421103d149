// KDA block (kimi-linear.md §3): projections, short conv + SiLU, L2 norm and q scaling, beta,
// fine-grained decay gate, delta-rule core (recurrent for single tokens, chunked for prefill),
// gated RMSNorm with the sigmoid gate, output projection.
#include <cmath>

#include "kernels/cpu/conv.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/kda.h"
#include "kernels/cpu/norm.h"
#include "shard/blocks.h"

namespace kiln {

void kda_forward(const ModelConfig& c, const KdaWeights& w, int64_t kda_index,
                 const BatchContext& b, const float* x, float* out) {
  const int64_t T = b.n_tokens, D = c.hidden_size, H = c.kda_num_heads, K = c.kda_head_dim;
  const int64_t C = H * K, r = c.kda_gate_rank, taps = c.kda_conv_kernel;
  cpu::ThreadPool& pool = b.pool;
  Workspace& ws = b.ws;
  // Pre-conv projections q̂ k̂ v̂ side by side: [T][3C]; conv outputs likewise.
  float* proj = ws.get(Workspace::kA, T * 3 * C);
  float* qkv = ws.get(Workspace::kB, T * 3 * C);
  float* low = ws.get(Workspace::kC, T * r);         // low-rank activations (f_a, then g_a)
  float* gate = ws.get(Workspace::kD, T * C);        // log decay g
  float* z = ws.get(Workspace::kE, T * C);           // output gate logits
  float* beta = ws.get(Workspace::kF, T * H);
  float* o = ws.get(Workspace::kG, T * C);           // core output, then gated-normed

  cpu::matmul(pool, w.q, x, D, T, proj, 3 * C, b.n_decode);
  cpu::matmul(pool, w.k, x, D, T, proj + C, 3 * C, b.n_decode);
  cpu::matmul(pool, w.v, x, D, T, proj + 2 * C, 3 * C, b.n_decode);
  cpu::matmul(pool, w.f_a, x, D, T, low, r, b.n_decode);
  cpu::matmul(pool, w.f_b, low, r, T, gate, C, b.n_decode);
  cpu::matmul(pool, w.g_a, x, D, T, low, r, b.n_decode);
  cpu::matmul(pool, w.g_b, low, r, T, z, C, b.n_decode);
  cpu::matmul(pool, w.b, x, D, T, beta, H, b.n_decode);
  cpu::sigmoid_inplace(beta, T * H);
  cpu::kda_gate(gate, T, H, K, w.a_neg.data(), w.dt_bias.data());

  const FloatView* conv_w[3] = {&w.conv_q, &w.conv_k, &w.conv_v};
  for (const SeqSpan& s : b.seqs) {
    for (int which = 0; which < 3; ++which) {
      cpu::causal_conv1d_silu(proj + s.begin * 3 * C + which * C, 3 * C, s.n, C,
                              conv_w[which]->data(), static_cast<int>(taps),
                              b.state.conv(s.slot, kda_index, which),
                              qkv + s.begin * 3 * C + which * C, 3 * C);
    }
  }
  // Split the interleaved conv output into contiguous q, k, v ([T][C] each) for the core.
  float* q = proj;
  float* k = proj + T * C;
  float* v = proj + 2 * T * C;
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(qkv + t * 3 * C, C, q + t * C);
    std::copy_n(qkv + t * 3 * C + C, C, k + t * C);
    std::copy_n(qkv + t * 3 * C + 2 * C, C, v + t * C);
  }
  cpu::l2_norm(q, T * H, K, 1e-6f, 1.0f / std::sqrt(static_cast<float>(K)));
  cpu::l2_norm(k, T * H, K, 1e-6f, 1.0f);
  b.dump("kda.q", q, T, C);
  b.dump("kda.k", k, T, C);
  b.dump("kda.v", v, T, C);
  b.dump("kda.g", gate, T, C);
  b.dump("kda.beta", beta, T, H);

  for (const SeqSpan& s : b.seqs) {
    const int64_t off = s.begin * C;
    float* state = b.state.recurrent(s.slot, kda_index);
    if (s.n == 1) {
      cpu::kda_recurrent(pool, q + off, k + off, v + off, gate + off, beta + s.begin * H, s.n, H,
                         K, K, state, o + off);
    } else {
      cpu::kda_chunked(pool, q + off, k + off, v + off, gate + off, beta + s.begin * H, s.n, H, K,
                       K, b.kda_chunk, state, o + off);
    }
  }
  b.dump("kda.core", o, T, C);
  cpu::gated_rms_norm_sigmoid(o, z, w.o_norm.data(), T * H, K, c.rms_norm_eps, o);
  cpu::matmul(pool, w.o, o, C, T, out, D, b.n_decode);
}

}  // namespace kiln
