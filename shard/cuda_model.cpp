// The forward pass on the GPU, op for op the CPU path of model.cpp and the blocks (kda_block.cpp,
// mla_block.cpp, ffn_block.cpp), over device buffers on one stream.
#include "shard/cuda_model.h"

#include <algorithm>
#include <cmath>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#include "shard/cuda_weights.h"

namespace kiln {

// The workspace: one device allocation carved into the buffers of every block for up to
// max_tokens rows, the input buffers (device + pinned staging, grown when a batch needs more)
// and the pinned buffer host-staged collectives go through.
struct CudaWork {
  int64_t max_tokens = 0;
  cuda::DeviceBuffer storage;
  float *h = nullptr, *x = nullptr, *delta = nullptr;
  float *proj = nullptr, *qkv = nullptr, *low = nullptr, *gate = nullptr, *z = nullptr;
  float *beta = nullptr, *o = nullptr;
  float *mq = nullptr, *kv = nullptr, *kvc = nullptr, *qa = nullptr, *ol = nullptr, *ov = nullptr;
  float *g = nullptr, *u = nullptr, *router = nullptr, *route_w = nullptr;
  float *ge = nullptr, *ue = nullptr, *ye = nullptr;
  int32_t *expert_ids = nullptr, *order = nullptr, *offsets = nullptr;
  float *logits_local = nullptr, *logits_all = nullptr;

  int64_t input_capacity = 0;  // int32 words
  cuda::DeviceBuffer inputs;
  // Two pinned staging buffers used in turn; each may be rewritten once its event has passed
  // (the copy of the forward before last), so a forward never waits on the one before it.
  cuda::PinnedBuffer staging[2];
  cudaEvent_t inputs_copied[2] = {nullptr, nullptr};
  int turn = 0;
  std::vector<int32_t> table_sizes;  // per span, pages its attention reads (reused)
  cuda::PinnedBuffer host;              // [max_tokens][D] floats

