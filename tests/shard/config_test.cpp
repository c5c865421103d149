// ModelConfig: HF config.json and GGUF metadata parse into the same struct; inconsistent configs
// are rejected with a message naming the field.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>

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

// Every value checked against its meaning: sizes positive and within the bounds of config.h,
// epsilons and the expert scale finite and positive, the context length a length. The message
// names the key as config.json spells it.
TEST(ConfigTest, RejectsOutOfRangeValuesNamingTheKey) {
  const double inf_as_float = 1e300;  // JSON has no infinity: a double beyond float's range
  struct Case {
    std::function<void(boost::json::object&)> mutate;
    std::string expect;
  };
  auto set = [](const char* key, boost::json::value v) {
    return [key, v](boost::json::object& o) { o[key] = v; };
  };
  auto set_la = [](const char* key, boost::json::value v) {
    return [key, v](boost::json::object& o) { o["linear_attn_config"].as_object()[key] = v; };
  };
  auto context_only = [](const char* key, int64_t v) {
    return [key, v](boost::json::object& o) {
      o.erase("model_max_length");
      o[key] = v;
    };
  };
  const int64_t p40 = int64_t{1} << 40, p62 = int64_t{1} << 62;
  const std::vector<Case> cases = {
      {set("model_max_length", 0), "'model_max_length' = 0 is outside"},
      {set("model_max_length", -5), "'model_max_length' = -5 is outside"},
      {set("model_max_length", p40), "'model_max_length' = 1099511627776 is outside"},
      {set("model_max_length", p62), "'model_max_length' = 4611686018427387904 is outside"},
      {context_only("max_position_embeddings", 0), "'max_position_embeddings' = 0"},
      {context_only("max_position_embeddings", -5), "'max_position_embeddings' = -5"},
      {context_only("max_position_embeddings", p40), "'max_position_embeddings' = 1099511627776"},
      {context_only("max_position_embeddings", p62), "'max_position_embeddings' = 4611686018427387904"},
      {set("routed_scaling_factor", inf_as_float), "'routed_scaling_factor' = inf"},
      {set("routed_scaling_factor", -2.0), "'routed_scaling_factor' = -2"},
      {set("routed_scaling_factor", 0.0), "'routed_scaling_factor' = 0"},
      {set("rms_norm_eps", 0.0), "'rms_norm_eps' = 0"},
      {set("rms_norm_eps", -1e-6), "'rms_norm_eps'"},
      {set("rms_norm_eps", inf_as_float), "'rms_norm_eps' = inf"},
      {set("rms_norm_eps", 1e-60), "'rms_norm_eps' = 0"},  // underflows float
      {set("vocab_size", 0), "'vocab_size' = 0"},
      {set("vocab_size", int64_t{1} << 31), "'vocab_size' = 2147483648"},
      {set("hidden_size", int64_t{1} << 20), "'hidden_size' = 1048576"},
      {set("num_attention_heads", 0), "'num_attention_heads' = 0"},
      {set("num_attention_heads", 5000), "'num_attention_heads' = 5000"},
      {set("kv_lora_rank", 0), "'kv_lora_rank' = 0"},
      {set("qk_nope_head_dim", 0), "'qk_nope_head_dim' = 0"},
      {set("qk_rope_head_dim", -1), "'qk_rope_head_dim' = -1"},
      {set("v_head_dim", 5000), "'v_head_dim' = 5000"},
      {set("intermediate_size", 0), "'intermediate_size' = 0"},
      {set("num_experts", 0), "'num_experts' = 0"},
      {set("num_experts", 5000), "'num_experts'"},
      {set("num_experts_per_token", 0), "'num_experts_per_token' = 0"},
      {set("num_experts_per_token", 65), "'num_experts_per_token' = 65 is outside [1, 64]"},
      {set("num_shared_experts", -1), "'num_shared_experts' = -1"},
      {set("moe_intermediate_size", int64_t{1} << 30), "'moe_intermediate_size' = 1073741824"},
      {set("bos_token_id", -5), "'bos_token_id' = -5"},
      {set("pad_token_id", 163840), "'pad_token_id' = 163840"},
      {set_la("num_heads", 0), "'linear_attn_config.num_heads' = 0"},
      {set_la("head_dim", -3), "'linear_attn_config.head_dim' = -3"},
      {set_la("short_conv_kernel_size", 0), "'linear_attn_config.short_conv_kernel_size' = 0"},
      {set_la("short_conv_kernel_size", 17), "'linear_attn_config.short_conv_kernel_size' = 17"},
  };
  for (const Case& c : cases) {
    boost::json::object o = release_config();
    c.mutate(o);
    const std::string err = error_of(o);
    EXPECT_NE(err.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << err;
  }
  // Without either context key the default applies; with both, model_max_length wins but a bad
  // max_position_embeddings is still an error.
  boost::json::object o = release_config();
  o.erase("model_max_length");
  auto c = parse_hf_config(boost::json::serialize(o));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->max_context, int64_t{1} << 20);
  o = release_config();
  o["max_position_embeddings"] = 8192;
  c = parse_hf_config(boost::json::serialize(o));
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->max_context, 1048576);
  o["max_position_embeddings"] = -1;
  EXPECT_NE(error_of(o).find("'max_position_embeddings' = -1"), std::string::npos) << error_of(o);
}

