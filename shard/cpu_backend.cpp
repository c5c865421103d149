// The CPU backend: each op is the kernels/cpu call (or the short loop of them) the forward has
// always made, in the same order, so logits stay bit-identical.
#include "shard/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/base/check.h"
#include "kernels/cpu/conv.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/kda.h"
#include "kernels/cpu/mla.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/norm.h"

namespace kiln {

Status CpuBackend::begin(cpu::ThreadPool& pool, StateCache& state, const Batch& batch,
                         int64_t kda_chunk) {
  pool_ = &pool;
  kda_chunk_ = kda_chunk;
  arrange_batch(batch, state, /*decode_first=*/true, rows_);
  T_ = rows_.n_tokens();
  return {};
}

float* CpuBackend::buffer(Buf b) {
  std::vector<float>& v = bufs_[static_cast<int>(b)];
  const int64_t need = workspace_floats(shape_, b, T_);
  if (static_cast<int64_t>(v.size()) < need) v.resize(static_cast<size_t>(need));
  return v.data();
}

void CpuBackend::matmul(const MatrixView& w, const float* x, int64_t x_stride, float* y,
                        int64_t y_stride) {
  cpu::matmul(pool(), w, x, x_stride, T_, y, y_stride, rows_.n_decode);
}

void CpuBackend::rms_norm(const float* x, int64_t x_stride, const FloatView& w, float eps,
                          float* y, int64_t y_stride) {
  const int64_t dim = w.size();
  if (x_stride == dim && y_stride == dim) {
    cpu::rms_norm(x, w.data(), T_, dim, eps, y);
    return;
  }
  for (int64_t t = 0; t < T_; ++t) cpu::rms_norm(x + t * x_stride, w.data(), 1, dim, eps, y + t * y_stride);
}

void CpuBackend::add_rms_norm(float* h, const float* delta, const FloatView& w, float eps,
                              float* x) {
  cpu::add_rms_norm(h, delta, w.data(), T_, w.size(), eps, x);
}

void CpuBackend::gated_rms_norm_sigmoid(const float* o, const float* z, const FloatView& w,
                                        int64_t n_rows, int64_t dim, float eps, float* y) {
  cpu::gated_rms_norm_sigmoid(o, z, w.data(), n_rows, dim, eps, y);
}

void CpuBackend::silu_mul(const float* gate, const float* up, int64_t n, float* out) {
  cpu::silu_mul(gate, up, n, out);
}

void CpuBackend::add(float* y, const float* x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += x[j];
}

void CpuBackend::fill_zero(float* y, int64_t n) { std::fill_n(y, n, 0.0f); }

void CpuBackend::copy2d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride,
                        int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) std::copy_n(src + r * src_stride, cols, dst + r * dst_stride);
}

void CpuBackend::causal_conv(StateCache& state, int64_t kda_index, int which, const float* x,
                             int64_t stride, int64_t C, const FloatView& w, float* y) {
  const int taps = static_cast<int>(w.size() / C);
  for (const SeqSpan& s : rows_.spans) {
    cpu::causal_conv1d_silu(x + s.begin * stride + which * C, stride, s.n, C, w.data(), taps,
                            state.conv(s.slot, kda_index, which),
                            y + s.begin * stride + which * C, stride);
  }
}

void CpuBackend::kda_prepare(const float* qkv, int64_t H, int64_t K, const FloatView& a_neg,
                             const FloatView& dt_bias, float* q, float* k, float* v, float* g,
                             float* beta) {
  const int64_t T = T_, C = H * K;
  cpu::sigmoid_inplace(beta, T * H);
  cpu::kda_gate(g, T, H, K, a_neg.data(), dt_bias.data());
  for (int64_t t = 0; t < T; ++t) {
    std::copy_n(qkv + t * 3 * C, C, q + t * C);
    std::copy_n(qkv + t * 3 * C + C, C, k + t * C);
    std::copy_n(qkv + t * 3 * C + 2 * C, C, v + t * C);
  }
  cpu::l2_norm(q, T * H, K, 1e-6f, 1.0f / std::sqrt(static_cast<float>(K)));
  cpu::l2_norm(k, T * H, K, 1e-6f, 1.0f);
}

