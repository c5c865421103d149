// CudaModel: the decoder's forward pass on one rank's GPU, the Device::kCuda half of
// KimiLinearModel (same inputs, same logits, same state semantics). The rank's weights are
// uploaded once into one device allocation (cuda_weights.h); the workspace is sized up front by
// reserve(); a forward copies its inputs (token ids, spans, block tables) in one transfer, runs
// every op on the context's stream (kernels/cuda/ops.h), reduces over the TP group with device
// collectives (NCCL) or through pinned host memory (an MPI communicator), and synchronises once,
// to copy the logits out.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/base/status.h"
#include "shard/blocks.h"
#include "shard/model.h"

namespace kiln {

struct CudaWeights;
struct CudaWork;

class CudaModel {
 public:
  // config: global sizes; shard_config: this rank's head counts and FFN slices; state_index: per
  // layer, its index among the rank's KDA or MLA layers (−1 when not on this stage);
  // group_vocab: the vocab range of every rank of the TP group. Uses parallel.gpu (or a context
  // of its own on device 0 when null) and parallel.tp/pp.
  static StatusOr<std::unique_ptr<CudaModel>> create(const ModelConfig& config,
                                                     const ModelConfig& shard_config,
                                                     const ModelWeights& weights,
                                                     const RankPlan& plan,
                                                     const std::vector<int64_t>& state_index,
                                                     const std::vector<Range>& group_vocab,
                                                     const ParallelContext& parallel);
  ~CudaModel();
  CudaModel(const CudaModel&) = delete;
  CudaModel& operator=(const CudaModel&) = delete;

  cuda::Context& context() const { return *ctx_; }
  int64_t weight_bytes() const;
  // Sizes the workspace for batches of up to max_tokens tokens (allocates; call before serving).
  Status reserve(int64_t max_tokens);
  // Every tagged activation is copied to the host and passed to `hook` (slow: one
  // synchronisation per tag); null turns it off.
  void set_activation_hook(const ActivationHook* hook) { hook_ = hook; }

  // spans/ids: the batch as KimiLinearModel::forward built it (validated); out_rows: the batch
  // rows whose logits are returned, in order. The state must live on this model's device.
  // logits: [out_rows][vocab] on global rank 0 and the last stage's TP group; else empty.
  // Lengths in `state` are the caller's to advance.
  Status forward(StateCache& state, const std::vector<SeqSpan>& spans,
                 const std::vector<int32_t>& ids, const std::vector<int32_t>& out_rows,
                 int64_t kda_chunk, std::vector<float>& logits);

 private:
  CudaModel();
  struct Batch;  // one forward's device-side inputs (cuda_model.cpp)

  Status stage_inputs(StateCache& state, const std::vector<SeqSpan>& spans,
                      const std::vector<int32_t>& ids, const std::vector<int32_t>& out_rows,
                      Batch& b);
  void run_layer(int64_t layer, StateCache& state, const Batch& b);
  void kda_block(int64_t layer, StateCache& state, const Batch& b);
  void mla_block(int64_t layer, StateCache& state, const Batch& b);
  void ffn_block(int64_t layer, const Batch& b);
  void logits_out(const Batch& b, std::vector<float>& logits);
  void dump(int64_t layer, const char* name, const float* dev, int64_t rows, int64_t cols);

  // The pinned staging buffer: to_host copies n floats there and waits for them; from_host
  // enqueues the copy back to dev.
  float* to_host(const float* dev, int64_t n);
  void from_host(float* dev, int64_t n);
  // Collectives on device buffers: direct for a device communicator, else staged through the
  // pinned host buffer.
  void all_reduce(Communicator* c, float* dev, int64_t n);
  void send(Communicator* c, const float* dev, int64_t n, int peer);
  void recv(Communicator* c, float* dev, int64_t n, int peer);

  ModelConfig config_, shard_;
  RankPlan plan_;
  ParallelContext parallel_;
  std::vector<int64_t> state_index_;
  std::vector<Range> group_vocab_;
  std::unique_ptr<cuda::Context> owned_ctx_;
  cuda::Context* ctx_ = nullptr;
  std::unique_ptr<CudaWeights> w_;
  std::unique_ptr<CudaWork> work_;
  const ActivationHook* hook_ = nullptr;
  int64_t kda_chunk_ = 16;
  std::vector<float> host_logits_;  // gathered logits before reordering (TP)
  std::vector<float> host_local_;   // this rank's logit columns, for a host TP communicator
};

}  // namespace kiln
