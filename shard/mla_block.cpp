// MLA block (kimi-linear.md §4), NoPE, absorbed form for prefill and decode: the latent
// [c | k_pe] of every token goes to its slot's latent pages; queries are absorbed through W_UKᵀ,
// attention is MQA over the latent rows, and W_UV maps the attended latent back per head.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/base/check.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/mla.h"
#include "kernels/cpu/norm.h"
#include "shard/blocks.h"

namespace kiln {
namespace {

// Copies the span's latent rows kv [n][R+P] to positions [pos0, pos0 + n) of its slot's pages.
void write_latent(StateCache& state, int64_t mla_index, const SeqSpan& s, const float* kv) {
  const int64_t pt = state.page_tokens(), L = state.sizes().latent_floats;
  const std::vector<int32_t>& table = state.pages(s.slot);
  KILN_CHECK(s.pos0 + s.n <= static_cast<int64_t>(table.size()) * pt);
  for (int64_t i = 0; i < s.n;) {
    const int64_t pos = s.pos0 + i, row = pos % pt, run = std::min(s.n - i, pt - row);
    float* page = state.latent_page(table[static_cast<size_t>(pos / pt)], mla_index);
    std::copy_n(kv + i * L, run * L, page + row * L);
    i += run;
  }
}

}  // namespace

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

  cpu::matmul(pool, w.q, x, D, T, q, H * (N + P), b.n_decode);
  cpu::matmul(pool, w.kv_a, x, D, T, kv, L, b.n_decode);
  for (int64_t t = 0; t < T; ++t) {
    cpu::rms_norm(kv + t * L, w.kv_a_norm.data(), 1, R, c.kv_a_norm_eps, kv + t * L);
  }
  for (const SeqSpan& s : b.seqs) write_latent(b.state, mla_index, s, kv + s.begin * L);
  for (int64_t h = 0; h < H; ++h) {
    cpu::matmul(pool, w.k_b[h], q + h * (N + P), H * (N + P), T, qa + h * L, H * L, b.n_decode);
  }
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < H; ++h) {
      std::copy_n(q + (t * H + h) * (N + P) + N, P, qa + (t * H + h) * L + R);
    }
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(N + P));
  // Page addresses of the sequence being attended; grows to the longest table, then reused.
  thread_local std::vector<const float*> pages;
  for (const SeqSpan& s : b.seqs) {
    const std::vector<int32_t>& table = b.state.pages(s.slot);
    const int64_t pt = b.state.page_tokens();
    pages.resize(static_cast<size_t>((s.pos0 + s.n + pt - 1) / pt));
    for (size_t i = 0; i < pages.size(); ++i) pages[i] = b.state.latent_page(table[i], mla_index);
    cpu::mla_attention_absorbed(pool, qa + s.begin * H * L, s.n, H, R, P, pages.data(), pt,
                                s.pos0, scale, ol + s.begin * H * R);
  }
  for (int64_t h = 0; h < H; ++h) {
    cpu::matmul(pool, w.v_b[h], ol + h * R, H * R, T, ov + h * V, H * V, b.n_decode);
  }
  b.dump("mla.latent", kv, T, L);
  b.dump("mla.heads", ov, T, H * V);
  cpu::matmul(pool, w.o, ov, H * V, T, out, D, b.n_decode);
}

}  // namespace kiln
