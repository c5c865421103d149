// make_model's metadata: the HF config.json and the GGUF kimi-linear.* keys, and make_model().
#include <filesystem>
#include <fstream>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "tools/make_model/make_model.h"
#include "tools/make_model/make_model_vocab.h"
#include "shard/safetensors.h"

namespace kiln {

std::string hf_config_json(const ModelConfig& c, const DemoVocab& vocab, DType dtype) {
  namespace json = boost::json;
  json::array kda, mla;
  for (int64_t i = 0; i < c.num_layers; ++i) (c.is_kda(i) ? kda : mla).push_back(i + 1);
  json::object la{{"kda_layers", kda},
                  {"full_attn_layers", mla},
                  {"num_heads", c.kda_num_heads},
                  {"head_dim", c.kda_head_dim},
                  {"short_conv_kernel_size", c.kda_conv_kernel}};
  const char* torch_dtype = dtype == DType::kBF16 ? "bfloat16"
                            : dtype == DType::kF16 ? "float16" : "float32";
  json::object o{
      {"architectures", json::array{"KimiLinearForCausalLM"}},
      {"model_type", "kimi_linear"},
      {"_name_or_path", c.name},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_layers},
      {"rms_norm_eps", c.rms_norm_eps},
      {"hidden_act", "silu"},
      {"tie_word_embeddings", false},
      {"intermediate_size", c.intermediate_size},
      {"model_max_length", c.max_context},
      {"head_dim", c.hidden_size / c.mla_num_heads},
      {"rope_theta", 10000.0},
      {"rope_scaling", nullptr},
      {"num_attention_heads", c.mla_num_heads},
      {"num_key_value_heads", c.mla_num_heads},
      {"q_lora_rank", nullptr},
      {"kv_lora_rank", c.kv_lora_rank},
      {"qk_nope_head_dim", c.qk_nope_head_dim},
      {"qk_rope_head_dim", c.qk_rope_head_dim},
      {"v_head_dim", c.v_head_dim},
      {"mla_use_nope", true},
      {"num_experts", c.num_experts},
      {"num_experts_per_token", c.experts_per_token},
      {"num_shared_experts", c.num_shared_experts},
      {"moe_intermediate_size", c.moe_intermediate_size},
      {"first_k_dense_replace", c.first_k_dense_replace},
      {"moe_layer_freq", 1},
      {"moe_router_activation_func", "sigmoid"},
      {"moe_renormalize", c.moe_renormalize},
      {"routed_scaling_factor", c.routed_scaling_factor},
      {"use_grouped_topk", true},
      {"num_expert_group", 1},
      {"topk_group", 1},
      {"num_nextn_predict_layers", 0},
      {"bos_token_id", vocab.bos_id},
      {"eos_token_id", vocab.eos_id},
      {"pad_token_id", vocab.pad_id},
      {"torch_dtype", torch_dtype},
      {"dtype", torch_dtype},
      {"linear_attn_config", la}};
  return json::serialize(o);
}

void add_gguf_metadata(GgufWriter& g, const ModelConfig& c, DType dtype) {
  const uint32_t file_type = dtype == DType::kF32 ? 0 : dtype == DType::kF16 ? 1
                             : dtype == DType::kQ8_0 ? 7 : dtype == DType::kQ4_K ? 15 : 32;
  auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  g.add_string("general.architecture", "kimi-linear");
  g.add_string("general.name", c.name);
  g.add_uint32("general.file_type", file_type);
  g.add_uint32("kimi-linear.block_count", u32(c.num_layers));
  g.add_uint32("kimi-linear.context_length", u32(c.max_context));
  g.add_uint32("kimi-linear.embedding_length", u32(c.hidden_size));
  g.add_uint32("kimi-linear.feed_forward_length", u32(c.intermediate_size));
  g.add_uint32("kimi-linear.attention.head_count", u32(c.mla_num_heads));
  std::vector<int32_t> kv;
  for (int64_t i = 0; i < c.num_layers; ++i) kv.push_back(c.is_kda(i) ? 0 : 1);
  g.add_int32_array("kimi-linear.attention.head_count_kv", kv);
  g.add_float32("kimi-linear.rope.freq_base", 10000.0f);
  g.add_float32("kimi-linear.attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  g.add_uint32("kimi-linear.expert_count", u32(c.num_experts));
  g.add_uint32("kimi-linear.expert_used_count", u32(c.experts_per_token));
  g.add_uint32("kimi-linear.expert_group_used_count", 1);
  g.add_uint32("kimi-linear.expert_gating_func", 2);
  g.add_uint32("kimi-linear.attention.key_length", u32(c.mla_latent_dim()));
  g.add_uint32("kimi-linear.attention.value_length", u32(c.kv_lora_rank));
  g.add_uint32("kimi-linear.vocab_size", u32(c.vocab_size));
  g.add_uint32("kimi-linear.ssm.conv_kernel", u32(c.kda_conv_kernel));
  g.add_uint32("kimi-linear.kda.head_dim", u32(c.kda_head_dim));
  g.add_uint32("kimi-linear.attention.kv_lora_rank", u32(c.kv_lora_rank));
  g.add_uint32("kimi-linear.rope.dimension_count", u32(c.qk_rope_head_dim));
  g.add_uint32("kimi-linear.attention.key_length_mla", u32(c.mla_qk_head_dim()));
  g.add_uint32("kimi-linear.attention.value_length_mla", u32(c.v_head_dim));
  g.add_uint32("kimi-linear.expert_feed_forward_length", u32(c.moe_intermediate_size));
  g.add_uint32("kimi-linear.expert_shared_count", u32(c.num_shared_experts));
  g.add_uint32("kimi-linear.leading_dense_block_count", u32(c.first_k_dense_replace));
  g.add_float32("kimi-linear.expert_weights_scale", c.routed_scaling_factor);
}

}  // namespace kiln
