// CpuBackend: the forward's ops on the host with kernels/cpu, on the thread pool a forward is
// given. Rows: the decode spans first (kDecodeSpanMax), whose tokens the matmuls take through
// the integer path over quantised weights; the LM head puts its logits back in output order.
// The workspace grows on demand (each buffer to workspace_floats of the largest batch seen).
#pragma once

#include <vector>

#include "shard/backend.h"

namespace kiln {

class CpuBackend final : public Backend {
 public:
  // weights: the rank's host views (outlive the backend).
  CpuBackend(const ModelWeights& weights, const WorkspaceShape& shape)
      : weights_(weights), shape_(shape) {}

  Device device() const override { return Device::kCpu; }
  const ModelWeights& weights() const override { return weights_; }
  int64_t weight_bytes() const override { return 0; }
  StateStorage state_storage() const override { return {}; }
  Status reserve(int64_t) override { return {}; }
  Status begin(cpu::ThreadPool& pool, StateCache& state, const Batch& batch,
               int64_t kda_chunk) override;
  float* buffer(Buf b) override;

  void matmul(const MatrixView& w, const float* x, int64_t x_stride, float* y,
              int64_t y_stride) override;
  void rms_norm(const float* x, int64_t x_stride, const FloatView& w, float eps, float* y,
                int64_t y_stride) override;
  void add_rms_norm(float* h, const float* delta, const FloatView& w, float eps,
                    float* x) override;
  void gated_rms_norm_sigmoid(const float* o, const float* z, const FloatView& w, int64_t n_rows,
                              int64_t dim, float eps, float* y) override;
  void silu_mul(const float* gate, const float* up, int64_t n, float* out) override;
  void add(float* y, const float* x, int64_t n) override;
  void fill_zero(float* y, int64_t n) override;
  void copy2d(const float* src, int64_t src_stride, float* dst, int64_t dst_stride, int64_t rows,
              int64_t cols) override;

  void causal_conv(StateCache& state, int64_t kda_index, int which, const float* x,
                   int64_t stride, int64_t C, const FloatView& w, float* y) override;
  void kda_prepare(const float* qkv, int64_t H, int64_t K, const FloatView& a_neg,
                   const FloatView& dt_bias, float* q, float* k, float* v, float* g,
                   float* beta) override;
  void kda_core(StateCache& state, int64_t kda_index, const float* q, const float* k,
                const float* v, const float* g, const float* beta, int64_t H, int64_t K,
                float* o) override;
  void mla_write_latent(StateCache& state, int64_t mla_index, const float* kv,
                        int64_t L) override;
  void mla_attention(StateCache& state, int64_t mla_index, const float* q, int64_t H, int64_t R,
                     int64_t P, float scale, float* out) override;
  void moe_experts(const MoeWeights& w, const MoeRouting& r, const float* logits, const float* x,
                   float* out) override;
  void embed(const MatrixView& table, Range vocab, float* h) override;
  void lm_head(const MatrixView& w, const FloatView& norm, float eps, const float* h,
               float* y) override;

  float* output(std::vector<float>& host, int64_t n) override;
  void to_host(const float* src, int64_t n, float* host) override;
  const float* host_view(const float* p, int64_t) override { return p; }

 private:
  cpu::ThreadPool& pool() const { return *pool_; }

  const ModelWeights& weights_;
  WorkspaceShape shape_;
  cpu::ThreadPool* pool_ = nullptr;  // the current forward's
  int64_t T_ = 0;
  int64_t kda_chunk_ = 16;
  std::vector<float> bufs_[static_cast<int>(Buf::kCount)];
  std::vector<int32_t> expert_starts_, active_experts_;  // MoE grouping: [E+1], active ids
  std::vector<const float*> pages_;                      // MLA: a sequence's page addresses
  std::vector<int32_t> head_rows_;   // indices into out_rows, decode rows first (LM head order)
  std::vector<float> head_logits_;   // LM head output in that order, when not output order
};

}  // namespace kiln
