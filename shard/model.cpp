// The Kimi-Linear decoder: embedding → N pre-norm residual blocks (KDA or MLA attention, then a
// dense MLP or MoE) → final RMSNorm → lm_head. In a tensor × pipeline job each rank runs its
// stage's layers on its slices; the parallel layers (parallel_layers.h) reduce the row-parallel
// outputs, move hidden states between stages and gather the vocab-parallel logits. Every op runs
// on the model's Backend, in its memory.
#include "shard/model.h"

#include <algorithm>
#include <new>
#include <span>

#include "kernels/base/check.h"
#include "shard/memory_budget.h"

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

KimiLinearModel::KimiLinearModel() = default;
KimiLinearModel::~KimiLinearModel() = default;

// The whole load is one set-up step: an allocation failure anywhere in it (tables sized by the
// file, weight copies) is an error naming the model, not an uncaught exception.
StatusOr<std::unique_ptr<KimiLinearModel>> KimiLinearModel::load(const std::string& path,
                                                                 ParallelContext parallel) try {
  KILN_RETURN_IF_ERROR(device_available(parallel.device));
  std::unique_ptr<KimiLinearModel> m(new KimiLinearModel());
  KILN_ASSIGN_OR_RETURN(m->checkpoint_, Checkpoint::open(path));
  const ModelConfig& c = m->config();
  std::vector<Range> group_vocab;
  if (parallel.plan) {
    const RankPlan& p = *parallel.plan;
    KILN_CHECK(p.tensor == 1 || (parallel.tp != nullptr && parallel.tp->size() == p.tensor));
    KILN_CHECK(p.pipeline == 1 || (parallel.pp != nullptr && parallel.pp->size() == p.pipeline));
    m->plan_ = p;
    KILN_ASSIGN_OR_RETURN(m->weights_, load_weights(*m->checkpoint_, p, parallel.progress));
    // Loading touched the whole files (row-parallel slices were copied out, shapes checked);
    // drop those pages so the rank keeps only its share resident.
    m->checkpoint_->release_pages();
    // Vocab rows of every rank in the TP group, to place gathered logits.
    const ParallelSpec spec{p.tensor, p.pipeline, {}};
    for (int t = 0; t < p.tensor; ++t) {
      KILN_ASSIGN_OR_RETURN(RankPlan other,
                            plan_rank(c, spec, p.pp_stage * p.tensor + t, DType::kF32, {}));
      group_vocab.push_back(other.vocab);
    }
  } else {
    m->plan_ = whole_model_plan(c);
    KILN_ASSIGN_OR_RETURN(m->weights_, load_weights(*m->checkpoint_, m->plan_, parallel.progress));
    group_vocab.push_back(m->plan_.vocab);
  }
  m->parallel_ = parallel;
  m->shard_config_ = shard_config_for(c, m->plan_);
  BackendOptions o{parallel.device, parallel.gpu, &m->weights_, {}};
  o.shape = {m->shard_config_, std::max(m->shard_config_.intermediate_size,
                                        m->plan_.shared_ffn.size()),
             m->plan_.vocab.size(), c.vocab_size, parallel.tp != nullptr};
  KILN_ASSIGN_OR_RETURN(m->backend_, make_backend(o));
  // A backend that copied the weights to its device does not read the host views again.
  if (m->backend_->weight_bytes() > 0) m->checkpoint_->release_pages();
  const ModelWeights& w = m->backend_->weights();
  m->embedding_ = VocabParallelEmbedding(w.embed, m->plan_.vocab, c.vocab_size, parallel.tp);
  m->lm_head_ = ParallelLMHead(w.lm_head, w.final_norm, c.rms_norm_eps, group_vocab,
                               c.vocab_size, parallel.tp, m->plan_.tp_rank);
  m->pipeline_ = PipelineLink(parallel.pp, m->plan_.pp_stage, m->plan_.pipeline, m->plan_.tp_rank);
  m->row_parallel_ = RowParallelLinear(parallel.tp);
  int64_t n_kda = 0, n_mla = 0;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const bool mine = i >= m->plan_.layers.begin && i < m->plan_.layers.end;
    m->state_index_.push_back(!mine ? -1 : c.is_kda(i) ? n_kda++ : n_mla++);
  }
  return m;
} catch (const std::bad_alloc&) {
  return Status(StatusCode::kResourceExhausted,
                fmt::format("{}: out of memory while loading the model ({} available)", path,
                            format_byte_count(available_memory_bytes())));
}

Status KimiLinearModel::reserve(int64_t max_tokens) { return backend_->reserve(max_tokens); }

int64_t KimiLinearModel::device_weight_bytes() const { return backend_->weight_bytes(); }

StatusOr<std::unique_ptr<StateCache>> KimiLinearModel::new_state(int64_t n_slots,
                                                                 int64_t max_context) const {
  return StateCache::create_fixed(shard_config_, n_slots, max_context, plan_.layers, 64,
                                  backend_->state_storage());
}