void CpuBackend::kda_core(StateCache& state, int64_t kda_index, const float* q, const float* k,
                          const float* v, const float* g, const float* beta, int64_t H,
                          int64_t K, float* o) {
  const int64_t C = H * K;
  for (const SeqSpan& s : rows_.spans) {
    const int64_t off = s.begin * C;
    float* st = state.recurrent(s.slot, kda_index);
    if (s.n == 1) {
      cpu::kda_recurrent(pool(), q + off, k + off, v + off, g + off, beta + s.begin * H, s.n, H,
                         K, K, st, o + off);
    } else {
      cpu::kda_chunked(pool(), q + off, k + off, v + off, g + off, beta + s.begin * H, s.n, H, K,
                       K, kda_chunk_, st, o + off);
    }
  }
}

void CpuBackend::mla_write_latent(StateCache& state, int64_t mla_index, const float* kv,
                                  int64_t L) {
  const int64_t pt = state.page_tokens();
  for (const SeqSpan& s : rows_.spans) {
    const std::vector<int32_t>& table = state.pages(s.slot);
    KILN_CHECK(s.pos0 + s.n <= static_cast<int64_t>(table.size()) * pt);
    const float* src = kv + s.begin * L;
    for (int64_t i = 0; i < s.n;) {
      const int64_t pos = s.pos0 + i, row = pos % pt, run = std::min(s.n - i, pt - row);
      float* page = state.latent_page(table[static_cast<size_t>(pos / pt)], mla_index);
      std::copy_n(src + i * L, run * L, page + row * L);
      i += run;
    }
  }
}

void CpuBackend::mla_attention(StateCache& state, int64_t mla_index, const float* q, int64_t H,
                               int64_t R, int64_t P, float scale, float* out) {
  const int64_t L = R + P, pt = state.page_tokens();
  for (const SeqSpan& s : rows_.spans) {
    const std::vector<int32_t>& table = state.pages(s.slot);
    pages_.resize(static_cast<size_t>((s.pos0 + s.n + pt - 1) / pt));
    for (size_t i = 0; i < pages_.size(); ++i) pages_[i] = state.latent_page(table[i], mla_index);
    cpu::mla_attention_absorbed(pool(), q + s.begin * H * L, s.n, H, R, P, pages_.data(), pt,
                                s.pos0, scale, out + s.begin * H * R);
  }
}

void CpuBackend::moe_experts(const MoeWeights& w, const MoeRouting& r, const float* logits,
                             const float* x, float* out) {
  const int64_t T = T_, D = shape_.shard.hidden_size, E = r.n_experts;
  const int k = r.k;
  float* weights = buffer(Buf::kMoeWeights);
  float* ya = buffer(Buf::kMoeRouted);  // routed outputs, one row per assignment
  int32_t* ids = int_buffer(Buf::kMoeIds);
  int32_t* order = int_buffer(Buf::kMoeOrder);  // assignments (token·k + slot) sorted by expert
  std::vector<int32_t>& starts = expert_starts_;  // [E+1] offsets into order
  std::vector<int32_t>& active = active_experts_;  // experts with at least one assignment
  starts.assign(static_cast<size_t>(E + 1), 0);
  cpu::moe_route(logits, T, E, w.bias.empty() ? nullptr : w.bias.data(), k, r.renormalize,
                 r.scale, ids, weights);
  // Counting sort of the T·k assignments by expert (active doubles as the fill cursor).
  for (int64_t i = 0; i < T * k; ++i) ++starts[ids[i] + 1];
  for (int64_t e = 0; e < E; ++e) starts[e + 1] += starts[e];
  active.assign(starts.begin(), starts.end() - 1);
  for (int64_t i = 0; i < T * k; ++i) order[active[ids[i]]++] = static_cast<int32_t>(i);
  active.clear();
  for (int64_t e = 0; e < E; ++e) {
    if (starts[e + 1] > starts[e]) active.push_back(static_cast<int32_t>(e));
  }
  const int64_t n_decode = rows_.n_decode;
  // Each thread runs whole experts (gather, gate, up, SiLU-mul, down) on its own: one parallel
  // region per layer instead of three small ones per expert, and every expert's weights are
  // still read once per step. A routed output row lands in its assignment's row of ya.
  pool().parallel_for(static_cast<int64_t>(active.size()), 1, [&](int64_t a0, int64_t a1) {
    thread_local std::vector<float> xe, g, u, ye;  // grown once, then reused
    for (int64_t i = a0; i < a1; ++i) {
      const int32_t e = active[static_cast<size_t>(i)];
      const MlpWeights& m = w.experts[static_cast<size_t>(e)];
      const int64_t n = starts[e + 1] - starts[e], F = m.gate.rows;
      const int32_t* assigned = order + starts[e];
      // Assignments are in row order, so the expert's decode rows come first.
      const int64_t nd = std::partition_point(assigned, assigned + n, [&](int32_t a) {
                           return a / k < n_decode;
                         }) - assigned;
      if (xe.size() < static_cast<size_t>(n * D)) xe.resize(static_cast<size_t>(n * D));
      if (ye.size() < static_cast<size_t>(n * D)) ye.resize(static_cast<size_t>(n * D));
      if (g.size() < static_cast<size_t>(n * F)) {
        g.resize(static_cast<size_t>(n * F));
        u.resize(static_cast<size_t>(n * F));
      }
      for (int64_t j = 0; j < n; ++j) std::copy_n(x + (assigned[j] / k) * D, D, xe.data() + j * D);
      cpu::matmul_serial(pool(), m.gate, xe.data(), D, n, g.data(), F, nd);
      cpu::matmul_serial(pool(), m.up, xe.data(), D, n, u.data(), F, nd);
      cpu::silu_mul(g.data(), u.data(), n * F, g.data());
      cpu::matmul_serial(pool(), m.down, g.data(), F, n, ye.data(), D, nd);
      for (int64_t j = 0; j < n; ++j) std::copy_n(ye.data() + j * D, D, ya + assigned[j] * D);
    }
  });
  // Weighted sum in expert order, as if the experts had run one after another.
  for (int32_t e : active) {
    for (int32_t i = starts[e]; i < starts[e + 1]; ++i) {
      const int32_t a = order[i];
      cpu::axpy(weights[a], ya + static_cast<int64_t>(a) * D, D, out + (a / k) * D);
    }
  }
}

