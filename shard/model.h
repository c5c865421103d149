// KimiLinearModel: the whole decoder on one rank (kimi-linear.md §6.1). forward() runs a batch of
// sequences of different lengths at once, each with its own state slot, and returns logits for
// the rows asked for.
// Thread safety: one forward at a time (it owns the scratch workspace and uses the pool).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "shard/blocks.h"
#include "shard/checkpoint.h"
#include "shard/config.h"
#include "shard/state.h"
#include "shard/weights.h"

namespace kiln {

// One sequence's tokens in a forward.
struct SeqInput {
  int64_t slot = 0;
  std::vector<int32_t> tokens;
  bool all_logits = false;  // logits for every token, else only for the last
};

class KimiLinearModel {
 public:
  // Opens the checkpoint at `path` (HF directory or GGUF) and maps its weights.
  static StatusOr<std::unique_ptr<KimiLinearModel>> load(const std::string& path);

  const ModelConfig& config() const { return checkpoint_->config(); }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  const ModelWeights& weights() const { return weights_; }

  // Runs the sequences' tokens, appending them to their slots (positions continue from
  // state.length(slot)). logits: [rows][vocab] where rows counts, per sequence in order, either
  // all its tokens or one. Token ids must be valid (checked: InvalidArgument naming the id).
  Status forward(cpu::ThreadPool& pool, StateCache& state, const std::vector<SeqInput>& seqs,
                 std::vector<float>& logits);

  // Every tagged intermediate activation (layer, name, [rows][cols]) goes to `hook`; used to
  // diff kiln layer by layer against a reference. Names: embedding; per layer attn_out, ffn_out,
  // residual, and kda.{q,k,v,g,beta,core} or mla.{latent,heads}.
  void set_activation_hook(ActivationHook hook) { hook_ = std::move(hook); }
  void set_kda_chunk(int64_t chunk) { kda_chunk_ = chunk; }

 private:
  KimiLinearModel() = default;
  void run_layers(BatchContext& b);

  std::unique_ptr<Checkpoint> checkpoint_;
  ModelWeights weights_;
  std::vector<int64_t> state_index_;  // per layer: index among KDA layers or among MLA layers
  Workspace ws_;
  std::vector<float> h_, x_, delta_;  // residual stream, normed input, block output: [T][D]
  std::vector<int32_t> ids_;
  ActivationHook hook_;
  int64_t kda_chunk_ = 16;
};

}  // namespace kiln
