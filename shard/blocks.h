// The Kimi-Linear blocks (KDA, MLA, dense MLP, MoE) over a batch of sequences whose tokens are
// concatenated row by row, written once against Backend. Each block reads x [T][D] (already
// normalised) and writes out [T][D], summed over the TP group by its row-parallel output
// projection. Per-sequence work (conv, recurrence, attention) uses each sequence's state slot.
#pragma once

#include <cstdint>
#include <functional>

#include "shard/backend.h"
#include "shard/config.h"
#include "shard/parallel_layers.h"
#include "shard/state.h"
#include "shard/weights.h"

namespace kiln {

// Called with every tagged intermediate activation when set (layer, name, [rows][cols] on the
// host).
using ActivationHook = std::function<void(int64_t layer, const char* name, const float* data,
                                          int64_t rows, int64_t cols)>;

// What a block runs with: the backend (whose current batch it processes), the state, the TP
// group's row-parallel reduction and the activation hook.
struct BlockContext {
  Backend& be;
  StateCache& state;
  const RowParallelLinear& row_parallel;
  const ActivationHook* hook = nullptr;
  int64_t layer = 0;  // the layer being run (for activation tags)

  int64_t n_tokens() const { return be.rows().n_tokens(); }
  // Passes a tagged activation [rows][cols] (backend memory) to the hook, if one is set.
  void dump(const char* name, const float* data, int64_t rows, int64_t cols) const {
    if (hook != nullptr) (*hook)(layer, name, be.host_view(data, rows * cols), rows, cols);
  }
};

void kda_forward(const ModelConfig& c, const KdaWeights& w, int64_t kda_index,
                 const BlockContext& b, const float* x, float* out);
void mla_forward(const ModelConfig& c, const MlaWeights& w, int64_t mla_index,
                 const BlockContext& b, const float* x, float* out);
// The layer's dense MLP or MoE (c.is_moe(b.layer)).
void ffn_forward(const ModelConfig& c, const LayerWeights& w, const BlockContext& b,
                 const float* x, float* out);

}  // namespace kiln
