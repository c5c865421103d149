// ModelConfig::validate: every value against its meaning and the bounds in config.h, the message
// naming the key as the checkpoint's format spells it.
#include <cmath>
#include <string_view>
#include <utility>

#include <fmt/format.h>

#include "shard/config.h"

namespace kiln {
namespace {

// config.json key → GGUF key. Fields that GGUF derives from others name what they come from.
constexpr std::pair<std::string_view, std::string_view> kGgufKeys[] = {
    {"vocab_size", "kimi-linear.vocab_size (or the length of tokenizer.ggml.tokens)"},
    {"hidden_size", "kimi-linear.embedding_length"},
    {"num_hidden_layers", "kimi-linear.block_count"},
    {"rms_norm_eps", "kimi-linear.attention.layer_norm_rms_epsilon"},
    {"kv_a_norm_eps", "kimi-linear.attention.layer_norm_rms_epsilon"},
    {"model_max_length", "kimi-linear.context_length"},
    {"linear_attn_config.num_heads", "kimi-linear.attention.head_count"},
    {"linear_attn_config.head_dim", "kimi-linear.kda.head_dim"},
    {"linear_attn_config.short_conv_kernel_size", "kimi-linear.ssm.conv_kernel"},
    {"num_attention_heads", "kimi-linear.attention.head_count"},
    {"kv_lora_rank", "kimi-linear.attention.kv_lora_rank"},
    {"qk_nope_head_dim", "kimi-linear.attention.key_length_mla - rope.dimension_count"},
    {"qk_rope_head_dim", "kimi-linear.rope.dimension_count"},
    {"v_head_dim", "kimi-linear.attention.value_length_mla"},
    {"intermediate_size", "kimi-linear.feed_forward_length"},
    {"first_k_dense_replace", "kimi-linear.leading_dense_block_count"},
    {"num_experts", "kimi-linear.expert_count"},
    {"num_experts_per_token", "kimi-linear.expert_used_count"},
    {"num_shared_experts", "kimi-linear.expert_shared_count"},
    {"moe_intermediate_size", "kimi-linear.expert_feed_forward_length"},
    {"routed_scaling_factor", "kimi-linear.expert_weights_scale"},
    {"bos_token_id", "tokenizer.ggml.bos_token_id"},
    {"eos_token_id", "tokenizer.ggml.eos_token_id"},
    {"pad_token_id", "tokenizer.ggml.padding_token_id"},
};

class Checker {
 public:
  explicit Checker(CheckpointFormat format) : format_(format) {}

  // "config field 'x'" or "GGUF key 'kimi-linear.y'".
  std::string key(std::string_view hf) const {
    if (format_ == CheckpointFormat::kGguf) {
      for (const auto& [h, g] : kGgufKeys) {
        if (h == hf) return fmt::format("GGUF key '{}'", g);
      }
    }
    return fmt::format("config field '{}'", hf);
  }
  Status range(std::string_view hf, int64_t v, int64_t lo, int64_t hi) const {
    if (v >= lo && v <= hi) return {};
    return invalid_argument("{} = {} is outside [{}, {}]", key(hf), v, lo, hi);
  }
  // Finite and in (0, hi].
  Status positive(std::string_view hf, double v, double hi) const {
    if (std::isfinite(v) && v > 0.0 && v <= hi) return {};
    return invalid_argument("{} = {} must be finite and in (0, {:g}]", key(hf), v, hi);
  }