StatusOr<std::unique_ptr<StateCache>> KimiLinearModel::new_paged_state(
    int64_t n_slots, int64_t n_pages, int64_t page_tokens) const {
  return StateCache::create(shard_config_, n_slots, n_pages, page_tokens, plan_.layers,
                            backend_->state_storage());
}

void KimiLinearModel::run_layers(StateCache& state) {
  const ModelConfig& c = shard_config_;
  Backend& be = *backend_;
  const int64_t T = be.rows().n_tokens(), D = c.hidden_size;
  const float eps = c.rms_norm_eps;
  float* h = be.buffer(Buf::kHidden);
  float* x = be.buffer(Buf::kNormed);
  float* delta = be.buffer(Buf::kDelta);
  BlockContext b{be, state, row_parallel_, hook_ ? &hook_ : nullptr};
  for (int64_t i = plan_.layers.begin; i < plan_.layers.end; ++i) {
    const LayerWeights& w = be.weights().layers[static_cast<size_t>(i)];
    b.layer = i;
    be.rms_norm(h, D, w.attn_norm, eps, x, D);
    if (c.is_kda(i)) {
      kda_forward(c, w.kda, state_index_[i], b, x, delta);
    } else {
      mla_forward(c, w.mla, state_index_[i], b, x, delta);
    }
    b.dump("attn_out", delta, T, D);
    be.add_rms_norm(h, delta, w.ffn_norm, eps, x);
    ffn_forward(c, w, b, x, delta);
    b.dump("ffn_out", delta, T, D);
    be.add(h, delta, T * D);
    b.dump("residual", h, T, D);
  }
}

namespace {

// The checks that need no change to the state: spans inside the batch, slots, token and page ids.
Status check_batch(const Batch& batch, const StateCache& state, int64_t vocab) {
  for (const BatchSpan& s : batch.spans) {
    if (s.slot < 0 || s.slot >= state.n_slots()) {
      return invalid_argument("slot {} is outside [0, {})", s.slot, state.n_slots());
    }
    if (s.n <= 0 || s.begin < 0 || s.begin + s.n > batch.n_tokens() || s.n_pages < 0 ||
        s.pages_begin < 0 || s.pages_begin + s.n_pages > static_cast<int64_t>(batch.new_pages.size())) {
      return invalid_argument("the span of slot {} (tokens [{}, +{}), pages [{}, +{})) is outside "
                              "the batch ({} tokens, {} pages)",
                              s.slot, s.begin, s.n, s.pages_begin, s.n_pages, batch.n_tokens(),
                              batch.new_pages.size());
    }
    for (int32_t t : batch.tokens(s)) {
      if (t < 0 || t >= vocab) return invalid_argument("token id {} is outside [0, {})", t, vocab);
    }
    for (int32_t p : batch.pages(s)) {
      if (p < 0 || p >= state.n_pages()) {
        return invalid_argument("page {} is outside [0, {})", p, state.n_pages());
      }
    }
  }
  return {};
}

}  // namespace

Status KimiLinearModel::forward(cpu::ThreadPool& pool, StateCache& state, const Batch& batch,
                                std::vector<float>& logits) {
  const ModelConfig& c = config();
  const int64_t D = c.hidden_size, vocab = c.vocab_size;
  KILN_RETURN_IF_ERROR(check_batch(batch, state, vocab));
  for (const BatchSpan& s : batch.spans) {
    if (s.reset) state.reset(s.slot);
    if (s.n_pages > 0) {
      const std::span<const int32_t> pages = batch.pages(s);
      state.append_pages(s.slot, {pages.begin(), pages.end()});
    }
  }
  for (const BatchSpan& s : batch.spans) {
    const int64_t pos0 = state.length(s.slot);
    if (pos0 + s.n > state.capacity(s.slot)) {
      return invalid_argument(
          "sequence in slot {} needs {} tokens of context, its pages hold {}", s.slot, pos0 + s.n,
          state.capacity(s.slot));
    }
  }
  logits.clear();
  if (batch.n_tokens() == 0) return {};
  Backend& be = *backend_;
  if (state.storage().device != be.device()) {
    return invalid_argument("the state cache is on {} but the model runs on {}",
                            device_name(state.storage().device), device_name(be.device()));
  }
  KILN_RETURN_IF_ERROR(be.begin(pool, state, batch, kda_chunk_));
  const int64_t T = be.rows().n_tokens();
  float* h = be.buffer(Buf::kHidden);
  if (plan_.first_stage()) {
    embedding_.forward(be, h);
    if (hook_) hook_(0, "embedding", be.host_view(h, T * D), T, D);
  } else {
    pipeline_.receive_hidden(h, T * D);
  }
  run_layers(state);
  for (const SeqSpan& sp : be.rows().spans) state.set_length(sp.slot, sp.pos0 + sp.n);
  if (!plan_.last_stage()) pipeline_.send_hidden(h, T * D);
  if (!pipeline_.has_logits()) return {};
  const int64_t n = batch.n_logit_rows() * vocab;
  float* y = be.output(logits, n);
  if (plan_.last_stage()) lm_head_.forward(be, h, y);
  pipeline_.logits_to_first_stage(y, n);
  be.to_host(y, n, logits.data());
  return {};
}

}  // namespace kiln
