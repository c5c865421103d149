// The CUDA backend: each Backend op as kernels/cuda launches on the rank's stream, over device
// buffers. Ops over sequences take the batch's spans from the device copy begin() made.
#include "shard/cuda/cuda_backend.h"

#include <algorithm>
#include <array>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#include "shard/cuda/device_weights.h"

namespace kiln {
namespace {

constexpr int kBufs = static_cast<int>(Buf::kCount);

// One forward's inputs in device memory (pointers into CudaBackend's input buffer).
struct DeviceBatch {
  int64_t n_spans = 0, n_dec = 0, n_pre = 0, max_pre = 0, n_out = 0;
  const int32_t* ids = nullptr;
  const cuda::Span* spans = nullptr;  // all
  const cuda::Span* dec = nullptr;    // one-token spans: the recurrent KDA step
  const cuda::Span* pre = nullptr;    // longer spans: chunked KDA
  const int32_t* table_offsets = nullptr;
  const int32_t* tables = nullptr;
  const int32_t* out_rows = nullptr;
};

// State caches in the context's device memory; zeroing is queued on its stream, so reset slots
// are zero before the next forward's kernels run.
class ContextMemory final : public DeviceMemory {
 public:
  explicit ContextMemory(const cuda::Context& ctx) : ctx_(ctx) {}
  StatusOr<std::shared_ptr<void>> allocate(int64_t bytes, const std::string& what) const override {
    KILN_ASSIGN_OR_RETURN(cuda::DeviceBuffer buf, cuda::DeviceBuffer::allocate(bytes, what));
    auto owner = std::make_shared<cuda::DeviceBuffer>(std::move(buf));
    return std::shared_ptr<void>(owner, owner->data());
  }
  void zero(void* p, int64_t bytes) const override {
    ctx_.bind();  // the calling thread (e.g. the server's engine) may not have it current
    KILN_CUDA_CHECK(cudaMemsetAsync(p, 0, static_cast<size_t>(bytes), ctx_.stream()));
  }
  void synchronize() const override { ctx_.synchronize(); }

 private:
  const cuda::Context& ctx_;
};

class CudaBackend final : public Backend {
 public:
  ~CudaBackend() override {
    if (ctx_ != nullptr) ctx_->synchronize();
    for (cudaEvent_t e : inputs_copied_) {
      if (e != nullptr) cudaEventDestroy(e);
    }
  }

  static StatusOr<std::unique_ptr<Backend>> create(const BackendOptions& o) {
    std::unique_ptr<CudaBackend> b(new CudaBackend());
    b->shape_ = o.shape;
    if (o.gpu != nullptr) {
      b->ctx_ = o.gpu;
    } else {
      KILN_ASSIGN_OR_RETURN(b->owned_ctx_, cuda::Context::create(0));
      b->ctx_ = b->owned_ctx_.get();
    }
    b->ctx_->bind();
    b->memory_ = std::make_shared<ContextMemory>(*b->ctx_);
    KILN_ASSIGN_OR_RETURN(b->w_, DeviceWeights::upload(*b->ctx_, o.shape.shard, *o.weights));
    for (cudaEvent_t& e : b->inputs_copied_) {
      KILN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    }
    KILN_RETURN_IF_ERROR(b->reserve(256));
    return std::unique_ptr<Backend>(std::move(b));
  }

  Device device() const override { return Device::kCuda; }
  const ModelWeights& weights() const override { return w_->weights; }
  int64_t weight_bytes() const override { return w_->storage.bytes(); }
  StateStorage state_storage() const override { return {Device::kCuda, memory_}; }
  Status reserve(int64_t max_tokens) override;
  Status begin(cpu::ThreadPool& pool, StateCache& state, const Batch& batch,
               int64_t kda_chunk) override;
  float* buffer(Buf b) override { return bufs_[static_cast<int>(b)]; }