// config_from_gguf over a metadata-only GGUF with the kimi-linear keys of a small MoE model,
// except `key`, which `write` sets instead (with any type).
class GgufConfigTest : public ::testing::Test {
 protected:
  using Writer = std::function<void(GgufWriter&)>;
  StatusOr<ModelConfig> config_with(const std::string& key, const Writer& write) {
    GgufWriter g;
    g.add_string("general.architecture", "kimi-linear");
    const std::vector<std::pair<const char*, uint32_t>> ints = {
        {"block_count", 4}, {"embedding_length", 64}, {"feed_forward_length", 128},
        {"context_length", 4096}, {"attention.head_count", 2}, {"attention.kv_lora_rank", 16},
        {"rope.dimension_count", 8}, {"attention.key_length_mla", 24},
        {"attention.value_length_mla", 16}, {"ssm.conv_kernel", 4}, {"kda.head_dim", 16},
        {"expert_count", 8}, {"expert_used_count", 2}, {"expert_shared_count", 1},
        {"expert_feed_forward_length", 32}, {"leading_dense_block_count", 1},
        {"vocab_size", 512}};
    for (const auto& [k, v] : ints) {
      const std::string full = std::string("kimi-linear.") + k;
      if (full != key) g.add_uint32(full, v);
    }
    for (const auto& [k, v] : {std::pair{"attention.layer_norm_rms_epsilon", 1e-5f},
                               std::pair{"expert_weights_scale", 2.5f}}) {
      const std::string full = std::string("kimi-linear.") + k;
      if (full != key) g.add_float32(full, v);
    }
    g.add_int32_array("kimi-linear.attention.head_count_kv", {0, 0, 0, 1});
    write(g);
    const auto path = std::filesystem::temp_directory_path() /
                      ("kiln_config_test_" + std::to_string(getpid()) + ".gguf");
    EXPECT_TRUE(g.write(path.string()).ok());
    auto file = GgufFile::open(path.string());
    std::filesystem::remove(path);
    if (!file.ok()) return file.status();
    return config_from_gguf(*file);
  }
};