  ~CudaWork() {
    for (cudaEvent_t e : inputs_copied) {
      if (e != nullptr) cudaEventDestroy(e);
    }
  }
};

// One forward's inputs, as device pointers into CudaWork::inputs.
struct CudaModel::Batch {
  int64_t T = 0, n_spans = 0, n_dec = 0, n_pre = 0, max_pre = 0, n_out = 0;
  const int32_t* ids = nullptr;
  const cuda::Span* spans = nullptr;  // all
  const cuda::Span* dec = nullptr;    // one-token spans: the recurrent KDA step
  const cuda::Span* pre = nullptr;    // longer spans: chunked KDA
  const int32_t* table_offsets = nullptr;
  const int32_t* tables = nullptr;
  const int32_t* out_rows = nullptr;
};

CudaModel::CudaModel() = default;

CudaModel::~CudaModel() {
  if (ctx_ != nullptr) ctx_->synchronize();
}

StatusOr<std::unique_ptr<CudaModel>> CudaModel::create(const ModelConfig& config,
                                                       const ModelConfig& shard_config,
                                                       const ModelWeights& weights,
                                                       const RankPlan& plan,
                                                       const std::vector<int64_t>& state_index,
                                                       const std::vector<Range>& group_vocab,
                                                       const ParallelContext& parallel) {
  std::unique_ptr<CudaModel> m(new CudaModel());
  m->config_ = config;
  m->shard_ = shard_config;
  m->plan_ = plan;
  m->parallel_ = parallel;
  m->state_index_ = state_index;
  m->group_vocab_ = group_vocab;
  if (parallel.gpu != nullptr) {
    m->ctx_ = parallel.gpu;
  } else {
    KILN_ASSIGN_OR_RETURN(m->owned_ctx_, cuda::Context::create(0));
    m->ctx_ = m->owned_ctx_.get();
  }
  m->ctx_->bind();
  KILN_ASSIGN_OR_RETURN(m->w_, CudaWeights::upload(*m->ctx_, shard_config, weights));
  m->work_ = std::make_unique<CudaWork>();
  for (cudaEvent_t& e : m->work_->inputs_copied) {
    KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  }
  KILN_RETURN_IF_ERROR(m->reserve(256));
  return m;
}

int64_t CudaModel::weight_bytes() const { return w_->storage.bytes(); }

Status CudaModel::reserve(int64_t max_tokens) {
  CudaWork& w = *work_;
  if (max_tokens <= w.max_tokens) return {};
  const ModelConfig& c = shard_;
  const int64_t T = max_tokens, D = c.hidden_size;
  const int64_t C = c.kda_proj_dim(), Hk = c.kda_num_heads, r = c.kda_gate_rank;
  const int64_t Hm = c.mla_num_heads, N = c.qk_nope_head_dim, P = c.qk_rope_head_dim;
  const int64_t R = c.kv_lora_rank, V = c.v_head_dim, L = R + P;
  const int64_t F = std::max(c.intermediate_size, plan_.shared_ffn.size());
  const int64_t E = c.num_experts, k = c.experts_per_token, Fe = c.moe_intermediate_size;
  const int64_t vocab_all = (plan_.tensor > 1 || plan_.pipeline > 1) ? config_.vocab_size : 0;

  // Carve one allocation; every buffer starts on a 256-byte boundary.
  struct Slot {
    void** at;
    int64_t floats;
  };
  const std::vector<Slot> slots = {
      {reinterpret_cast<void**>(&w.h), T * D},        {reinterpret_cast<void**>(&w.x), T * D},
      {reinterpret_cast<void**>(&w.delta), T * D},    {reinterpret_cast<void**>(&w.proj), T * 3 * C},
      {reinterpret_cast<void**>(&w.qkv), T * 3 * C},  {reinterpret_cast<void**>(&w.low), T * r},
      {reinterpret_cast<void**>(&w.gate), T * C},     {reinterpret_cast<void**>(&w.z), T * C},
      {reinterpret_cast<void**>(&w.beta), T * Hk},    {reinterpret_cast<void**>(&w.o), T * C},
      {reinterpret_cast<void**>(&w.mq), T * Hm * (N + P)},
      {reinterpret_cast<void**>(&w.kv), T * L},       {reinterpret_cast<void**>(&w.kvc), T * R},
      {reinterpret_cast<void**>(&w.qa), T * Hm * L},  {reinterpret_cast<void**>(&w.ol), T * Hm * R},
      {reinterpret_cast<void**>(&w.ov), T * Hm * V},  {reinterpret_cast<void**>(&w.g), T * F},
      {reinterpret_cast<void**>(&w.u), T * F},        {reinterpret_cast<void**>(&w.router), T * E},
      {reinterpret_cast<void**>(&w.route_w), T * k},  {reinterpret_cast<void**>(&w.ge), T * k * Fe},
      {reinterpret_cast<void**>(&w.ue), T * k * Fe},  {reinterpret_cast<void**>(&w.ye), T * k * D},
      {reinterpret_cast<void**>(&w.expert_ids), T * k},
      {reinterpret_cast<void**>(&w.order), T * k},    {reinterpret_cast<void**>(&w.offsets), E + 1},
      {reinterpret_cast<void**>(&w.logits_local), T * plan_.vocab.size()},
      {reinterpret_cast<void**>(&w.logits_all), T * vocab_all},
  };
  auto padded = [](int64_t floats) { return (floats * 4 + 255) / 256 * 256; };
  int64_t total = 0;
  for (const Slot& s : slots) total += padded(s.floats);
  ctx_->synchronize();  // the old workspace may still be in use
  w.storage = cuda::DeviceBuffer();
  KILN_ASSIGN_OR_RETURN(w.storage,
                        cuda::DeviceBuffer::allocate(total, fmt::format("the workspace for {} "
                                                                        "tokens", T)));
  auto* p = w.storage.as<std::byte>();
  for (const Slot& s : slots) {
    *s.at = p;
    p += padded(s.floats);
  }
  w.host = cuda::PinnedBuffer();
  KILN_ASSIGN_OR_RETURN(w.host, cuda::PinnedBuffer::allocate(T * D * 4, "collective staging"));
  KILN_RETURN_IF_ERROR(ctx_->reserve_scratch(w_->max_matmul_scratch(T)));
  w.max_tokens = T;
  return {};
}

Status CudaModel::stage_inputs(StateCache& state, const std::vector<SeqSpan>& spans,
                               const std::vector<int32_t>& ids,
                               const std::vector<int32_t>& out_rows, Batch& b) {
  CudaWork& w = *work_;
  const int64_t pt = state.page_tokens();
  std::vector<int32_t>& table_sizes = w.table_sizes;
  table_sizes.clear();
  int64_t table_words = 0;
  for (const SeqSpan& s : spans) {
    const int64_t need = (s.pos0 + s.n + pt - 1) / pt;
    table_sizes.push_back(static_cast<int32_t>(need));
    table_words += need;
  }
  b.T = static_cast<int64_t>(ids.size());
  b.n_spans = static_cast<int64_t>(spans.size());
  b.n_out = static_cast<int64_t>(out_rows.size());
  for (const SeqSpan& s : spans) (s.n == 1 ? b.n_dec : b.n_pre) += 1;
  // Layout (int32 words): ids | spans | decode spans | prefill spans | table offsets | tables |
  // output rows; each Span is 4 words.
  const int64_t words = b.T + 4 * 2 * b.n_spans + b.n_spans + table_words + b.n_out;
  if (words > w.input_capacity) {
    ctx_->synchronize();
    const int64_t cap = std::max<int64_t>(words, 2 * w.input_capacity);
    w.inputs = cuda::DeviceBuffer();
    w.staging[0] = cuda::PinnedBuffer();
    w.staging[1] = cuda::PinnedBuffer();
    KILN_ASSIGN_OR_RETURN(w.inputs, cuda::DeviceBuffer::allocate(cap * 4, "forward inputs"));
    for (cuda::PinnedBuffer& p : w.staging) {
      KILN_ASSIGN_OR_RETURN(p, cuda::PinnedBuffer::allocate(cap * 4, "forward inputs"));
    }
    w.input_capacity = cap;
  }
  w.turn ^= 1;
  KILN_CUDA_CHECK(cudaEventSynchronize(w.inputs_copied[w.turn]));  // its last copy has read it
  int32_t* host = w.staging[w.turn].as<int32_t>();
  int32_t* dev = w.inputs.as<int32_t>();
  int64_t at = 0;
  auto take = [&](int64_t n) {
    const int64_t start = at;
    at += n;
    return start;
  };
  const int64_t ids_at = take(b.T), spans_at = take(4 * b.n_spans), dec_at = take(4 * b.n_dec);
  const int64_t pre_at = take(4 * b.n_pre), toff_at = take(b.n_spans), tab_at = take(table_words);
  const int64_t out_at = take(b.n_out);
  std::copy(ids.begin(), ids.end(), host + ids_at);
  int64_t dec_i = 0, pre_i = 0, tab = 0;
  for (size_t i = 0; i < spans.size(); ++i) {
    const SeqSpan& s = spans[i];
    const int32_t span[4] = {static_cast<int32_t>(s.slot), static_cast<int32_t>(s.pos0),
                             static_cast<int32_t>(s.begin), static_cast<int32_t>(s.n)};
    std::copy_n(span, 4, host + spans_at + 4 * static_cast<int64_t>(i));
    if (s.n == 1) {
      std::copy_n(span, 4, host + dec_at + 4 * dec_i++);
    } else {
      std::copy_n(span, 4, host + pre_at + 4 * pre_i++);
      b.max_pre = std::max(b.max_pre, s.n);
    }
    host[toff_at + static_cast<int64_t>(i)] = static_cast<int32_t>(tab);
    const std::vector<int32_t>& table = state.pages(s.slot);
    std::copy_n(table.begin(), table_sizes[i], host + tab_at + tab);
    tab += table_sizes[i];
  }
  std::copy(out_rows.begin(), out_rows.end(), host + out_at);
  KILN_CUDA_CHECK(cudaMemcpyAsync(dev, host, static_cast<size_t>(words) * 4,
                                  cudaMemcpyHostToDevice, ctx_->stream()));
  KILN_CUDA_CHECK(cudaEventRecord(w.inputs_copied[w.turn], ctx_->stream()));
  b.ids = dev + ids_at;
  b.spans = reinterpret_cast<const cuda::Span*>(dev + spans_at);
  b.dec = reinterpret_cast<const cuda::Span*>(dev + dec_at);
  b.pre = reinterpret_cast<const cuda::Span*>(dev + pre_at);
  b.table_offsets = dev + toff_at;
  b.tables = dev + tab_at;
  b.out_rows = dev + out_at;
  return {};
}

Status CudaModel::forward(StateCache& state, const std::vector<SeqSpan>& spans,
                          const std::vector<int32_t>& ids, const std::vector<int32_t>& out_rows,
                          int64_t kda_chunk, std::vector<float>& logits) {
  if (kda_chunk != 16 && kda_chunk != 32 && kda_chunk != 64) {
    return invalid_argument("KDA chunk {} is not supported on CUDA (16, 32 or 64)", kda_chunk);
  }
  kda_chunk_ = kda_chunk;
  KILN_CHECK(state.storage().gpu == ctx_);
  ctx_->bind();
  const int64_t T = static_cast<int64_t>(ids.size());
  KILN_RETURN_IF_ERROR(reserve(T));
  Batch b;
  KILN_RETURN_IF_ERROR(stage_inputs(state, spans, ids, out_rows, b));
  CudaWork& w = *work_;
  const int64_t D = shard_.hidden_size;
  if (plan_.first_stage()) {
    cuda::embedding_lookup(*ctx_, w_->embed, b.ids, T, plan_.vocab.begin, plan_.vocab.end, w.h);
    if (plan_.vocab.size() != config_.vocab_size) all_reduce(parallel_.tp, w.h, T * D);
    dump(0, "embedding", w.h, T, D);
  } else {
    recv(parallel_.pp, w.h, T * D, plan_.pp_stage - 1);
  }
  for (int64_t i = plan_.layers.begin; i < plan_.layers.end; ++i) run_layer(i, state, b);
  if (!plan_.last_stage()) {
    send(parallel_.pp, w.h, T * D, plan_.pp_stage + 1);
  } else {
    cuda::rms_norm_rows(*ctx_, w.h, b.out_rows, b.n_out, w_->final_norm, D, shard_.rms_norm_eps,
                        w.x);
    cuda::matmul(*ctx_, w_->lm_head, w.x, D, b.n_out, w.logits_local, plan_.vocab.size());
  }
  logits_out(b, logits);
  return {};
}

void CudaModel::run_layer(int64_t i, StateCache& state, const Batch& b) {
  const CudaLayer& l = w_->layers[static_cast<size_t>(i)];
  CudaWork& w = *work_;
  const int64_t T = b.T, D = shard_.hidden_size;
  const float eps = shard_.rms_norm_eps;
  cuda::rms_norm(*ctx_, w.h, l.attn_norm, T, D, eps, w.x);
  if (shard_.is_kda(i)) {
    kda_block(i, state, b);
  } else {
    mla_block(i, state, b);
  }
  all_reduce(parallel_.tp, w.delta, T * D);  // o_proj is row-parallel
  dump(i, "attn_out", w.delta, T, D);
  cuda::add_rms_norm(*ctx_, w.h, w.delta, l.ffn_norm, T, D, eps, w.x);
  ffn_block(i, b);
  all_reduce(parallel_.tp, w.delta, T * D);  // down projections are row-parallel
  dump(i, "ffn_out", w.delta, T, D);
  cuda::add_inplace(*ctx_, w.h, w.delta, T * D);
  dump(i, "residual", w.h, T, D);
}

void CudaModel::kda_block(int64_t i, StateCache& state, const Batch& b) {
  const CudaLayer& l = w_->layers[static_cast<size_t>(i)];
  CudaWork& w = *work_;
  cuda::Context& ctx = *ctx_;
  const ModelConfig& c = shard_;
  const int64_t T = b.T, D = c.hidden_size, H = c.kda_num_heads, K = c.kda_head_dim;
  const int64_t C = H * K, r = c.kda_gate_rank;
  const int64_t idx = state_index_[static_cast<size_t>(i)];
  cuda::matmul(ctx, l.q, w.x, D, T, w.proj, 3 * C);
  cuda::matmul(ctx, l.k, w.x, D, T, w.proj + C, 3 * C);
  cuda::matmul(ctx, l.v, w.x, D, T, w.proj + 2 * C, 3 * C);
  cuda::matmul(ctx, l.f_a, w.x, D, T, w.low, r);
  cuda::matmul(ctx, l.f_b, w.low, r, T, w.gate, C);
  cuda::matmul(ctx, l.g_a, w.x, D, T, w.low, r);
  cuda::matmul(ctx, l.g_b, w.low, r, T, w.z, C);
  cuda::matmul(ctx, l.b, w.x, D, T, w.beta, H);
  const float* conv_w[3] = {l.conv_q, l.conv_k, l.conv_v};
  for (int which = 0; which < 3; ++which) {
    cuda::causal_conv1d_silu(ctx, w.proj + which * C, 3 * C, b.spans, b.n_spans, T, C,
                             conv_w[which], static_cast<int>(c.kda_conv_kernel),
                             state.conv(0, idx, which), state.kda_slot_floats(),
                             w.qkv + which * C, 3 * C);
  }
  float* q = w.proj;  // the projections are consumed: q, k, v [T][C] each go there
  float* k = w.proj + T * C;
  float* v = w.proj + 2 * T * C;
  cuda::kda_prepare(ctx, w.qkv, T, H, K, l.a_neg, l.dt_bias, 1e-6f, q, k, v, w.gate, w.beta);
  dump(i, "kda.q", q, T, C);
  dump(i, "kda.k", k, T, C);
  dump(i, "kda.v", v, T, C);
  dump(i, "kda.g", w.gate, T, C);
  dump(i, "kda.beta", w.beta, T, H);
  float* rec = state.recurrent(0, idx);
  if (b.n_dec > 0) {
    cuda::kda_recurrent(ctx, q, k, v, w.gate, w.beta, b.dec, b.n_dec, H, K, K, rec,
                        state.kda_slot_floats(), w.o);
  }
  if (b.n_pre > 0) {
    cuda::kda_chunked(ctx, q, k, v, w.gate, w.beta, b.pre, b.n_pre, b.max_pre, H, K, K,
                      kda_chunk_, rec, state.kda_slot_floats(), w.o);
  }
  dump(i, "kda.core", w.o, T, C);
  cuda::gated_rms_norm_sigmoid(ctx, w.o, w.z, l.o_norm, T * H, K, c.rms_norm_eps, w.o);
  cuda::matmul(ctx, l.o, w.o, C, T, w.delta, D);
}

void CudaModel::mla_block(int64_t i, StateCache& state, const Batch& b) {
  const CudaLayer& l = w_->layers[static_cast<size_t>(i)];
  CudaWork& w = *work_;
  cuda::Context& ctx = *ctx_;
  const ModelConfig& c = shard_;
  const int64_t T = b.T, D = c.hidden_size, H = c.mla_num_heads;
  const int64_t N = c.qk_nope_head_dim, P = c.qk_rope_head_dim, R = c.kv_lora_rank;
  const int64_t V = c.v_head_dim, L = R + P;
  const int64_t idx = state_index_[static_cast<size_t>(i)];
  cudaStream_t s = ctx.stream();
  cuda::matmul(ctx, l.mla_q, w.x, D, T, w.mq, H * (N + P));
  // Latent c (normalised) and k_pe side by side in kv [T][R+P].
  cuda::matmul(ctx, l.kv_latent, w.x, D, T, w.kvc, R);
  cuda::rms_norm(ctx, w.kvc, l.kv_a_norm, T, R, c.kv_a_norm_eps, w.kvc);
  KILN_CUDA_CHECK(cudaMemcpy2DAsync(w.kv, L * 4, w.kvc, R * 4, R * 4, T,
                                    cudaMemcpyDeviceToDevice, s));
  cuda::matmul(ctx, l.kv_pe, w.x, D, T, w.kv + R, L);
  cuda::LatentPages pages;
  pages.base = state.latent_page(0, idx);
  pages.page_stride = state.latent_page_floats();
  pages.page_tokens = state.page_tokens();
  pages.tables = b.tables;
  pages.table_offsets = b.table_offsets;
  cuda::write_latent(ctx, w.kv, b.spans, b.n_spans, T, L, pages);
  // Absorbed queries qa [T][H][R+P]: W_UKᵀ q_nope per head, then q_pe copied behind it.
  for (int64_t h = 0; h < H; ++h) {
    cuda::matmul(ctx, l.k_b[static_cast<size_t>(h)], w.mq + h * (N + P), H * (N + P), T,
                 w.qa + h * L, H * L);
  }
  KILN_CUDA_CHECK(cudaMemcpy2DAsync(w.qa + R, L * 4, w.mq + N, (N + P) * 4, P * 4, T * H,
                                    cudaMemcpyDeviceToDevice, s));
  const float scale = 1.0f / std::sqrt(static_cast<float>(N + P));
  cuda::mla_attention_absorbed(ctx, w.qa, b.spans, b.n_spans, T, H, R, P, pages, scale, w.ol);
  for (int64_t h = 0; h < H; ++h) {
    cuda::matmul(ctx, l.v_b[static_cast<size_t>(h)], w.ol + h * R, H * R, T, w.ov + h * V,
                 H * V);
  }
  dump(i, "mla.latent", w.kv, T, L);
  dump(i, "mla.heads", w.ov, T, H * V);
  cuda::matmul(ctx, l.mla_o, w.ov, H * V, T, w.delta, D);
}

void CudaModel::ffn_block(int64_t i, const Batch& b) {
  const CudaLayer& l = w_->layers[static_cast<size_t>(i)];
  CudaWork& w = *work_;
  cuda::Context& ctx = *ctx_;
  const int64_t T = b.T, D = shard_.hidden_size;
  auto mlp = [&](const CudaMlp& m, float* out) {
    const int64_t F = m.gate.rows;
    cuda::matmul(ctx, m.gate, w.x, D, T, w.g, F);
    cuda::matmul(ctx, m.up, w.x, D, T, w.u, F);
    cuda::silu_mul(ctx, w.g, w.u, T * F, w.g);
    cuda::matmul(ctx, m.down, w.g, F, T, out, D);
  };
  if (!shard_.is_moe(i)) {
    mlp(l.dense, w.delta);
    return;
  }
  const int64_t E = l.experts.count, k = shard_.experts_per_token;
  cuda::matmul(ctx, l.router, w.x, D, T, w.router, E);
  cuda::moe_route(ctx, w.router, T, E, l.router_bias, static_cast<int>(k),
                  shard_.moe_renormalize, shard_.routed_scaling_factor, w.expert_ids, w.route_w);
  cuda::moe_group(ctx, w.expert_ids, T * k, E, w.offsets, w.order);
  if (l.has_shared) {
    mlp(l.shared, w.delta);
  } else {
    KILN_CUDA_CHECK(cudaMemsetAsync(w.delta, 0, static_cast<size_t>(T * D) * 4, ctx.stream()));
  }
  // Routed experts, grouped: [T·k] assignment rows, each expert's weights read once.
  const CudaExperts& x = l.experts;
  const int64_t Fe = x.first.gate.rows;
  cuda::grouped_matmul(ctx, x.first.gate, x.gate_stride, E, w.offsets, w.order, T * k, w.x, D,
                       k, w.ge, Fe);
  cuda::grouped_matmul(ctx, x.first.up, x.up_stride, E, w.offsets, w.order, T * k, w.x, D, k,
                       w.ue, Fe);
  cuda::silu_mul(ctx, w.ge, w.ue, T * k * Fe, w.ge);
  cuda::grouped_matmul(ctx, x.first.down, x.down_stride, E, w.offsets, w.order, T * k, w.ge, Fe,
                       1, w.ye, D);
  cuda::moe_combine(ctx, w.ye, w.route_w, T, k, D, w.delta);
}

void CudaModel::logits_out(const Batch& b, std::vector<float>& logits) {
  CudaWork& w = *work_;
  cudaStream_t s = ctx_->stream();
  const int64_t vocab = config_.vocab_size, rows = b.n_out;
  logits.clear();
  if (plan_.last_stage()) {
    logits.resize(static_cast<size_t>(rows * vocab));
    Communicator* tp = parallel_.tp;
    if (tp == nullptr || plan_.tensor == 1) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(logits.data(), w.logits_local,
                                      static_cast<size_t>(rows * vocab) * 4,
                                      cudaMemcpyDeviceToHost, s));
      ctx_->synchronize();
    } else {
      // Rank-major chunks [rows][|vocab_r|] of every TP rank → columns vocab_r of each row.
      const int64_t mine = plan_.vocab.size();
      std::vector<int64_t> counts;
      for (const Range& r : group_vocab_) counts.push_back(rows * r.size());
      host_logits_.resize(static_cast<size_t>(rows * vocab));
      if (tp->device_memory()) {
        tp->all_gather_v(w.logits_local, rows * mine, w.logits_all, counts);
        KILN_CUDA_CHECK(cudaMemcpyAsync(host_logits_.data(), w.logits_all,
                                        static_cast<size_t>(rows * vocab) * 4,
                                        cudaMemcpyDeviceToHost, s));
        ctx_->synchronize();
      } else {
        host_local_.resize(static_cast<size_t>(rows * mine));
        KILN_CUDA_CHECK(cudaMemcpyAsync(host_local_.data(), w.logits_local,
                                        host_local_.size() * 4, cudaMemcpyDeviceToHost, s));
        ctx_->synchronize();
        tp->all_gather_v(host_local_.data(), rows * mine, host_logits_.data(), counts);
      }
      int64_t off = 0;
      for (const Range& r : group_vocab_) {
        for (int64_t row = 0; row < rows; ++row) {
          std::copy_n(host_logits_.data() + off + row * r.size(), r.size(),
                      logits.data() + row * vocab + r.begin);
        }
        off += rows * r.size();
      }
    }
  }
  // Pipeline: the last stage's first TP rank sends the logits to global rank 0.
  if (plan_.pipeline == 1 || plan_.tp_rank != 0) return;
  Communicator* pp = parallel_.pp;
  const int64_t n = rows * vocab;
  if (plan_.last_stage()) {
    if (pp->device_memory()) {
      KILN_CUDA_CHECK(cudaMemcpyAsync(w.logits_all, logits.data(), static_cast<size_t>(n) * 4,
                                      cudaMemcpyHostToDevice, s));
      pp->send(w.logits_all, n * 4, 0);
      ctx_->synchronize();
    } else {
      pp->send(logits.data(), n * 4, 0);
    }
  } else if (plan_.first_stage()) {
    logits.resize(static_cast<size_t>(n));
    if (pp->device_memory()) {
      pp->recv(w.logits_all, n * 4, plan_.pipeline - 1);
      KILN_CUDA_CHECK(cudaMemcpyAsync(logits.data(), w.logits_all, static_cast<size_t>(n) * 4,
                                      cudaMemcpyDeviceToHost, s));
      ctx_->synchronize();
    } else {
      pp->recv(logits.data(), n * 4, plan_.pipeline - 1);
    }
  }
}

