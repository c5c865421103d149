// The tensor table: every tensor of a Kimi-Linear checkpoint, written once. Per tensor: its HF and
// GGUF names, its global shape from the config, its dtype class, how tensor parallelism splits it
// and where it lives in ModelWeights. The loader, the partition byte estimates, make-model's
// writer, bench's bytes per token and the GPU upload iterate it; no other code names a tensor.
// Entries are in file order (make-model writes them in this order).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kernels/base/dtype.h"
#include "shard/config.h"
#include "shard/partition.h"
#include "shard/weights.h"

namespace kiln {

// The blocks of the model in file order. Layer blocks are present in a layer as the config says
// (block_present); the embedding comes before the layers, the final norm and lm_head after.
enum class Block {
  kEmbedding,
  kAttnNorm, kKda, kMla, kFfnNorm, kDense, kMoeGate, kExperts, kSharedExpert,
  kFinalNorm, kLmHead,
};
bool block_present(Block b, const ModelConfig& c, int64_t layer);

// A size taken from the config.
enum class Size {
  kOne, kHidden, kVocab,
  kKdaHeads, kKdaHeadDim, kKdaChannels /* H·K */, kKdaRank, kKdaTaps,
  kMlaHeads, kMlaQ /* H·(N+P) */, kMlaQHeadDim /* N+P */, kMlaLatent /* R+P */, kKvLoraRank,
  kNope, kVHeadDim, kMlaKvB /* H·(N+V) */, kMlaKvHeadDim /* N+V */, kMlaO /* H·V */,
  kFfn, kExperts, kExpertFfn, kSharedFfn,
};
int64_t size_of(const ModelConfig& c, Size s);

enum class Kind {
  kMatrix,  // in the file's dtype
  kRouter,  // a matrix kept f32 when the file's dtype is a block type (llama.cpp's ffn_gate_inp)
  kFloats,  // a small vector, f32 in files, widened to f32 at load
};
// Shapes in the files of a [rows][cols] tensor (a vector: cols = 1).
enum class Layout {
  kMatrix,      // HF [rows, cols]; GGUF {cols, rows} ({cols, rows, count} when stacked)
  kVector,      // [rows] in both
  kConv,        // HF [rows, 1, cols]; GGUF {cols, 1, rows, 1}
  kHeadVector,  // HF [1, 1, rows, 1]; GGUF {1, rows, 1, 1}
};
// How a rank's share is cut by its range of `part` (× `unit` elements per part).
enum class Cut {
  kReplicated,  // every rank holds it whole
  kColumn,      // rows of the range (column-parallel; a vector's elements)
  kRow,         // columns of the range (row-parallel)
  kStack,       // the range's entries of a per-head stack
};
// The RankPlan range a tensor is cut by.
enum class Part { kNone, kKdaHeads, kMlaHeads, kDenseFfn, kExpertFfn, kSharedFfn, kVocab };
enum class Stack {
  kNone,
  kExperts,  // one tensor per routed expert in HF files, stacked {cols, rows, E} in GGUF
  kHeads,    // stacked per MLA head {cols, rows, H} (GGUF only)
};
// The cases that are not a plain tensor.
enum class Special {
  kNone,
  kNegExp,    // HF stores A_log, GGUF −exp(A_log); loaded as −exp(A_log)
  kOptional,  // may be absent (e_score_correction_bias)
  kKvB,       // HF kv_b_proj / legacy GGUF attn_kv_b [H·(N+V)][R]: the source of kKB and kVB
  kKB,        // W_UK per head [R][N] (transposed kv_b rows), GGUF attn_k_b
  kVB,        // W_UV per head [V][R], GGUF attn_v_b
  kTiedHead,  // lm_head: the embedding when tied (or when a GGUF file has no output tensor)
};
// llama.cpp's Q4_K_M choice of more bits (make-model's q4_k_m mix).
enum class Mix { kNone, kAttnV, kFfnDown, kOutput };
// The values make-model draws.
enum class Init { kMatrix /* N(0, 1/cols) */, kEmbedding /* N(0, 1) */, kNorm, kConv, kBias,
                  kDtBias, kALog };

// Where a tensor lives in ModelWeights: `index` is the expert or head of a stacked tensor.
using MatrixSlot = MatrixView& (*)(ModelWeights& w, int64_t layer, int64_t index);
using FloatSlot = FloatView& (*)(ModelWeights& w, int64_t layer);

struct TensorSpec {
  Block block;
  const char* hf;    // name pattern: {} = layer, then expert; nullptr = not in HF files
  const char* gguf;  // name pattern: {} = layer; nullptr = not in GGUF files
  Kind kind = Kind::kMatrix;
  Layout layout = Layout::kMatrix;
  Size rows = Size::kOne, cols = Size::kOne;  // global; per expert / head when stacked
  Stack stack = Stack::kNone;
  Cut cut = Cut::kReplicated;
  Part part = Part::kNone;
  Size unit = Size::kOne;  // rows (kColumn) or columns (kRow) per unit of `part`
  Special special = Special::kNone;
  Mix mix = Mix::kNone;
  Init init = Init::kMatrix;
  MatrixSlot matrix = nullptr;  // exactly one slot, or none for kKvB (a source only)
  FloatSlot floats = nullptr;