  void matmul(const MatrixView& w, const float* x, int64_t x_stride, float* y,
              int64_t y_stride) override {
    cuda::matmul(*ctx_, device_matrix(w), x, x_stride, T_, y, y_stride);
  }
  void rms_norm(const float* x, int64_t x_stride, const FloatView& w, float eps, float* y,
                int64_t y_stride) override {
    cuda::rms_norm_strided(*ctx_, x, x_stride, w.data(), T_, w.size(), eps, y, y_stride);
  }
  void add_rms_norm(float* h, const float* delta, const FloatView& w, float eps,
                    float* x) override {
    cuda::add_rms_norm(*ctx_, h, delta, w.data(), T_, w.size(), eps, x);
  }
  void gated_rms_norm_sigmoid(const float* o, const float* z, const FloatView& w, int64_t n_rows,
                              int64_t dim, float eps, float* y) override {
    cuda::gated_rms_norm_sigmoid(*ctx_, o, z, w.data(), n_rows, dim, eps, y);
  }
  void silu_mul(const float* gate, const float* up, int64_t n, float* out) override {
    cuda::silu_mul(*ctx_, gate, up, n, out);
  }
  void add(float* y, const float* x, int64_t n) override { cuda::add_inplace(*ctx_, y, x, n); }
  void fill_zero(float* y, int64_t n) override {
    KILN_CUDA_CHECK(cudaMemsetAsync(y, 0, static_cast<size_t>(n) * 4, ctx_->stream()));
  }
  void copy2d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
              int64_t cols) override {
    if (rows == 0 || cols == 0) return;
    KILN_CUDA_CHECK(cudaMemcpy2DAsync(dst, dst_stride * 4, src, src_stride * 4, cols * 4, rows,
                                      cudaMemcpyDeviceToDevice, ctx_->stream()));
  }

  void causal_conv(StateCache& state, int64_t kda_index, int which, const float* x,
                   int64_t stride, int64_t C, const FloatView& w, float* y) override {
    cuda::causal_conv1d_silu(*ctx_, x + which * C, stride, b_.spans, b_.n_spans, T_, C, w.data(),
                             static_cast<int>(w.size() / C), state.conv(0, kda_index, which),
                             state.kda_slot_floats(), y + which * C, stride);
  }
  void kda_prepare(const float* qkv, int64_t H, int64_t K, const FloatView& a_neg,
                   const FloatView& dt_bias, float* q, float* k, float* v, float* g,
                   float* beta) override {
    cuda::kda_prepare(*ctx_, qkv, T_, H, K, a_neg.data(), dt_bias.data(), 1e-6f, q, k, v, g,
                      beta);
  }
  void kda_core(StateCache& state, int64_t kda_index, const float* q, const float* k,
                const float* v, const float* g, const float* beta, int64_t H, int64_t K,
                float* o) override;
  void mla_write_latent(StateCache& state, int64_t mla_index, const float* kv,
                        int64_t L) override {
    cuda::write_latent(*ctx_, kv, b_.spans, b_.n_spans, T_, L, pages(state, mla_index));
  }
  void mla_attention(StateCache& state, int64_t mla_index, const float* q, int64_t H, int64_t R,
                     int64_t P, float scale, float* out) override {
    cuda::mla_attention_absorbed(*ctx_, q, b_.spans, b_.n_spans, T_, H, R, P,
                                 pages(state, mla_index), scale, out);
  }
  void moe_experts(const MoeWeights& w, const MoeRouting& r, const float* logits, const float* x,
                   float* out) override;
  void embed(const MatrixView& table, Range vocab, float* h) override {
    cuda::embedding_lookup(*ctx_, device_matrix(table), b_.ids, T_, vocab.begin, vocab.end, h);
  }
  void lm_head(const MatrixView& w, const FloatView& norm, float eps, const float* h,
               float* y) override {
    float* x = buffer(Buf::kNormed);
    cuda::rms_norm_rows(*ctx_, h, b_.out_rows, b_.n_out, norm.data(), norm.size(), eps, x);
    cuda::matmul(*ctx_, device_matrix(w), x, norm.size(), b_.n_out, y, w.rows);
  }

  float* output(std::vector<float>& host, int64_t n) override {
    host.resize(static_cast<size_t>(n));
    return buffer(Buf::kLogits);
  }
  void to_host(const float* src, int64_t n, float* host) override {
    const Status copied = cuda::copy_to_host(ctx_->stream(), host, src, static_cast<size_t>(n) * 4);
    KILN_CHECK_MSG(copied.ok(), copied.to_string());
  }
  const float* host_view(const float* p, int64_t n) override {
    host_view_.resize(static_cast<size_t>(n));
    to_host(p, n, host_view_.data());
    return host_view_.data();
  }

 private:
  CudaBackend() = default;
  Status stage_inputs(const StateCache& state);
  cuda::LatentPages pages(StateCache& state, int64_t mla_index) const {
    cuda::LatentPages p;
    p.base = state.latent_page(0, mla_index);
    p.page_stride = state.latent_page_floats();
    p.page_tokens = state.page_tokens();
    p.tables = b_.tables;
    p.table_offsets = b_.table_offsets;
    return p;
  }