 private:
  CheckpointFormat format_;
};

Status validate_kda(const ModelConfig& c, const Checker& k) {
  KILN_RETURN_IF_ERROR(k.range("linear_attn_config.num_heads", c.kda_num_heads, 1, kMaxConfigHeads));
  KILN_RETURN_IF_ERROR(k.range("linear_attn_config.head_dim", c.kda_head_dim, 1, kMaxConfigHeads));
  KILN_RETURN_IF_ERROR(k.range("linear_attn_config.head_dim", c.kda_gate_rank, 1, kMaxConfigHeads));
  return k.range("linear_attn_config.short_conv_kernel_size", c.kda_conv_kernel, 1,
                 kMaxConfigConvTaps);
}

Status validate_mla(const ModelConfig& c, const Checker& k) {
  KILN_RETURN_IF_ERROR(k.range("num_attention_heads", c.mla_num_heads, 1, kMaxConfigHeads));
  KILN_RETURN_IF_ERROR(k.range("kv_lora_rank", c.kv_lora_rank, 1, kMaxConfigWidth));
  KILN_RETURN_IF_ERROR(k.range("qk_nope_head_dim", c.qk_nope_head_dim, 1, kMaxConfigHeads));
  KILN_RETURN_IF_ERROR(k.range("qk_rope_head_dim", c.qk_rope_head_dim, 0, kMaxConfigHeads));
  KILN_RETURN_IF_ERROR(k.range("v_head_dim", c.v_head_dim, 1, kMaxConfigHeads));
  return k.positive("kv_a_norm_eps", c.kv_a_norm_eps, 1.0);
}

Status validate_ffn(const ModelConfig& c, const Checker& k) {
  KILN_RETURN_IF_ERROR(k.range("first_k_dense_replace", c.first_k_dense_replace, 0, c.num_layers));
  if (c.first_k_dense_replace > 0) {
    KILN_RETURN_IF_ERROR(k.range("intermediate_size", c.intermediate_size, 1, kMaxConfigFfn));
  }
  if (c.first_k_dense_replace == c.num_layers) return {};
  KILN_RETURN_IF_ERROR(k.range("num_experts", c.num_experts, 1, kMaxConfigExperts));
  if (c.experts_per_token > c.num_experts) {
    return invalid_argument("{} = {} exceeds {} = {}", k.key("num_experts_per_token"),
                            c.experts_per_token, k.key("num_experts"), c.num_experts);
  }
  KILN_RETURN_IF_ERROR(k.range("num_experts_per_token", c.experts_per_token, 1, kMaxConfigTopK));
  KILN_RETURN_IF_ERROR(k.range("num_shared_experts", c.num_shared_experts, 0, kMaxConfigTopK));
  KILN_RETURN_IF_ERROR(k.range("moe_intermediate_size", c.moe_intermediate_size, 1, kMaxConfigFfn));
  // The scale multiplies every routed expert's output: +inf or NaN would make every logit NaN.
  return k.positive("routed_scaling_factor", c.routed_scaling_factor, 1e6);
}

}  // namespace

Status ModelConfig::validate() const {
  const Checker k(format);
  KILN_RETURN_IF_ERROR(k.range("vocab_size", vocab_size, 1, kMaxConfigTokens));
  KILN_RETURN_IF_ERROR(k.range("hidden_size", hidden_size, 1, kMaxConfigWidth));
  KILN_RETURN_IF_ERROR(k.range("num_hidden_layers", num_layers, 1, kMaxConfigLayers));
  KILN_RETURN_IF_ERROR(k.range("model_max_length", max_context, 1, kMaxConfigTokens));
  if (static_cast<int64_t>(layer_kinds.size()) != num_layers) {
    return invalid_argument("config: {} layer kinds for {} = {}", layer_kinds.size(),
                            k.key("num_hidden_layers"), num_layers);
  }
  KILN_RETURN_IF_ERROR(k.positive("rms_norm_eps", rms_norm_eps, 1.0));
  if (num_kda_layers() > 0) KILN_RETURN_IF_ERROR(validate_kda(*this, k));
  if (num_mla_layers() > 0) KILN_RETURN_IF_ERROR(validate_mla(*this, k));
  KILN_RETURN_IF_ERROR(validate_ffn(*this, k));
  for (auto [field, id] : {std::pair{"bos_token_id", bos_token_id},
                           std::pair{"eos_token_id", eos_token_id},
                           std::pair{"pad_token_id", pad_token_id}}) {
    if (id < -1 || id >= vocab_size) {
      return invalid_argument("{} = {} is not a token id below vocab_size = {} (or absent)",
                              k.key(field), id, vocab_size);
    }
  }
  return {};
}

}  // namespace kiln
