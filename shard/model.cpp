// The Kimi-Linear decoder: embedding → N pre-norm residual blocks (KDA or MLA attention, then a
// dense MLP or MoE) → final RMSNorm → lm_head. In a tensor × pipeline job each rank runs its
// stage's layers on its slices; the parallel layers (parallel_layers.h) reduce the row-parallel
// outputs, move hidden states between stages and gather the vocab-parallel logits.
#include "shard/model.h"

#include <algorithm>
#include <new>
#include <numeric>
#include <span>

#include "kernels/base/check.h"
#include "kernels/cpu/norm.h"
#include "shard/memory_budget.h"
#ifdef KILN_HAVE_CUDA
#include "shard/cuda_model.h"
#else
namespace kiln {
class CudaModel {};  // never made in a build without CUDA
}  // namespace kiln
#endif

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
  m->embedding_ = VocabParallelEmbedding(m->weights_.embed, m->plan_.vocab, c.vocab_size, parallel.tp);
  m->lm_head_ = ParallelLMHead(m->weights_.lm_head, group_vocab, c.vocab_size, parallel.tp,
                               m->plan_.tp_rank);
  m->pipeline_ = PipelineLink(parallel.pp, m->plan_.pp_stage, m->plan_.pipeline, m->plan_.tp_rank);
  m->shard_config_ = shard_config_for(c, m->plan_);
  int64_t n_kda = 0, n_mla = 0;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const bool mine = i >= m->plan_.layers.begin && i < m->plan_.layers.end;
    m->state_index_.push_back(!mine ? -1 : c.is_kda(i) ? n_kda++ : n_mla++);
  }
#ifdef KILN_HAVE_CUDA
  if (parallel.device == Device::kCuda) {
    KILN_ASSIGN_OR_RETURN(m->cuda_, CudaModel::create(c, m->shard_config_, m->weights_, m->plan_,
                                                      m->state_index_, group_vocab, parallel));
    m->parallel_.gpu = &m->cuda_->context();
    // The host copy is not read again by the forward; let the kernel drop its pages.
    m->checkpoint_->release_pages();
  }
#endif
  return m;
} catch (const std::bad_alloc&) {
  return Status(StatusCode::kResourceExhausted,
                fmt::format("{}: out of memory while loading the model ({} available)", path,
                            format_byte_count(available_memory_bytes())));
}

Status KimiLinearModel::reserve(int64_t max_tokens) {
#ifdef KILN_HAVE_CUDA
  if (cuda_) return cuda_->reserve(max_tokens);
#endif
  (void)max_tokens;
  return {};
}

int64_t KimiLinearModel::device_weight_bytes() const {
#ifdef KILN_HAVE_CUDA
  if (cuda_) return cuda_->weight_bytes();
#endif
  return 0;
}

StatusOr<std::unique_ptr<StateCache>> KimiLinearModel::new_state(int64_t n_slots,
                                                                 int64_t max_context) const {
  return StateCache::create_fixed(shard_config_, n_slots, max_context, plan_.layers, 64,
                                  {parallel_.device, parallel_.gpu});
}

StatusOr<std::unique_ptr<StateCache>> KimiLinearModel::new_paged_state(
    int64_t n_slots, int64_t n_pages, int64_t page_tokens) const {
  return StateCache::create(shard_config_, n_slots, n_pages, page_tokens, plan_.layers,
                            {parallel_.device, parallel_.gpu});
}

