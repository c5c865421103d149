// KimiLinearModel: the whole decoder on one rank (kimi-linear.md §6.1). forward() runs a batch of
// sequences of different lengths at once, each with its own state slot, and returns logits for
// the rows asked for.
// The forward is written once against a Backend (backend.h): the CPU's or the GPU's.
// Thread safety: one forward at a time (the backend owns the workspace; the CPU uses the pool).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "shard/backend.h"
#include "shard/batch.h"
#include "shard/blocks.h"
#include "shard/checkpoint.h"
#include "shard/communicator.h"
#include "shard/parallel_layers.h"
#include "shard/partition.h"
#include "shard/config.h"
#include "shard/state.h"
#include "shard/weights.h"

namespace kiln {

// Where this rank sits in a tensor × pipeline job. The default is a single rank with the whole
// model. Communicators are owned by the caller and must outlive the model.
struct ParallelContext {
  std::optional<RankPlan> plan;  // empty = the whole model
  Communicator* tp = nullptr;    // this rank's TP group (rank = tp_rank); needed when tensor > 1
  Communicator* pp = nullptr;    // ranks with this tp_rank, one per stage (rank = stage); needed
                                 // when pipeline > 1
  LoadProgress progress;         // optional: bytes of this rank's share loaded so far
  // Where the forward runs (the backend make_backend makes). kCuda: the weights are uploaded to
  // `gpu`'s device (a context the caller owns, e.g. WorldContext's; null = the backend makes its
  // own on device 0), state caches live in device memory, and tp/pp must take device pointers
  // (Communicator::device_memory: NCCL, or an MPI group behind a StagingCommunicator).
  Device device = Device::kCpu;
  cuda::Context* gpu = nullptr;
};

class KimiLinearModel {
 public:
  ~KimiLinearModel();
  // Opens the checkpoint at `path` (HF directory or GGUF) and maps this rank's share of the
  // weights (all of them on a single rank).
  static StatusOr<std::unique_ptr<KimiLinearModel>> load(const std::string& path,
                                                         ParallelContext parallel = {});

  // The checkpoint's config (global sizes).
  const ModelConfig& config() const { return checkpoint_->config(); }
  // The config as this rank sees it: head counts and FFN sizes of its slices. Size the rank's
  // StateCache with it (new_state()).
  const ModelConfig& shard_config() const { return shard_config_; }
  const RankPlan& plan() const { return plan_; }
  // A state cache for this rank's heads and its stage's layers, on the model's device.
  // Each slot owns enough fixed pages for max_context tokens. An error only when the device
  // cannot hold it (ResourceExhausted naming the bytes).
  StatusOr<std::unique_ptr<StateCache>> new_state(int64_t n_slots, int64_t max_context) const;
  // A paged cache for the server: n_pages pages of page_tokens tokens, assigned by the caller.
  StatusOr<std::unique_ptr<StateCache>> new_paged_state(int64_t n_slots, int64_t n_pages,
                                                        int64_t page_tokens) const;
  Device device() const { return backend_->device(); }
  // Sizes the device workspace for batches of up to max_tokens tokens (a GPU model allocates it
  // here, once, so serving never allocates per step; a larger batch later grows it). A no-op on
  // the CPU, whose workspace grows on demand.
  Status reserve(int64_t max_tokens);
  // Bytes of weights resident on the model's device (0 on the CPU: they are file mappings).
  int64_t device_weight_bytes() const;
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  const ModelWeights& weights() const { return weights_; }  // host views

  // Runs one batch (pool: the CPU backend's threads; unused on a device): each span's resets and new pages are applied to its slot, then its tokens are
  // appended to the slot (positions continue from state.length(slot)). logits: [rows][vocab],
  // rows per span in order: all its tokens (all_logits) or its last one. InvalidArgument, before
  // the state is touched, for a slot, token id or page id out of range or a span outside the
  // batch; after the pages are applied, for a slot whose pages cannot hold its tokens.
  // In a parallel job every rank calls forward with the same batch; the logits arrive on
  // global rank 0 (stage 0, tp_rank 0) and on the last stage's TP group; elsewhere they are empty.
  Status forward(cpu::ThreadPool& pool, StateCache& state, const Batch& batch,
                 std::vector<float>& logits);

  // Every tagged intermediate activation (layer, name, [rows][cols]) goes to `hook`; used to
  // diff kiln layer by layer against a reference. Names: embedding; per layer attn_out, ffn_out,
  // residual, and kda.{q,k,v,g,beta,core} or mla.{latent,heads}.
  void set_activation_hook(ActivationHook hook) { hook_ = std::move(hook); }
  void set_kda_chunk(int64_t chunk) { kda_chunk_ = chunk; }

 private:
  KimiLinearModel();
  void run_layers(StateCache& state);

  std::unique_ptr<Checkpoint> checkpoint_;
  ModelConfig shard_config_;
  RankPlan plan_;
  ParallelContext parallel_;
  ModelWeights weights_;                 // host views; the backend's copy may be on a device
  std::unique_ptr<Backend> backend_;
  VocabParallelEmbedding embedding_;
  ParallelLMHead lm_head_;
  PipelineLink pipeline_;
  RowParallelLinear row_parallel_;
  std::vector<int64_t> state_index_;  // per layer: index among KDA layers or among MLA layers
  ActivationHook hook_;
  int64_t kda_chunk_ = 16;
};

}  // namespace kiln
