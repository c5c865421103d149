// Feed-forward blocks (kimi-linear.md §5): the dense SwiGLU MLP and the sigmoid-routed MoE with a
// shared expert. Routed experts run grouped (Backend::moe_experts): each expert's weights are
// read once per step for all the tokens routed to it.
#include "shard/blocks.h"

namespace kiln {
namespace {

// SwiGLU over the batch: out = down(SiLU(gate x) ⊙ up x), this rank's partial sum when `down` is
// row-parallel (reduce: sum it over the TP group here).
void mlp(const MlpWeights& w, const BlockContext& b, const float* x, float* out, bool reduce) {
  Backend& be = b.be;
  const int64_t T = b.n_tokens(), F = w.gate.rows, D = w.gate.cols;
  float* g = be.buffer(Buf::kFfnGate);
  float* u = be.buffer(Buf::kFfnUp);
  be.matmul(w.gate, x, D, g, F);
  be.matmul(w.up, x, D, u, F);
  be.silu_mul(g, u, T * F, g);
  if (reduce) {
    b.row_parallel.forward(be, w.down, g, F, out, T);
  } else {
    be.matmul(w.down, g, F, out, D);
  }
}

}  // namespace

void ffn_forward(const ModelConfig& c, const LayerWeights& w, const BlockContext& b,
                 const float* x, float* out) {
  if (!c.is_moe(b.layer)) {
    mlp(w.dense, b, x, out, /*reduce=*/true);
    return;
  }
  Backend& be = b.be;
  const MoeWeights& m = w.moe;
  const int64_t T = b.n_tokens(), D = c.hidden_size;
  float* logits = be.buffer(Buf::kMoeLogits);
  be.matmul(m.router, x, D, logits, c.num_experts);
  // Routed and shared experts add up locally: one reduction over the TP group for both.
  if (m.has_shared) {
    mlp(m.shared, b, x, out, /*reduce=*/false);
  } else {
    be.fill_zero(out, T * D);
  }
  be.moe_experts(m, {c.num_experts, static_cast<int>(c.experts_per_token), c.moe_renormalize,
                     c.routed_scaling_factor},
                 logits, x, out);
  b.row_parallel.reduce(out, T * D);
}

}  // namespace kiln
