// ModelConfig: HF config.json and GGUF metadata parse into the same struct; inconsistent configs
// are rejected with a message naming the field.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "shard/config.h"
#include "shard/gguf.h"

namespace kiln {
namespace {

// The released 48B config's keys (values from kimi-linear.md §1).
boost::json::object release_config() {
  boost::json::array kda, mla;
  for (int l = 1; l <= 27; ++l) ((l % 4 == 0 || l == 27) ? mla : kda).push_back(l);
  return boost::json::object{
      {"model_type", "kimi_linear"}, {"vocab_size", 163840}, {"hidden_size", 2304},
      {"num_hidden_layers", 27}, {"rms_norm_eps", 1e-5}, {"tie_word_embeddings", false},
      {"intermediate_size", 9216}, {"model_max_length", 1048576}, {"head_dim", 72},
      {"num_attention_heads", 32}, {"num_key_value_heads", 32}, {"q_lora_rank", nullptr},
      {"kv_lora_rank", 512}, {"qk_nope_head_dim", 128}, {"qk_rope_head_dim", 64},
      {"v_head_dim", 128}, {"mla_use_nope", true}, {"num_experts", 256},
      {"num_experts_per_token", 8}, {"num_shared_experts", 1}, {"moe_intermediate_size", 1024},
      {"first_k_dense_replace", 1}, {"moe_layer_freq", 1},
      {"moe_router_activation_func", "sigmoid"}, {"moe_renormalize", true},
      {"routed_scaling_factor", 2.446}, {"bos_token_id", 163584}, {"eos_token_id", 163586},
      {"pad_token_id", 163839},
      {"linear_attn_config", boost::json::object{{"kda_layers", kda}, {"full_attn_layers", mla},
                                                 {"num_heads", 32}, {"head_dim", 128},
                                                 {"short_conv_kernel_size", 4}}}};
}

std::string error_of(const boost::json::object& o) {
  auto c = parse_hf_config(boost::json::serialize(o));
  return c.ok() ? std::string("<ok>") : c.status().message();
}

TEST(ConfigTest, ParsesTheReleaseConfig) {
  auto c = parse_hf_config(boost::json::serialize(release_config()));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->num_kda_layers(), 20);
  EXPECT_EQ(c->num_mla_layers(), 7);
  // 1-based lists: layer 3 (0-based) is the first MLA layer, 26 the last.
  EXPECT_FALSE(c->is_kda(3));
  EXPECT_FALSE(c->is_kda(26));
  EXPECT_TRUE(c->is_kda(0));
  EXPECT_TRUE(c->is_kda(25));
  EXPECT_EQ(c->mla_latent_dim(), 576);
  EXPECT_EQ(c->mla_qk_head_dim(), 192);
  EXPECT_FALSE(c->is_moe(0));
  EXPECT_TRUE(c->is_moe(1));
  EXPECT_FLOAT_EQ(c->kv_a_norm_eps, 1e-6f);
  EXPECT_FLOAT_EQ(c->routed_scaling_factor, 2.446f);
}

TEST(ConfigTest, RejectsInconsistentFieldsByName) {
  struct Case {
    std::function<void(boost::json::object&)> mutate;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {[](auto& o) { o["model_type"] = "llama"; }, "model_type"},
      {[](auto& o) { o.erase("hidden_size"); }, "hidden_size"},
      {[](auto& o) { o["hidden_size"] = -4; }, "hidden_size"},
      {[](auto& o) { o["num_experts_per_token"] = 300; }, "num_experts_per_token"},
      {[](auto& o) { o["q_lora_rank"] = 1536; }, "q_lora_rank"},
      {[](auto& o) { o["mla_use_nope"] = false; }, "mla_use_nope"},
      {[](auto& o) { o["moe_router_activation_func"] = "softmax"; }, "moe_router_activation_func"},
      {[](auto& o) { o["first_k_dense_replace"] = 40; }, "first_k_dense_replace"},
      {[](auto& o) { o["eos_token_id"] = 200000; }, "eos_token_id"},
      {[](auto& o) { o["linear_attn_config"].as_object()["full_attn_layers"].as_array().push_back(28); },
       "full_attn_layers"},
      {[](auto& o) { o["linear_attn_config"].as_object()["kda_layers"].as_array().push_back(4); },
       "kda_layers"},
      {[](auto& o) { o["linear_attn_config"].as_object()["kda_layers"].as_array().erase(
                         o["linear_attn_config"].as_object()["kda_layers"].as_array().begin()); },
       "neither"},
      {[](auto& o) { o["linear_attn_config"].as_object()["num_heads"] = "32"; }, "num_heads"},
  };
  for (const Case& c : cases) {
    boost::json::object o = release_config();
    c.mutate(o);
    const std::string err = error_of(o);
    EXPECT_NE(err.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << err;
  }
  EXPECT_NE(parse_hf_config("{not json").status().message().find("JSON"), std::string::npos);
}

TEST(ConfigTest, ReadsTheMicroGgufMetadata) {
  auto g = GgufFile::open(std::string(KILN_TEST_DATA_DIR) + "/golden/kimi-micro-f32.gguf");
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  auto c = config_from_gguf(*g);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->hidden_size, 128);
  EXPECT_EQ(c->num_layers, 8);
  EXPECT_EQ(c->num_mla_layers(), 2);
  EXPECT_FALSE(c->is_kda(3));
  EXPECT_FALSE(c->is_kda(7));
  EXPECT_EQ(c->kv_lora_rank, 32);
  EXPECT_EQ(c->qk_nope_head_dim, 32);
  EXPECT_EQ(c->qk_rope_head_dim, 16);
  EXPECT_EQ(c->v_head_dim, 32);
  EXPECT_EQ(c->num_experts, 8);
  EXPECT_EQ(c->experts_per_token, 2);
  EXPECT_EQ(c->vocab_size, 640);
  EXPECT_FLOAT_EQ(c->kv_a_norm_eps, c->rms_norm_eps);
}

}  // namespace
}  // namespace kiln
