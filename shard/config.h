// ModelConfig: every hyper-parameter of a Kimi-Linear checkpoint, read from an HF config.json or
// from GGUF metadata (arch "kimi-linear") into one validated struct. Validation names the field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/base/status.h"

namespace kiln {

class GgufFile;

enum class LayerKind : uint8_t { kKda, kMla };
enum class CheckpointFormat : uint8_t { kHf, kGguf };

// Bounds of validate(). Token ids and positions fit the 32-bit values the kernels and the
// scheduler use; widths are bounded so that every size product kiln forms from the config (a
// layer's expert bytes, logits rows, cache bytes) fits in 64 bits; top-k and the short conv are
// bounded by the kernels' fixed-size buffers (kernels/cpu/moe.cpp, kernels/cpu/conv.cpp).
inline constexpr int64_t kMaxConfigTokens = 2147483647;  // vocab_size, context length
inline constexpr int64_t kMaxConfigLayers = 4096;
inline constexpr int64_t kMaxConfigWidth = int64_t{1} << 16;  // hidden_size, kv_lora_rank
inline constexpr int64_t kMaxConfigHeads = 4096;             // heads and per-head dims
inline constexpr int64_t kMaxConfigFfn = int64_t{1} << 18;   // (expert) intermediate sizes
inline constexpr int64_t kMaxConfigExperts = 4096;
inline constexpr int64_t kMaxConfigTopK = 64;
inline constexpr int64_t kMaxConfigConvTaps = 16;

struct ModelConfig {
  std::string name;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  float rms_norm_eps = 1e-5f;
  bool tie_word_embeddings = false;
  int64_t max_context = 0;  // model_max_length / context_length
  std::vector<LayerKind> layer_kinds;  // [num_layers], 0-based

  // KDA (linear attention) layers.
  int64_t kda_num_heads = 0;
  int64_t kda_head_dim = 0;       // key dim = value dim
  int64_t kda_conv_kernel = 0;    // short conv taps
  int64_t kda_gate_rank = 0;      // f_a / g_a low rank (= head_dim in the release)

  // MLA layers (NoPE).
  int64_t mla_num_heads = 0;
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  // Epsilon of kv_a_layernorm: HF constructs it with 1e-6, llama.cpp uses rms_norm_eps; each
  // format follows its own ecosystem (docs/numerics.md).
  float kv_a_norm_eps = 1e-6f;

  // Feed-forward.
  int64_t intermediate_size = 0;     // dense MLP (first_k_dense_replace leading layers)
  int64_t first_k_dense_replace = 1;
  int64_t num_experts = 0;
  int64_t experts_per_token = 0;
  int64_t num_shared_experts = 0;
  int64_t moe_intermediate_size = 0;
  bool moe_renormalize = true;
  float routed_scaling_factor = 1.0f;

  // Special token ids (-1 when absent).
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;
  int64_t pad_token_id = -1;

  CheckpointFormat format = CheckpointFormat::kHf;

  bool is_kda(int64_t layer) const { return layer_kinds[layer] == LayerKind::kKda; }
  bool is_moe(int64_t layer) const { return layer >= first_k_dense_replace && num_experts > 0; }
  int64_t kda_proj_dim() const { return kda_num_heads * kda_head_dim; }
  int64_t mla_qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int64_t mla_latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }  // cached per token
  int64_t num_kda_layers() const;
  int64_t num_mla_layers() const;

  // Checks every value against its meaning and the bounds below (positive sizes, finite positive
  // epsilons and scale, top-k within the experts, special ids inside the vocabulary) and the
  // fields against each other. The message names the offending key as the file spells it
  // (config.json key or GGUF kimi-linear.* key, by `format`) and gives the allowed range.
  Status validate() const;
  // Pretty multi-line summary (kiln inspect).
  std::string describe() const;
};

// Parses the text of an HF config.json (model_type "kimi_linear").
StatusOr<ModelConfig> parse_hf_config(const std::string& json_text);
StatusOr<ModelConfig> load_hf_config(const std::string& path);
// Reads the kimi-linear.* keys of a GGUF.
StatusOr<ModelConfig> config_from_gguf(const GgufFile& gguf);

}  // namespace kiln
