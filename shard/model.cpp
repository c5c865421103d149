// The Kimi-Linear decoder: embedding → N pre-norm residual blocks (KDA or MLA attention, then a
// dense MLP or MoE) → final RMSNorm → lm_head.
#include "shard/model.h"

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/norm.h"

namespace kiln {

StatusOr<std::unique_ptr<KimiLinearModel>> KimiLinearModel::load(const std::string& path) {
  std::unique_ptr<KimiLinearModel> m(new KimiLinearModel());
  KILN_ASSIGN_OR_RETURN(m->checkpoint_, Checkpoint::open(path));
  KILN_ASSIGN_OR_RETURN(m->weights_, load_weights(*m->checkpoint_));
  int64_t n_kda = 0, n_mla = 0;
  for (int64_t i = 0; i < m->config().num_layers; ++i) {
    m->state_index_.push_back(m->config().is_kda(i) ? n_kda++ : n_mla++);
  }
  return m;
}

void KimiLinearModel::run_layers(BatchContext& b) {
  const ModelConfig& c = config();
  const int64_t T = b.n_tokens, D = c.hidden_size;
  float* h = h_.data();
  float* x = x_.data();
  float* delta = delta_.data();
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const LayerWeights& w = weights_.layers[i];
    b.layer = i;
    cpu::rms_norm(h, w.attn_norm.data(), T, D, c.rms_norm_eps, x);
    if (c.is_kda(i)) {
      kda_forward(c, w.kda, state_index_[i], b, x, delta);
    } else {
      mla_forward(c, w.mla, state_index_[i], b, x, delta);
    }
    b.dump("attn_out", delta, T, D);
    cpu::add_rms_norm(h, delta, w.ffn_norm.data(), T, D, c.rms_norm_eps, x);
    if (c.is_moe(i)) {
      moe_forward(c, w.moe, b, x, delta);
    } else {
      mlp_forward(w.dense, b.pool, ws_, x, T, delta);
    }
    b.dump("ffn_out", delta, T, D);
    for (int64_t j = 0; j < T * D; ++j) h[j] += delta[j];
    b.dump("residual", h, T, D);
  }
}

Status KimiLinearModel::forward(cpu::ThreadPool& pool, StateCache& state,
                                const std::vector<SeqInput>& seqs, std::vector<float>& logits) {
  const ModelConfig& c = config();
  const int64_t D = c.hidden_size, vocab = c.vocab_size;
  std::vector<SeqSpan> spans;
  ids_.clear();
  int64_t out_rows = 0;
  for (const SeqInput& s : seqs) {
    if (s.slot < 0 || s.slot >= state.n_slots()) {
      return invalid_argument("slot {} is outside [0, {})", s.slot, state.n_slots());
    }
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    const int64_t pos0 = state.length(s.slot);
    if (pos0 + n > state.max_context()) {
      return invalid_argument("sequence in slot {} would reach {} tokens, over the context of {}",
                              s.slot, pos0 + n, state.max_context());
    }
    for (int32_t t : s.tokens) {
      if (t < 0 || t >= vocab) return invalid_argument("token id {} is outside [0, {})", t, vocab);
    }
    if (n == 0) continue;
    spans.push_back({s.slot, pos0, static_cast<int64_t>(ids_.size()), n});
    ids_.insert(ids_.end(), s.tokens.begin(), s.tokens.end());
    out_rows += s.all_logits ? n : 1;
  }
  const int64_t T = static_cast<int64_t>(ids_.size());
  logits.resize(static_cast<size_t>(out_rows * vocab));
  if (T == 0) return {};
  h_.resize(static_cast<size_t>(T * D));
  x_.resize(static_cast<size_t>(T * D));
  delta_.resize(static_cast<size_t>(T * D));

  cpu::embedding_lookup(weights_.embed, ids_.data(), T, h_.data());
  BatchContext b{pool, state, spans, T, ws_, hook_ ? &hook_ : nullptr, kda_chunk_};
  b.dump("embedding", h_.data(), T, D);
  run_layers(b);

  // Final norm only on the rows whose logits are wanted, gathered into x.
  int64_t row = 0;
  size_t span_i = 0;
  for (const SeqInput& s : seqs) {
    if (s.tokens.empty()) continue;
    const SeqSpan& sp = spans[span_i++];
    const int64_t first = s.all_logits ? sp.begin : sp.begin + sp.n - 1;
    const int64_t count = s.all_logits ? sp.n : 1;
    cpu::rms_norm(h_.data() + first * D, weights_.final_norm.data(), count, D, c.rms_norm_eps,
                  x_.data() + row * D);
    row += count;
    state.set_length(sp.slot, sp.pos0 + sp.n);
  }
  cpu::matmul(pool, weights_.lm_head, x_.data(), D, out_rows, logits.data(), vocab);
  return {};
}

}  // namespace kiln
