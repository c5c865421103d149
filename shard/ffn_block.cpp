// Feed-forward blocks (kimi-linear.md §5): the dense SwiGLU MLP and the sigmoid-routed MoE with a
// shared expert. Experts run grouped: the tokens routed to one expert are gathered and multiplied
// together, so each expert's weights are read once per step.
#include <algorithm>
#include <vector>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/moe.h"
#include "shard/blocks.h"

namespace kiln {

void mlp_forward(const MlpWeights& w, cpu::ThreadPool& pool, Workspace& ws, const float* x,
                 int64_t n, int64_t n_decode, float* out) {
  const int64_t F = w.gate.rows, D = w.gate.cols;
  float* g = ws.get(Workspace::kI, n * F);
  float* u = ws.get(Workspace::kJ, n * F);
  cpu::matmul(pool, w.gate, x, D, n, g, F, n_decode);
  cpu::matmul(pool, w.up, x, D, n, u, F, n_decode);
  cpu::silu_mul(g, u, n * F, g);
  cpu::matmul(pool, w.down, g, F, n, out, D, n_decode);
}

void moe_forward(const ModelConfig& c, const MoeWeights& w, const BatchContext& b, const float* x,
                 float* out) {
  const int64_t T = b.n_tokens, D = c.hidden_size, E = c.num_experts;
  const int k = static_cast<int>(c.experts_per_token);
  Workspace& ws = b.ws;
  float* logits = ws.get(Workspace::kA, T * E);
  float* weights = ws.get(Workspace::kB, T * k);
  float* ya = ws.get(Workspace::kC, T * k * D);  // routed outputs, one row per assignment
  std::vector<int32_t>& ids = ws.ints(0);
  std::vector<int32_t>& order = ws.ints(1);   // assignments (token·k + slot) sorted by expert
  std::vector<int32_t>& starts = ws.ints(2);  // [E+1] offsets into order
  std::vector<int32_t>& active = ws.ints(3);  // experts with at least one assignment
  ids.resize(static_cast<size_t>(T * k));
  order.resize(static_cast<size_t>(T * k));
  starts.assign(static_cast<size_t>(E + 1), 0);

  cpu::matmul(b.pool, w.router, x, D, T, logits, E, b.n_decode);
  cpu::moe_route(logits, T, E, w.bias.empty() ? nullptr : w.bias.data(), k, c.moe_renormalize,
                 c.routed_scaling_factor, ids.data(), weights);
  // Counting sort of the T·k assignments by expert (active doubles as the fill cursor).
  for (int32_t e : ids) ++starts[e + 1];
  for (int64_t e = 0; e < E; ++e) starts[e + 1] += starts[e];
  active.assign(starts.begin(), starts.end() - 1);
  for (int64_t i = 0; i < T * k; ++i) order[active[ids[i]]++] = static_cast<int32_t>(i);
  active.clear();
  for (int64_t e = 0; e < E; ++e) {
    if (starts[e + 1] > starts[e]) active.push_back(static_cast<int32_t>(e));
  }

  // Each thread runs whole experts (gather, gate, up, SiLU-mul, down) on its own: one parallel
  // region per layer instead of three small ones per expert, and every expert's weights are
  // still read once per step. A routed output row lands in its assignment's row of ya.
  b.pool.parallel_for(static_cast<int64_t>(active.size()), 1, [&](int64_t a0, int64_t a1) {
    thread_local std::vector<float> xe, g, u, ye;  // grown once, then reused
    for (int64_t i = a0; i < a1; ++i) {
      const int32_t e = active[static_cast<size_t>(i)];
      const MlpWeights& m = w.experts[static_cast<size_t>(e)];
      const int64_t n = starts[e + 1] - starts[e], F = m.gate.rows;
      const int32_t* assigned = order.data() + starts[e];
      // Assignments are in row order, so the expert's decode rows come first.
      const int64_t nd = std::partition_point(assigned, assigned + n, [&](int32_t a) {
                           return a / k < b.n_decode;
                         }) - assigned;
      if (xe.size() < static_cast<size_t>(n * D)) xe.resize(static_cast<size_t>(n * D));
      if (ye.size() < static_cast<size_t>(n * D)) ye.resize(static_cast<size_t>(n * D));
      if (g.size() < static_cast<size_t>(n * F)) {
        g.resize(static_cast<size_t>(n * F));
        u.resize(static_cast<size_t>(n * F));
      }
      for (int64_t j = 0; j < n; ++j) std::copy_n(x + (assigned[j] / k) * D, D, xe.data() + j * D);
      cpu::matmul_serial(b.pool, m.gate, xe.data(), D, n, g.data(), F, nd);
      cpu::matmul_serial(b.pool, m.up, xe.data(), D, n, u.data(), F, nd);
      cpu::silu_mul(g.data(), u.data(), n * F, g.data());
      cpu::matmul_serial(b.pool, m.down, g.data(), F, n, ye.data(), D, nd);
      for (int64_t j = 0; j < n; ++j) std::copy_n(ye.data() + j * D, D, ya + assigned[j] * D);
    }
  });

  if (w.has_shared) {
    mlp_forward(w.shared, b.pool, ws, x, T, b.n_decode, out);
  } else {
    std::fill_n(out, T * D, 0.0f);
  }
  // Weighted sum in expert order, as if the experts had run one after another.
  for (int32_t e : active) {
    for (int32_t i = starts[e]; i < starts[e + 1]; ++i) {
      const int32_t a = order[static_cast<size_t>(i)];
      cpu::axpy(weights[a], ya + static_cast<int64_t>(a) * D, D, out + (a / k) * D);
    }
  }
}

}  // namespace kiln
