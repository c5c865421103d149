// Feed-forward blocks (kimi-linear.md §5): the dense SwiGLU MLP and the sigmoid-routed MoE with a
// shared expert. Experts run grouped: the tokens routed to one expert are gathered and multiplied
// together, so each expert's weights are read once per step.
#include <algorithm>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/moe.h"
#include "shard/blocks.h"

namespace kiln {

void mlp_forward(const MlpWeights& w, cpu::ThreadPool& pool, Workspace& ws, const float* x,
                 int64_t n, float* out) {
  const int64_t F = w.gate.rows, D = w.gate.cols;
  float* g = ws.get(Workspace::kI, n * F);
  float* u = ws.get(Workspace::kJ, n * F);
  cpu::matmul(pool, w.gate, x, D, n, g, F);
  cpu::matmul(pool, w.up, x, D, n, u, F);
  cpu::silu_mul(g, u, n * F, g);
  cpu::matmul(pool, w.down, g, F, n, out, D);
}

void moe_forward(const ModelConfig& c, const MoeWeights& w, const BatchContext& b, const float* x,
                 float* out) {
  const int64_t T = b.n_tokens, D = c.hidden_size, E = c.num_experts;
  const int k = static_cast<int>(c.experts_per_token);
  Workspace& ws = b.ws;
  float* logits = ws.get(Workspace::kA, T * E);
  float* weights = ws.get(Workspace::kB, T * k);
  float* xe = ws.get(Workspace::kC, T * D);   // gathered rows of one expert
  float* ye = ws.get(Workspace::kD, T * D);   // that expert's outputs
  std::vector<int32_t>& ids = ws.ints(0);
  std::vector<int32_t>& order = ws.ints(1);   // (token, slot) pairs sorted by expert
  std::vector<int32_t>& starts = ws.ints(2);  // [E+1] offsets into order
  ids.resize(static_cast<size_t>(T * k));
  order.resize(static_cast<size_t>(T * k));
  starts.assign(static_cast<size_t>(E + 1), 0);

  cpu::matmul(b.pool, w.router, x, D, T, logits, E);
  cpu::moe_route(logits, T, E, w.bias.empty() ? nullptr : w.bias.data(), k, c.moe_renormalize,
                 c.routed_scaling_factor, ids.data(), weights);
  // Counting sort of the T·k assignments by expert.
  for (int32_t e : ids) ++starts[e + 1];
  for (int64_t e = 0; e < E; ++e) starts[e + 1] += starts[e];
  {
    std::vector<int32_t>& fill = ws.ints(3);
    fill.assign(starts.begin(), starts.end() - 1);
    for (int64_t i = 0; i < T * k; ++i) order[fill[ids[i]]++] = static_cast<int32_t>(i);
  }

  if (w.has_shared) {
    mlp_forward(w.shared, b.pool, ws, x, T, out);
  } else {
    std::fill_n(out, T * D, 0.0f);
  }
  for (int64_t e = 0; e < E; ++e) {
    const int64_t n = starts[e + 1] - starts[e];
    if (n == 0) continue;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t t = order[starts[e] + j] / k;
      std::copy_n(x + t * D, D, xe + j * D);
    }
    mlp_forward(w.experts[e], b.pool, ws, xe, n, ye);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t a = order[starts[e] + j];
      cpu::axpy(weights[a], ye + j * D, D, out + (a / k) * D);
    }
  }
}

}  // namespace kiln