  WorkspaceShape shape_;
  std::unique_ptr<cuda::Context> owned_ctx_;
  cuda::Context* ctx_ = nullptr;
  std::shared_ptr<const DeviceMemory> memory_;  // state caches
  std::unique_ptr<DeviceWeights> w_;
  int64_t max_tokens_ = 0;
  cuda::DeviceBuffer workspace_;
  std::array<float*, kBufs> bufs_{};
  int64_t T_ = 0;
  int64_t kda_chunk_ = 16;
  DeviceBatch b_;
  // The inputs' device buffer and two pinned staging buffers used in turn; each may be
  // rewritten once its event has passed (the copy of the forward before last), so a forward
  // never waits on the one before it.
  int64_t input_capacity_ = 0;  // int32 words
  cuda::DeviceBuffer inputs_;
  cuda::PinnedBuffer staging_[2];
  cudaEvent_t inputs_copied_[2] = {nullptr, nullptr};
  int turn_ = 0;
  std::vector<int32_t> table_sizes_;  // per span, pages its attention reads
  std::vector<float> host_view_;
};

Status CudaBackend::reserve(int64_t max_tokens) {
  if (max_tokens <= max_tokens_) return {};
  const int64_t T = max_tokens;
  // Carve one allocation; every buffer starts on a 256-byte boundary.
  auto padded = [](int64_t floats) { return (floats * 4 + 255) / 256 * 256; };
  int64_t total = 0;
  for (int i = 0; i < kBufs; ++i) total += padded(workspace_floats(shape_, Buf(i), T));
  ctx_->synchronize();  // the old workspace may still be in use
  workspace_ = cuda::DeviceBuffer();
  KILN_ASSIGN_OR_RETURN(workspace_, cuda::DeviceBuffer::allocate(
                                        total, fmt::format("the workspace for {} tokens", T)));
  auto* p = workspace_.as<std::byte>();
  for (int i = 0; i < kBufs; ++i) {
    bufs_[static_cast<size_t>(i)] = reinterpret_cast<float*>(p);
    p += padded(workspace_floats(shape_, Buf(i), T));
  }
  KILN_RETURN_IF_ERROR(ctx_->reserve_scratch(w_->max_matmul_scratch(T)));
  max_tokens_ = T;
  return {};
}

Status CudaBackend::begin(cpu::ThreadPool&, StateCache& state, const Batch& batch,
                          int64_t kda_chunk) {
  if (kda_chunk != 16 && kda_chunk != 32 && kda_chunk != 64) {
    return invalid_argument("KDA chunk {} is not supported on CUDA (16, 32 or 64)", kda_chunk);
  }
  kda_chunk_ = kda_chunk;
  KILN_CHECK(state.storage().memory == memory_);
  ctx_->bind();
  arrange_batch(batch, state, /*decode_first=*/false, rows_);
  T_ = rows_.n_tokens();
  KILN_RETURN_IF_ERROR(reserve(T_));
  return stage_inputs(state);
}

Status CudaBackend::stage_inputs(const StateCache& state) {
  const std::vector<SeqSpan>& spans = rows_.spans;
  const int64_t pt = state.page_tokens();
  table_sizes_.clear();
  int64_t table_words = 0;
  b_ = DeviceBatch{};
  for (const SeqSpan& s : spans) {
    const int64_t need = (s.pos0 + s.n + pt - 1) / pt;
    table_sizes_.push_back(static_cast<int32_t>(need));
    table_words += need;
    (s.n == 1 ? b_.n_dec : b_.n_pre) += 1;
  }
  b_.n_spans = static_cast<int64_t>(spans.size());
  b_.n_out = static_cast<int64_t>(rows_.out_rows.size());
  // Layout (int32 words): ids | spans | decode spans | prefill spans | table offsets | tables |
  // output rows; each Span is 4 words.
  const int64_t words = T_ + 4 * 2 * b_.n_spans + b_.n_spans + table_words + b_.n_out;
  if (words > input_capacity_) {
    ctx_->synchronize();
    const int64_t cap = std::max<int64_t>(words, 2 * input_capacity_);
    inputs_ = cuda::DeviceBuffer();
    staging_[0] = cuda::PinnedBuffer();
    staging_[1] = cuda::PinnedBuffer();
    KILN_ASSIGN_OR_RETURN(inputs_, cuda::DeviceBuffer::allocate(cap * 4, "forward inputs"));
    for (cuda::PinnedBuffer& p : staging_) {
      KILN_ASSIGN_OR_RETURN(p, cuda::PinnedBuffer::allocate(cap * 4, "forward inputs"));
    }
    input_capacity_ = cap;
  }
  turn_ ^= 1;
  KILN_CUDA_CHECK(cudaEventSynchronize(inputs_copied_[turn_]));  // its last copy has read it
  int32_t* host = staging_[turn_].as<int32_t>();
  int32_t* dev = inputs_.as<int32_t>();
  int64_t at = 0;
  auto take = [&](int64_t n) {
    const int64_t start = at;
    at += n;
    return start;
  };
  const int64_t ids_at = take(T_), spans_at = take(4 * b_.n_spans), dec_at = take(4 * b_.n_dec);
  const int64_t pre_at = take(4 * b_.n_pre), toff_at = take(b_.n_spans);
  const int64_t tab_at = take(table_words), out_at = take(b_.n_out);
  std::copy(rows_.ids.begin(), rows_.ids.end(), host + ids_at);
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
      b_.max_pre = std::max(b_.max_pre, s.n);
    }
    host[toff_at + static_cast<int64_t>(i)] = static_cast<int32_t>(tab);
    const std::vector<int32_t>& table = state.pages(s.slot);
    std::copy_n(table.begin(), table_sizes_[i], host + tab_at + tab);
    tab += table_sizes_[i];
  }
  std::copy(rows_.out_rows.begin(), rows_.out_rows.end(), host + out_at);
  KILN_CUDA_CHECK(cudaMemcpyAsync(dev, host, static_cast<size_t>(words) * 4,
                                  cudaMemcpyHostToDevice, ctx_->stream()));
  KILN_CUDA_CHECK(cudaEventRecord(inputs_copied_[turn_], ctx_->stream()));
  b_.ids = dev + ids_at;
  b_.spans = reinterpret_cast<const cuda::Span*>(dev + spans_at);
  b_.dec = reinterpret_cast<const cuda::Span*>(dev + dec_at);
  b_.pre = reinterpret_cast<const cuda::Span*>(dev + pre_at);
  b_.table_offsets = dev + toff_at;
  b_.tables = dev + tab_at;
  b_.out_rows = dev + out_at;
  return {};
}

