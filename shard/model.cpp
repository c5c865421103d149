// The Kimi-Linear decoder: embedding → N pre-norm residual blocks (KDA or MLA attention, then a
// dense MLP or MoE) → final RMSNorm → lm_head. In a tensor × pipeline job each rank runs its
// stage's layers on its slices; the two row-parallel outputs of a layer (attention, FFN) are
// all-reduced in the TP group, hidden states go stage to stage, vocab-parallel logits are gathered.
#include "shard/model.h"

#include <algorithm>

#include "kernels/base/check.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/norm.h"

namespace kiln {

namespace {

// The config as one rank sees it: its head counts and FFN slice sizes.
ModelConfig shard_config_for(const ModelConfig& c, const RankPlan& p) {
  ModelConfig s = c;
  s.kda_num_heads = p.kda_heads.size();
  s.mla_num_heads = p.mla_heads.size();
  s.intermediate_size = p.dense_ffn.size();
  s.moe_intermediate_size = p.expert_ffn.size();
  return s;
}

}  // namespace

StatusOr<std::unique_ptr<KimiLinearModel>> KimiLinearModel::load(const std::string& path,
                                                                 ParallelContext parallel) {
  std::unique_ptr<KimiLinearModel> m(new KimiLinearModel());
  KILN_ASSIGN_OR_RETURN(m->checkpoint_, Checkpoint::open(path));
  const ModelConfig& c = m->config();
  if (parallel.plan) {
    const RankPlan& p = *parallel.plan;
    KILN_CHECK(p.tensor == 1 || (parallel.tp != nullptr && parallel.tp->size() == p.tensor));
    KILN_CHECK(p.pipeline == 1 || (parallel.pp != nullptr && parallel.pp->size() == p.pipeline));
    m->plan_ = p;
    KILN_ASSIGN_OR_RETURN(m->weights_, load_weights(*m->checkpoint_, p));
    // Vocab rows of every rank in the TP group, to place gathered logits.
    const ParallelSpec spec{p.tensor, p.pipeline, {}};
    for (int t = 0; t < p.tensor; ++t) {
      KILN_ASSIGN_OR_RETURN(RankPlan other,
                            plan_rank(c, spec, p.pp_stage * p.tensor + t, DType::kF32, {}));
      m->tp_vocab_.push_back(other.vocab);
    }
  } else {
    KILN_ASSIGN_OR_RETURN(m->weights_, load_weights(*m->checkpoint_));
    m->plan_.layers = m->weights_.layers_loaded;
    m->plan_.kda_heads = {0, c.kda_num_heads};
    m->plan_.mla_heads = {0, c.mla_num_heads};
    m->plan_.dense_ffn = {0, c.intermediate_size};
    m->plan_.expert_ffn = {0, c.moe_intermediate_size};
    m->plan_.shared_ffn = {0, c.moe_intermediate_size * c.num_shared_experts};
    m->plan_.vocab = {0, c.vocab_size};
    m->tp_vocab_.push_back(m->plan_.vocab);
  }
  m->parallel_ = parallel;
  m->shard_config_ = shard_config_for(c, m->plan_);
  int64_t n_kda = 0, n_mla = 0;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const bool mine = i >= m->plan_.layers.begin && i < m->plan_.layers.end;
    m->state_index_.push_back(!mine ? -1 : c.is_kda(i) ? n_kda++ : n_mla++);
  }
  return m;
}

std::unique_ptr<StateCache> KimiLinearModel::new_state(int64_t n_slots, int64_t max_context) const {
  return std::make_unique<StateCache>(shard_config_, n_slots, max_context, plan_.layers);
}

// Vocab-parallel embedding: rows of this rank's vocab range, zeros for other ids, summed over the
// TP group.
void KimiLinearModel::embed(const std::vector<int32_t>& ids, float* h) {
  const int64_t D = config().hidden_size, T = static_cast<int64_t>(ids.size());
  const Range& v = weights_.vocab;
  if (v.size() == config().vocab_size) {
    cpu::embedding_lookup(weights_.embed, ids.data(), T, h);
    return;
  }
  std::fill_n(h, T * D, 0.0f);
  for (int64_t t = 0; t < T; ++t) {
    if (ids[t] >= v.begin && ids[t] < v.end) {
      const int32_t local = ids[t] - static_cast<int32_t>(v.begin);
      cpu::embedding_lookup(weights_.embed, &local, 1, h + t * D);
    }
  }
  if (parallel_.tp != nullptr) parallel_.tp->all_reduce_sum(h, T * D);
}

