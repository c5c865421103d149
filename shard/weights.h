// ModelWeights: every tensor the forward pass reads, as views into the memory-mapped checkpoint
// in the file's dtype. Both formats (HF names, GGUF names) map here; a missing or mis-shaped
// tensor is an error naming the tensor and both shapes. Small vectors (norm weights, conv taps,
// A_log, dt_bias, the router bias) are widened to f32 at load; they are < 0.1% of the bytes.
// MLA's W_UK is kept in the absorbed orientation [R][N] per head (GGUF's attn_k_b layout); HF's
// kv_b_proj rows are transposed once at load into an owned buffer of the same dtype.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/base/matrix.h"
#include "shard/checkpoint.h"
#include "shard/config.h"
#include "shard/partition.h"

namespace kiln {

// A non-owning run of f32 values (norm weights, conv taps, A, dt_bias, the router bias): in host
// memory as loaded, in device memory in a GPU backend's copy of the weights.
struct FloatView {
  const float* ptr = nullptr;
  int64_t n = 0;
  const float* data() const { return ptr; }
  int64_t size() const { return n; }
  bool empty() const { return n == 0; }
};

// What loading made that the views point into: copied or transposed matrices, widened vectors.
// Buffers are only appended (their storage never moves).
struct WeightStore {
  std::vector<std::vector<std::byte>> bytes;
  std::vector<std::vector<float>> floats;
  FloatView keep(std::vector<float> v) {
    floats.push_back(std::move(v));
    return {floats.back().data(), static_cast<int64_t>(floats.back().size())};
  }
};

struct KdaWeights {
  MatrixView q, k, v;          // [H*K][D]
  MatrixView f_a, f_b;         // [rank][D], [H*K][rank]: decay gate (low rank)
  MatrixView b;                // [H][D]: beta logits
  MatrixView g_a, g_b;         // [rank][D], [H*V][rank]: output gate (low rank)
  MatrixView o;                // [D][H*V]
  FloatView conv_q, conv_k, conv_v;  // [H*K][taps], tap taps−1 = current token
  FloatView a_neg;    // [H] = −exp(A_log)
  FloatView dt_bias;  // [H*K]
  FloatView o_norm;   // [V], shared by all heads
};

struct MlaWeights {
  MatrixView q;                   // [H*(N+P)][D], per head [nope | pe]
  MatrixView kv_a;                // [R+P][D]: [latent c | k_pe]
  FloatView kv_a_norm;            // [R]
  std::vector<MatrixView> k_b;    // per head [R][N]: q̄ = k_b · q_nope (absorbed W_UKᵀ)
  std::vector<MatrixView> v_b;    // per head [V][R]: o = v_b · ō
  MatrixView o;                   // [D][H*V]
};

struct MlpWeights {
  MatrixView gate, up;  // [F][D]
  MatrixView down;      // [D][F]
};

struct MoeWeights {
  MatrixView router;             // [E][D]
  FloatView bias;                // [E] selection-only bias (empty when absent)
  std::vector<MlpWeights> experts;
  bool has_shared = false;
  MlpWeights shared;             // intermediate = num_shared × moe_intermediate
};

struct LayerWeights {
  FloatView attn_norm, ffn_norm;  // [D]
  KdaWeights kda;     // when the layer is KDA
  MlaWeights mla;     // when the layer is MLA
  MlpWeights dense;   // when the layer is dense
  MoeWeights moe;     // when the layer is MoE
};

// One rank's share (RankPlan): head ranges of KDA/MLA, intermediate slices of the FFNs, vocab
// rows of the embedding (first stage) and lm_head (last stage), and only its stage's layers.
// Slices are views: column-parallel = a row range, row-parallel = a column range of each row.
struct ModelWeights {
  MatrixView embed;              // [vocab slice][D] (first stage only)
  MatrixView lm_head;            // [vocab slice][D] (last stage only)
  FloatView final_norm;          // [D] (last stage only)
  Range vocab;                   // the rows of embed / lm_head
  Range layers_loaded;           // layers present in `layers` (others are empty)
  std::vector<LayerWeights> layers;  // [num_layers], filled for layers_loaded
  // Owns what the views above point into besides the checkpoint's mapping. Move-only: a copy
  // would point into the original's buffers.
  WeightStore owned;
  ModelWeights() = default;
  ModelWeights(ModelWeights&&) = default;
  ModelWeights& operator=(ModelWeights&&) = default;
  ModelWeights(const ModelWeights&) = delete;
  ModelWeights& operator=(const ModelWeights&) = delete;

  // Bytes of the matrices read for one token (all layers, experts_per_token experts each),
  // excluding the embedding table: the decode memory-traffic figure.
  uint64_t active_bytes_per_token(const ModelConfig& cfg) const;
};

// The whole model on one rank.
StatusOr<ModelWeights> load_weights(const Checkpoint& ck);
// One rank's share. Quantised row-parallel slices must be block-aligned (error names the tensor).
// In a parallel job (tensor or pipeline > 1) the share is copied out of the file into `owned`, so
// the rank's resident memory is its share; one rank keeps zero-copy views of the mapping.
// progress, when set, is called as the share is copied: (bytes copied, bytes in all), the last
// call with both equal.
using LoadProgress = std::function<void(int64_t done, int64_t total)>;
StatusOr<ModelWeights> load_weights(const Checkpoint& ck, const RankPlan& plan,
                                    const LoadProgress& progress = {});

}  // namespace kiln