  std::string hf_name(int64_t layer, int64_t expert = 0) const;
  std::string gguf_name(int64_t layer) const;
  std::string name(bool in_hf, int64_t layer, int64_t expert = 0) const {
    return in_hf ? hf_name(layer, expert) : gguf_name(layer);
  }
  // Shapes in the files (one expert's in HF when stacked per expert) and the shape the loader
  // checks (squeezed comparison; [count][rows][cols] when stacked).
  std::vector<int64_t> hf_shape(const ModelConfig& c) const;
  std::vector<int64_t> gguf_shape(const ModelConfig& c) const;
  std::vector<int64_t> expected_shape(const ModelConfig& c) const;
  int64_t stack_count(const ModelConfig& c) const;  // E, H or 1
  bool held() const { return matrix != nullptr || floats != nullptr; }
};

// All entries, file order.
std::span<const TensorSpec> tensor_table();
// The entry of a special case (kKvB, kKB, kVB, kNegExp...) or of a model-level block.
const TensorSpec& tensor_with(Special s);
const TensorSpec& tensor_of(Block b);

// Visits the entries present in layer `layer` by the config, in file order.
void for_each_layer_tensor(const ModelConfig& c, int64_t layer,
                           const std::function<void(const TensorSpec&)>& fn);
// Visits the model-level entries and those of layers `layers`, in file order (layer −1 for the
// model-level ones).
void for_each_tensor(const ModelConfig& c, Range layers,
                     const std::function<void(const TensorSpec&, int64_t layer)>& fn);

// The file dtype of `s` in a model of dtype `t` (before make-model's q4_k_m mix and fallbacks).
DType tensor_dtype(const TensorSpec& s, DType t);
// Rank's range of `part` (the whole for kNone).
Range part_range(const RankPlan& p, Part part);
// Bytes of `s` held by a rank with `share` units of its part (the whole for kReplicated), its
// matrices in tensor_dtype(s, t) (a partial trailing block counted whole), vectors in f32.
uint64_t tensor_bytes(const TensorSpec& s, const ModelConfig& c, int64_t share, DType t);

// Visits every non-empty view of `w` with its entry: matrices with their stack index (expert
// or head, −1 when not stacked), vectors. Layers outside w.layers_loaded are skipped.
using MatrixVisitor =
    std::function<void(const TensorSpec&, int64_t layer, int64_t index, MatrixView&)>;
using FloatVisitor = std::function<void(const TensorSpec&, int64_t layer, FloatView&)>;
void for_each_weight(ModelWeights& w, const ModelConfig& c, const MatrixVisitor& matrix,
                     const FloatVisitor& floats = {});
// The same, read-only.
void for_each_weight(const ModelWeights& w, const ModelConfig& c,
                     const std::function<void(const TensorSpec&, int64_t layer, int64_t index,
                                              const MatrixView&)>& matrix,
                     const std::function<void(const TensorSpec&, int64_t layer,
                                              const FloatView&)>& floats = {});

// Bytes a matmul reads from `m` (a column-sliced view reads only its part of each row).
uint64_t view_bytes(const MatrixView& m);

}  // namespace kiln