void CudaBackend::kda_core(StateCache& state, int64_t kda_index, const float* q, const float* k,
                           const float* v, const float* g, const float* beta, int64_t H,
                           int64_t K, float* o) {
  float* rec = state.recurrent(0, kda_index);
  if (b_.n_dec > 0) {
    cuda::kda_recurrent(*ctx_, q, k, v, g, beta, b_.dec, b_.n_dec, H, K, K, rec,
                        state.kda_slot_floats(), o);
  }
  if (b_.n_pre > 0) {
    cuda::kda_chunked(*ctx_, q, k, v, g, beta, b_.pre, b_.n_pre, b_.max_pre, H, K, K, kda_chunk_,
                      rec, state.kda_slot_floats(), o);
  }
}

void CudaBackend::moe_experts(const MoeWeights& w, const MoeRouting& r, const float* logits,
                              const float* x, float* out) {
  const int64_t T = T_, E = r.n_experts, k = r.k, D = shape_.shard.hidden_size;
  float* route_w = buffer(Buf::kMoeWeights);
  int32_t* ids = int_buffer(Buf::kMoeIds);
  int32_t* order = int_buffer(Buf::kMoeOrder);
  int32_t* offsets = int_buffer(Buf::kMoeOffsets);
  float* ge = buffer(Buf::kMoeGate);
  float* ue = buffer(Buf::kMoeUp);
  float* ye = buffer(Buf::kMoeRouted);
  cuda::moe_route(*ctx_, logits, T, E, w.bias.empty() ? nullptr : w.bias.data(), r.k,
                  r.renormalize, r.scale, ids, route_w);
  cuda::moe_group(*ctx_, ids, T * k, E, offsets, order);
  // [T·k] assignment rows, each expert's weights read once (at expert 0's + e · stride).
  const MlpWeights& e0 = w.experts.front();
  const int64_t Fe = e0.gate.rows;
  cuda::grouped_matmul(*ctx_, device_matrix(e0.gate), expert_stride(w.experts, &MlpWeights::gate),
                       E, offsets, order, T * k, x, D, k, ge, Fe);
  cuda::grouped_matmul(*ctx_, device_matrix(e0.up), expert_stride(w.experts, &MlpWeights::up), E,
                       offsets, order, T * k, x, D, k, ue, Fe);
  cuda::silu_mul(*ctx_, ge, ue, T * k * Fe, ge);
  cuda::grouped_matmul(*ctx_, device_matrix(e0.down), expert_stride(w.experts, &MlpWeights::down),
                       E, offsets, order, T * k, ge, Fe, 1, ye, D);
  cuda::moe_combine(*ctx_, ye, route_w, T, k, D, out);
}

}  // namespace

StatusOr<std::unique_ptr<Backend>> make_cuda_backend(const BackendOptions& o) {
  return CudaBackend::create(o);
}

}  // namespace kiln