void CudaModel::dump(int64_t layer, const char* name, const float* dev, int64_t rows,
                     int64_t cols) {
  if (hook_ == nullptr) return;
  std::vector<float> host(static_cast<size_t>(rows * cols));
  const Status copied = cuda::copy_to_host(ctx_->stream(), host.data(), dev, host.size() * 4);
  KILN_CHECK_MSG(copied.ok(), copied.to_string());
  (*hook_)(layer, name, host.data(), rows, cols);
}

float* CudaModel::to_host(const float* dev, int64_t n) {
  float* host = work_->host.as<float>();
  KILN_CHECK(n * 4 <= work_->host.bytes());
  const Status copied = cuda::copy_to_host(ctx_->stream(), host, dev, static_cast<size_t>(n) * 4);
  KILN_CHECK_MSG(copied.ok(), copied.to_string());
  return host;
}

void CudaModel::from_host(float* dev, int64_t n) {
  KILN_CUDA_CHECK(cudaMemcpyAsync(dev, work_->host.data(), static_cast<size_t>(n) * 4,
                                  cudaMemcpyHostToDevice, ctx_->stream()));
}

void CudaModel::all_reduce(Communicator* c, float* dev, int64_t n) {
  if (c == nullptr || c->size() == 1) return;
  if (c->device_memory()) {
    c->all_reduce_sum(dev, n);
    return;
  }
  c->all_reduce_sum(to_host(dev, n), n);
  from_host(dev, n);
}

void CudaModel::send(Communicator* c, const float* dev, int64_t n, int peer) {
  if (c->device_memory()) {
    c->send(dev, n * 4, peer);
    return;
  }
  c->send(to_host(dev, n), n * 4, peer);
}

void CudaModel::recv(Communicator* c, float* dev, int64_t n, int peer) {
  if (c->device_memory()) {
    c->recv(dev, n * 4, peer);
    return;
  }
  KILN_CHECK(n * 4 <= work_->host.bytes());
  ctx_->synchronize();  // an earlier host-to-device copy may still read the staging
  c->recv(work_->host.as<float>(), n * 4, peer);
  from_host(dev, n);
}

}  // namespace kiln