TEST_F(GgufConfigTest, RejectsOutOfRangeValuesNamingTheKey) {
  ASSERT_TRUE(config_with("", [](GgufWriter&) {}).ok());
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto u32 = [](const char* k, uint32_t v) -> Writer { return [=](GgufWriter& g) { g.add_uint32(k, v); }; };
  auto i32 = [](const char* k, int32_t v) -> Writer { return [=](GgufWriter& g) { g.add_int32(k, v); }; };
  auto u64 = [](const char* k, uint64_t v) -> Writer { return [=](GgufWriter& g) { g.add_uint64(k, v); }; };
  auto f32 = [](const char* k, float v) -> Writer { return [=](GgufWriter& g) { g.add_float32(k, v); }; };
  struct Case {
    const char* key;
    Writer write;
    std::string expect;
  };
  const char* ctx = "kimi-linear.context_length";
  const char* scale = "kimi-linear.expert_weights_scale";
  const char* eps = "kimi-linear.attention.layer_norm_rms_epsilon";
  const std::vector<Case> cases = {
      {ctx, u32(ctx, 0), "'kimi-linear.context_length' = 0 is outside [1, 2147483647]"},
      {ctx, i32(ctx, -5), "'kimi-linear.context_length' = -5 is outside"},
      {ctx, u64(ctx, uint64_t{1} << 40), "'kimi-linear.context_length' = 1099511627776"},
      {ctx, u64(ctx, uint64_t{1} << 62), "'kimi-linear.context_length' = 4611686018427387904"},
      {scale, f32(scale, inf), "'kimi-linear.expert_weights_scale' = inf"},
      {scale, f32(scale, -inf), "'kimi-linear.expert_weights_scale' = -inf"},
      {scale, f32(scale, nan), "'kimi-linear.expert_weights_scale' = nan"},
      {scale, f32(scale, -1.0f), "'kimi-linear.expert_weights_scale' = -1"},
      {scale, f32(scale, 0.0f), "'kimi-linear.expert_weights_scale' = 0"},
      {eps, f32(eps, nan), "'kimi-linear.attention.layer_norm_rms_epsilon' = nan"},
      {eps, f32(eps, inf), "'kimi-linear.attention.layer_norm_rms_epsilon' = inf"},
      {eps, f32(eps, 0.0f), "'kimi-linear.attention.layer_norm_rms_epsilon' = 0"},
      {"kimi-linear.expert_used_count", u32("kimi-linear.expert_used_count", 9),
       "'kimi-linear.expert_used_count' = 9 exceeds GGUF key 'kimi-linear.expert_count' = 8"},
      {"kimi-linear.expert_used_count", u32("kimi-linear.expert_used_count", 0),
       "'kimi-linear.expert_used_count' = 0"},
      {"kimi-linear.expert_count", u32("kimi-linear.expert_count", 0), "'kimi-linear.expert_count' = 0"},
      {"kimi-linear.attention.key_length_mla", u32("kimi-linear.attention.key_length_mla", 8),
       "key_length_mla - rope.dimension_count' = 0"},
      {"kimi-linear.kda.head_dim", u32("kimi-linear.kda.head_dim", 0), "'kimi-linear.kda.head_dim' = 0"},
      {"kimi-linear.ssm.conv_kernel", u32("kimi-linear.ssm.conv_kernel", 17),
       "'kimi-linear.ssm.conv_kernel' = 17"},
      {"kimi-linear.attention.head_count", u32("kimi-linear.attention.head_count", 0),
       "'kimi-linear.attention.head_count' = 0"},
      {"kimi-linear.embedding_length", u32("kimi-linear.embedding_length", 0),
       "'kimi-linear.embedding_length' = 0"},
      {"kimi-linear.vocab_size", u32("kimi-linear.vocab_size", 0), "kimi-linear.vocab_size"},
      {"kimi-linear.expert_feed_forward_length",
       u32("kimi-linear.expert_feed_forward_length", 1u << 30),
       "'kimi-linear.expert_feed_forward_length' = 1073741824"},
  };
  for (const Case& c : cases) {
    auto cfg = config_with(c.key, c.write);
    const std::string err = cfg.ok() ? std::string("<ok>") : cfg.status().message();
    EXPECT_NE(err.find(c.expect), std::string::npos) << "expected '" << c.expect << "' in: " << err;
  }
}

}  // namespace
}  // namespace kiln
