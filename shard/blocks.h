// The Kimi-Linear blocks (KDA, MLA, dense MLP, MoE) over a batch of sequences whose tokens are
// concatenated row by row. Each block reads x [T][D] (already normalised) and writes out [T][D].
// Per-sequence work (conv, recurrence, attention) uses each sequence's own state slot.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "kernels/cpu/thread_pool.h"
#include "shard/config.h"
#include "shard/state.h"
#include "shard/weights.h"

namespace kiln {

// One sequence's part of a batch: rows [begin, begin + n) of the batch, positions
// [pos0, pos0 + n) of the sequence held in state slot `slot`.
struct SeqSpan {
  int64_t slot = 0;
  int64_t pos0 = 0;
  int64_t begin = 0;
  int64_t n = 0;
};

// Scratch buffers shared by all blocks, grown on demand and then reused (no allocation in the
// steady state). Each id is one buffer; blocks document which ids they use.
class Workspace {
 public:
  enum Id { kA, kB, kC, kD, kE, kF, kG, kH, kI, kJ, kCount };
  float* get(Id id, int64_t n_floats) {
    auto& v = bufs_[id];
    if (static_cast<int64_t>(v.size()) < n_floats) v.resize(static_cast<size_t>(n_floats));
    return v.data();
  }
  std::vector<int32_t>& ints(int i) { return ints_[i]; }

 private:
  std::vector<float> bufs_[kCount];
  std::vector<int32_t> ints_[4];
};

// Called with every tagged intermediate activation when set (layer, name, [rows][cols]).
using ActivationHook =
    std::function<void(int64_t layer, const char* name, const float* data, int64_t rows, int64_t cols)>;

// Spans of at most this many tokens (decode steps, short prompts) are decode spans: the forward
// places their rows first, and the matmuls take those rows through the integer path over
// quantised weights (cpu::matmul's int8_tokens), so each token's arithmetic depends only on its
// own span, never on what else is in the batch.
inline constexpr int64_t kDecodeSpanMax = 4;

struct BatchContext {
  cpu::ThreadPool& pool;
  StateCache& state;
  const std::vector<SeqSpan>& seqs;
  int64_t n_tokens;
  int64_t n_decode;  // rows [0, n_decode) belong to decode spans
  Workspace& ws;
  const ActivationHook* hook = nullptr;
  // KDA prefill chunk size; spans of one token use the recurrent step.
  int64_t kda_chunk = 16;
  int64_t layer = 0;  // the layer being run (for activation tags)

  // Passes a tagged activation [rows][cols] to the hook, if one is set.
  void dump(const char* name, const float* data, int64_t rows, int64_t cols) const {
    if (hook != nullptr) (*hook)(layer, name, data, rows, cols);
  }
};

void kda_forward(const ModelConfig& c, const KdaWeights& w, int64_t kda_index,
                 const BatchContext& b, const float* x, float* out);
void mla_forward(const ModelConfig& c, const MlaWeights& w, int64_t mla_index,
                 const BatchContext& b, const float* x, float* out);
// SwiGLU MLP over n rows, the first n_decode of them decode rows:
// out = down(SiLU(gate x) ⊙ up x). Uses workspace ids kI, kJ.
void mlp_forward(const MlpWeights& w, cpu::ThreadPool& pool, Workspace& ws, const float* x,
                 int64_t n, int64_t n_decode, float* out);
void moe_forward(const ModelConfig& c, const MoeWeights& w, const BatchContext& b, const float* x,
                 float* out);

}  // namespace kiln