void CpuBackend::embed(const MatrixView& table, Range vocab, float* h) {
  const int32_t* ids = rows_.ids.data();
  const int64_t n = T_, D = table.cols;
  if (vocab.size() == shape_.vocab) {
    cpu::embedding_lookup(table, ids, n, h);
    return;
  }
  std::fill_n(h, n * D, 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    if (ids[t] >= vocab.begin && ids[t] < vocab.end) {
      const int32_t local = ids[t] - static_cast<int32_t>(vocab.begin);
      cpu::embedding_lookup(table, &local, 1, h + t * D);
    }
  }
}

void CpuBackend::lm_head(const MatrixView& w, const FloatView& norm, float eps, const float* h,
                         float* y) {
  const std::vector<int32_t>& out_rows = rows_.out_rows;
  const int64_t rows = static_cast<int64_t>(out_rows.size()), D = norm.size(), V = w.rows;
  // The final norm on the output rows, gathered with the decode rows first (as in the batch);
  // the logits go back to output order.
  head_rows_.resize(out_rows.size());
  std::iota(head_rows_.begin(), head_rows_.end(), 0);
  const auto decode_end = std::stable_partition(
      head_rows_.begin(), head_rows_.end(),
      [&](int32_t i) { return out_rows[static_cast<size_t>(i)] < rows_.n_decode; });
  float* x = buffer(Buf::kNormed);
  for (size_t i = 0; i < head_rows_.size(); ++i) {
    cpu::rms_norm(h + out_rows[static_cast<size_t>(head_rows_[i])] * D, norm.data(), 1, D, eps,
                  x + static_cast<int64_t>(i) * D);
  }
  const bool in_order = std::is_sorted(head_rows_.begin(), head_rows_.end());
  if (!in_order) head_logits_.resize(static_cast<size_t>(rows * V));
  float* dst = in_order ? y : head_logits_.data();
  cpu::matmul(pool(), w, x, D, rows, dst, V, decode_end - head_rows_.begin());
  if (!in_order) {
    for (size_t i = 0; i < head_rows_.size(); ++i) {
      std::copy_n(head_logits_.data() + static_cast<int64_t>(i) * V, V,
                  y + static_cast<int64_t>(head_rows_[i]) * V);
    }
  }
}

float* CpuBackend::output(std::vector<float>& host, int64_t n) {
  host.resize(static_cast<size_t>(n));
  return host.data();
}

void CpuBackend::to_host(const float* src, int64_t n, float* host) {
  if (src != host) std::copy_n(src, n, host);
}

}  // namespace kiln