void KimiLinearModel::run_layers(BatchContext& b) {
  const ModelConfig& c = shard_config_;
  const int64_t T = b.n_tokens, D = c.hidden_size;
  float* h = h_.data();
  float* x = x_.data();
  float* delta = delta_.data();
  Communicator* tp = parallel_.tp;
  for (int64_t i = plan_.layers.begin; i < plan_.layers.end; ++i) {
    const LayerWeights& w = weights_.layers[i];
    b.layer = i;
    cpu::rms_norm(h, w.attn_norm.data(), T, D, c.rms_norm_eps, x);
    if (c.is_kda(i)) {
      kda_forward(c, w.kda, state_index_[i], b, x, delta);
    } else {
      mla_forward(c, w.mla, state_index_[i], b, x, delta);
    }
    if (tp != nullptr) tp->all_reduce_sum(delta, T * D);
    b.dump("attn_out", delta, T, D);
    cpu::add_rms_norm(h, delta, w.ffn_norm.data(), T, D, c.rms_norm_eps, x);
    if (c.is_moe(i)) {
      moe_forward(c, w.moe, b, x, delta);  // routed + shared summed locally: one all-reduce
    } else {
      mlp_forward(w.dense, b.pool, ws_, x, T, delta);
    }
    if (tp != nullptr) tp->all_reduce_sum(delta, T * D);
    b.dump("ffn_out", delta, T, D);
    for (int64_t j = 0; j < T * D; ++j) h[j] += delta[j];
    b.dump("residual", h, T, D);
  }
}

// lm_head over the `rows` normed rows in x_: local vocab slice, gathered across the TP group into
// logits [rows][vocab].
void KimiLinearModel::head(int64_t rows, std::vector<float>& logits) {
  const int64_t D = config().hidden_size, vocab = config().vocab_size;
  const Range& v = weights_.vocab;
  if (v.size() == vocab) {
    cpu::matmul(*pool_, weights_.lm_head, x_.data(), D, rows, logits.data(), vocab);
    return;
  }
  local_logits_.resize(static_cast<size_t>(rows * v.size()));
  cpu::matmul(*pool_, weights_.lm_head, x_.data(), D, rows, local_logits_.data(), v.size());
  std::vector<int64_t> counts;
  for (const Range& r : tp_vocab_) counts.push_back(rows * r.size());
  gathered_.resize(static_cast<size_t>(rows * vocab));
  parallel_.tp->all_gather_v(local_logits_.data(), rows * v.size(), gathered_.data(), counts);
  int64_t off = 0;
  for (const Range& r : tp_vocab_) {  // rank-major chunks [rows][|r|] → columns r of each row
    for (int64_t row = 0; row < rows; ++row) {
      std::copy_n(gathered_.data() + off + row * r.size(), r.size(),
                  logits.data() + row * vocab + r.begin);
    }
    off += rows * r.size();
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
  logits.clear();
  if (T == 0) return {};
  h_.resize(static_cast<size_t>(T * D));
  x_.resize(static_cast<size_t>(T * D));
  delta_.resize(static_cast<size_t>(T * D));
  pool_ = &pool;
  Communicator* pp = parallel_.pp;

  BatchContext b{pool, state, spans, T, ws_, hook_ ? &hook_ : nullptr, kda_chunk_};
  if (plan_.first_stage()) {
    embed(ids_, h_.data());
    b.dump("embedding", h_.data(), T, D);
  } else {
    pp->recv(h_.data(), T * D * 4, plan_.pp_stage - 1);
  }
  run_layers(b);
  for (const SeqSpan& sp : spans) state.set_length(sp.slot, sp.pos0 + sp.n);
  if (!plan_.last_stage()) {
    pp->send(h_.data(), T * D * 4, plan_.pp_stage + 1);
  } else {
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
    }
    logits.resize(static_cast<size_t>(out_rows * vocab));
    head(out_rows, logits);
  }
  // Stage 0's first rank (global rank 0) receives the logits from the last stage's first rank.
  if (plan_.pipeline > 1 && plan_.tp_rank == 0) {
    if (plan_.last_stage()) {
      pp->send(logits.data(), out_rows * vocab * 4, 0);
    } else if (plan_.first_stage()) {
      logits.resize(static_cast<size_t>(out_rows * vocab));
      pp->recv(logits.data(), out_rows * vocab * 4, plan_.pipeline - 1);
    }
  }
  return {};
}

}  // namespace kiln