void KimiLinearModel::run_layers(BatchContext& b) {
  const ModelConfig& c = shard_config_;
  const int64_t T = b.n_tokens, D = c.hidden_size;
  float* h = h_.data();
  float* x = x_.data();
  float* delta = delta_.data();
  for (int64_t i = plan_.layers.begin; i < plan_.layers.end; ++i) {
    const LayerWeights& w = weights_.layers[i];
    b.layer = i;
    cpu::rms_norm(h, w.attn_norm.data(), T, D, c.rms_norm_eps, x);
    if (c.is_kda(i)) {
      kda_forward(c, w.kda, state_index_[i], b, x, delta);
    } else {
      mla_forward(c, w.mla, state_index_[i], b, x, delta);
    }
    reduce_row_parallel(parallel_.tp, delta, T * D);  // o_proj is row-parallel
    b.dump("attn_out", delta, T, D);
    cpu::add_rms_norm(h, delta, w.ffn_norm.data(), T, D, c.rms_norm_eps, x);
    if (c.is_moe(i)) {
      moe_forward(c, w.moe, b, x, delta);  // routed + shared summed locally: one all-reduce
    } else {
      mlp_forward(w.dense, b.pool, ws_, x, T, b.n_decode, delta);
    }
    reduce_row_parallel(parallel_.tp, delta, T * D);  // down projections are row-parallel
    b.dump("ffn_out", delta, T, D);
    for (int64_t j = 0; j < T * D; ++j) h[j] += delta[j];
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
  const int64_t out_rows = batch.n_logit_rows();
  const std::vector<BatchSpan>& seqs = batch.spans;
  // Rows: the decode spans first (blocks.h, kDecodeSpanMax), then the others, each group in the
  // order given; span_of[i] is seqs[i]'s span.
  std::vector<SeqSpan> spans;
  std::vector<int64_t> span_of(seqs.size(), -1);
  ids_.clear();
  int64_t n_decode = 0;
  for (const bool decode : {true, false}) {
    for (size_t i = 0; i < seqs.size(); ++i) {
      const BatchSpan& s = seqs[i];
      if ((s.n <= kDecodeSpanMax) != decode) continue;
      span_of[i] = static_cast<int64_t>(spans.size());
      spans.push_back({s.slot, state.length(s.slot), static_cast<int64_t>(ids_.size()), s.n});
      const std::span<const int32_t> tokens = batch.tokens(s);
      ids_.insert(ids_.end(), tokens.begin(), tokens.end());
      if (decode) n_decode += s.n;
    }
  }
  const int64_t T = static_cast<int64_t>(ids_.size());
  logits.clear();
  if (T == 0) return {};
  if (state.storage().device != parallel_.device) {
    return invalid_argument("the state cache is on {} but the model runs on {}",
                            device_name(state.storage().device), device_name(parallel_.device));
  }
  // The batch rows whose logits are wanted, in output order.
  out_rows_.clear();
  for (size_t i = 0; i < seqs.size(); ++i) {
    if (span_of[i] < 0) continue;
    const SeqSpan& sp = spans[static_cast<size_t>(span_of[i])];
    for (int64_t r = seqs[i].all_logits ? sp.begin : sp.begin + sp.n - 1; r < sp.begin + sp.n;
         ++r) {
      out_rows_.push_back(static_cast<int32_t>(r));
    }
  }
#ifdef KILN_HAVE_CUDA
  if (cuda_) {
    cuda_->set_activation_hook(hook_ ? &hook_ : nullptr);
    KILN_RETURN_IF_ERROR(cuda_->forward(state, spans, ids_, out_rows_, kda_chunk_, logits));
    for (const SeqSpan& sp : spans) state.set_length(sp.slot, sp.pos0 + sp.n);
    return {};
  }
#endif
  h_.resize(static_cast<size_t>(T * D));
  x_.resize(static_cast<size_t>(T * D));
  delta_.resize(static_cast<size_t>(T * D));

  BatchContext b{pool, state, spans, T, n_decode, ws_, hook_ ? &hook_ : nullptr, kda_chunk_};
  if (plan_.first_stage()) {
    embedding_.forward(ids_.data(), T, h_.data());
    b.dump("embedding", h_.data(), T, D);
  } else {
    pipeline_.receive_hidden(h_.data(), T * D);
  }
  run_layers(b);
  for (const SeqSpan& sp : spans) state.set_length(sp.slot, sp.pos0 + sp.n);
  if (!plan_.last_stage()) {
    pipeline_.send_hidden(h_.data(), T * D);
  } else {
    // Final norm only on the rows whose logits are wanted, gathered into x with the decode
    // rows first (as in the batch), then the LM head; logits rows go back to output order.
    head_rows_.resize(out_rows_.size());
    std::iota(head_rows_.begin(), head_rows_.end(), 0);
    const auto decode_end = std::stable_partition(
        head_rows_.begin(), head_rows_.end(), [&](int32_t i) { return out_rows_[i] < n_decode; });
    for (size_t i = 0; i < head_rows_.size(); ++i) {
      cpu::rms_norm(h_.data() + out_rows_[head_rows_[i]] * D, weights_.final_norm.data(), 1, D,
                    c.rms_norm_eps, x_.data() + static_cast<int64_t>(i) * D);
    }
    logits.resize(static_cast<size_t>(out_rows * vocab));
    const bool in_order = std::is_sorted(head_rows_.begin(), head_rows_.end());
    if (!in_order) head_logits_.resize(logits.size());
    float* dst = in_order ? logits.data() : head_logits_.data();
    lm_head_.forward(pool, x_.data(), out_rows, decode_end - head_rows_.begin(), dst);
    if (!in_order) {
      for (size_t i = 0; i < head_rows_.size(); ++i) {
        std::copy_n(head_logits_.data() + static_cast<int64_t>(i) * vocab, vocab,
                    logits.data() + static_cast<int64_t>(head_rows_[i]) * vocab);
      }
    }
  }
  pipeline_.logits_to_first_stage(logits, out_rows * vocab);
  return {};
}

}  // namespace kiln
