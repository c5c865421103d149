// ModelConfig parsing (HF config.json, GGUF metadata); validation is in config_validate.cpp.
#include "shard/config.h"

#include <set>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "shard/gguf.h"
#include "shard/input_file.h"

namespace kiln {
namespace json = boost::json;

int64_t ModelConfig::num_kda_layers() const {
  int64_t n = 0;
  for (LayerKind k : layer_kinds) n += k == LayerKind::kKda ? 1 : 0;
  return n;
}
int64_t ModelConfig::num_mla_layers() const {
  return static_cast<int64_t>(layer_kinds.size()) - num_kda_layers();
}

std::string ModelConfig::describe() const {
  std::string layers;
  for (LayerKind k : layer_kinds) layers += k == LayerKind::kKda ? 'K' : 'M';
  return fmt::format(
      "name: {}\nformat: {}\nvocab: {}  hidden: {}  layers: {} [{}] (K = KDA, M = MLA)\n"
      "rms_norm_eps: {:g}  kv_a_norm_eps: {:g}  max_context: {}\n"
      "KDA: {} heads x {}, conv {}, gate rank {}\n"
      "MLA: {} heads, kv_lora {}, nope {}, rope {} (not rotated), v {}\n"
      "FFN: dense {} (first {} layers); MoE {} experts top-{}, {} shared, expert ffn {}, "
      "scale {:g}, renormalize {}\n"
      "tokens: bos {} eos {} pad {}",
      name, format == CheckpointFormat::kHf ? "hf" : "gguf", vocab_size, hidden_size, num_layers,
      layers, rms_norm_eps, kv_a_norm_eps, max_context, kda_num_heads, kda_head_dim,
      kda_conv_kernel, kda_gate_rank, mla_num_heads, kv_lora_rank, qk_nope_head_dim,
      qk_rope_head_dim, v_head_dim, intermediate_size, first_k_dense_replace, num_experts,
      experts_per_token, num_shared_experts, moe_intermediate_size, routed_scaling_factor,
      moe_renormalize, bos_token_id, eos_token_id, pad_token_id);
}

// ---------------------------------------------------------------------------------------------
// HF config.json

namespace {

// Typed accessors that name the key on failure.
class JsonFields {
 public:
  JsonFields(const json::object& obj, std::string prefix) : obj_(obj), prefix_(std::move(prefix)) {}

  const json::value* find(const char* key) const {
    auto it = obj_.find(key);
    return it == obj_.end() || it->value().is_null() ? nullptr : &it->value();
  }
  StatusOr<int64_t> get_int(const char* key, std::optional<int64_t> fallback = {}) const {
    const json::value* v = find(key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      return invalid_argument("config.json: missing field '{}{}'", prefix_, key);
    }
    if (v->is_int64()) return v->as_int64();
    if (v->is_uint64() && v->as_uint64() <= INT64_MAX) return static_cast<int64_t>(v->as_uint64());
    return invalid_argument("config.json: field '{}{}' must be an integer", prefix_, key);
  }
  StatusOr<double> get_float(const char* key, std::optional<double> fallback = {}) const {
    const json::value* v = find(key);
    if (v == nullptr) {
      if (fallback) return *fallback;
      return invalid_argument("config.json: missing field '{}{}'", prefix_, key);
    }
    if (v->is_double()) return v->as_double();
    if (v->is_int64()) return static_cast<double>(v->as_int64());
    if (v->is_uint64()) return static_cast<double>(v->as_uint64());
    return invalid_argument("config.json: field '{}{}' must be a number", prefix_, key);
  }
  StatusOr<bool> get_bool(const char* key, bool fallback) const {
    const json::value* v = find(key);
    if (v == nullptr) return fallback;
    if (!v->is_bool()) return invalid_argument("config.json: field '{}{}' must be a boolean",
                                               prefix_, key);
    return v->as_bool();
  }
  StatusOr<std::vector<int64_t>> get_int_list(const char* key) const {
    const json::value* v = find(key);
    if (v == nullptr || !v->is_array()) {
      return invalid_argument("config.json: field '{}{}' must be a list of integers", prefix_, key);
    }
    std::vector<int64_t> out;
    for (const json::value& e : v->as_array()) {
      if (!e.is_int64()) {
        return invalid_argument("config.json: field '{}{}' must be a list of integers", prefix_,
                                key);
      }
      out.push_back(e.as_int64());
    }
    return out;
  }

 private:
  const json::object& obj_;
  std::string prefix_;
};

// Builds layer kinds from the 1-based kda_layers / full_attn_layers lists.
Status layer_kinds_from_lists(const std::vector<int64_t>& kda, const std::vector<int64_t>& mla,
                              ModelConfig& cfg) {
  cfg.layer_kinds.assign(static_cast<size_t>(cfg.num_layers), LayerKind::kKda);
  std::vector<int> seen(static_cast<size_t>(cfg.num_layers), 0);
  auto mark = [&](const std::vector<int64_t>& list, const char* field, LayerKind kind) -> Status {
    for (int64_t l : list) {
      if (l < 1 || l > cfg.num_layers) {
        return invalid_argument("config field 'linear_attn_config.{}' lists layer {} outside "
                                "1..{} (the lists are 1-based)", field, l, cfg.num_layers);
      }
      if (seen[static_cast<size_t>(l - 1)]++ != 0) {
        return invalid_argument("config field 'linear_attn_config.{}': layer {} is listed twice "
                                "(each layer must appear once across kda_layers and "
                                "full_attn_layers)", field, l);
      }
      cfg.layer_kinds[static_cast<size_t>(l - 1)] = kind;
    }
    return {};
  };
  KILN_RETURN_IF_ERROR(mark(kda, "kda_layers", LayerKind::kKda));
  KILN_RETURN_IF_ERROR(mark(mla, "full_attn_layers", LayerKind::kMla));
  for (size_t i = 0; i < seen.size(); ++i) {
    if (seen[i] == 0) {
      return invalid_argument("config field 'linear_attn_config': layer {} (1-based) is in neither "
                              "kda_layers nor full_attn_layers", i + 1);
    }
  }
  return {};
}

// The context length: model_max_length, else max_position_embeddings, else 2^20. Each key that
// is present must be a length in [1, kMaxConfigTokens], named when it is not.
StatusOr<int64_t> context_length(const JsonFields& f) {
  std::optional<int64_t> found;
  for (const char* key : {"model_max_length", "max_position_embeddings"}) {
    if (f.find(key) == nullptr) continue;
    KILN_ASSIGN_OR_RETURN(int64_t v, f.get_int(key));
    if (v < 1 || v > kMaxConfigTokens) {
      return invalid_argument("config field '{}' = {} is outside [1, {}]", key, v,
                              kMaxConfigTokens);
    }
    if (!found) found = v;
  }
  return found.value_or(int64_t{1} << 20);
}

Status parse_hf_fields(const JsonFields& f, const JsonFields& la, ModelConfig& c) {
  KILN_ASSIGN_OR_RETURN(c.vocab_size, f.get_int("vocab_size"));
  KILN_ASSIGN_OR_RETURN(c.hidden_size, f.get_int("hidden_size"));
  KILN_ASSIGN_OR_RETURN(c.num_layers, f.get_int("num_hidden_layers"));
  KILN_ASSIGN_OR_RETURN(double eps, f.get_float("rms_norm_eps", 1e-5));
  c.rms_norm_eps = static_cast<float>(eps);
  KILN_ASSIGN_OR_RETURN(c.tie_word_embeddings, f.get_bool("tie_word_embeddings", false));
  KILN_ASSIGN_OR_RETURN(c.max_context, context_length(f));
  KILN_ASSIGN_OR_RETURN(c.intermediate_size, f.get_int("intermediate_size", int64_t{0}));
  KILN_ASSIGN_OR_RETURN(c.mla_num_heads, f.get_int("num_attention_heads"));
  KILN_ASSIGN_OR_RETURN(c.kv_lora_rank, f.get_int("kv_lora_rank"));
  KILN_ASSIGN_OR_RETURN(c.qk_nope_head_dim, f.get_int("qk_nope_head_dim"));
  KILN_ASSIGN_OR_RETURN(c.qk_rope_head_dim, f.get_int("qk_rope_head_dim"));
  KILN_ASSIGN_OR_RETURN(c.v_head_dim, f.get_int("v_head_dim"));
  if (f.find("q_lora_rank") != nullptr) {
    return unimplemented("config field 'q_lora_rank' is set; kiln supports only q_lora_rank = null "
                         "(plain q_proj), as in Kimi-Linear");
  }
  KILN_ASSIGN_OR_RETURN(bool nope, f.get_bool("mla_use_nope", true));
  if (!nope) return unimplemented("config field 'mla_use_nope' = false (RoPE MLA) is not supported");
  KILN_ASSIGN_OR_RETURN(c.num_experts, f.get_int("num_experts", int64_t{0}));
  KILN_ASSIGN_OR_RETURN(c.experts_per_token, f.get_int("num_experts_per_token", int64_t{0}));
  KILN_ASSIGN_OR_RETURN(c.num_shared_experts, f.get_int("num_shared_experts", int64_t{0}));
  KILN_ASSIGN_OR_RETURN(c.moe_intermediate_size, f.get_int("moe_intermediate_size", int64_t{0}));
  KILN_ASSIGN_OR_RETURN(c.first_k_dense_replace, f.get_int("first_k_dense_replace", int64_t{0}));
  KILN_ASSIGN_OR_RETURN(int64_t freq, f.get_int("moe_layer_freq", int64_t{1}));
  if (freq != 1) return unimplemented("config field 'moe_layer_freq' = {} (only 1 supported)", freq);
  KILN_ASSIGN_OR_RETURN(c.moe_renormalize, f.get_bool("moe_renormalize", true));
  KILN_ASSIGN_OR_RETURN(double scale, f.get_float("routed_scaling_factor", 1.0));
  c.routed_scaling_factor = static_cast<float>(scale);
  if (const json::value* act = f.find("moe_router_activation_func")) {
    if (!act->is_string() || act->as_string() != "sigmoid") {
      return unimplemented("config field 'moe_router_activation_func' must be \"sigmoid\"");
    }
  }
  KILN_ASSIGN_OR_RETURN(c.bos_token_id, f.get_int("bos_token_id", int64_t{-1}));
  KILN_ASSIGN_OR_RETURN(c.eos_token_id, f.get_int("eos_token_id", int64_t{-1}));
  KILN_ASSIGN_OR_RETURN(c.pad_token_id, f.get_int("pad_token_id", int64_t{-1}));

  KILN_ASSIGN_OR_RETURN(c.kda_num_heads, la.get_int("num_heads"));
  KILN_ASSIGN_OR_RETURN(c.kda_head_dim, la.get_int("head_dim"));
  KILN_ASSIGN_OR_RETURN(c.kda_conv_kernel, la.get_int("short_conv_kernel_size", int64_t{4}));
  c.kda_gate_rank = c.kda_head_dim;
  if (c.num_layers <= 0 || c.num_layers > 4096) {
    return invalid_argument("config field 'num_hidden_layers' = {} is outside 1..4096",
                            c.num_layers);
  }
  KILN_ASSIGN_OR_RETURN(auto kda, la.get_int_list("kda_layers"));
  KILN_ASSIGN_OR_RETURN(auto mla, la.get_int_list("full_attn_layers"));
  return layer_kinds_from_lists(kda, mla, c);
}

}  // namespace

StatusOr<ModelConfig> parse_hf_config(const std::string& json_text) {
  boost::system::error_code ec;
  json::value root = json::parse(json_text, ec);
  if (ec) return invalid_argument("config.json: not valid JSON: {}", ec.message());
  if (!root.is_object()) return invalid_argument("config.json: top level is not an object");
  const json::object& obj = root.as_object();
  auto mt = obj.find("model_type");
  if (mt == obj.end() || !mt->value().is_string() || mt->value().as_string() != "kimi_linear") {
    return invalid_argument("config.json: field 'model_type' must be \"kimi_linear\"");
  }
  auto la_it = obj.find("linear_attn_config");
  if (la_it == obj.end() || !la_it->value().is_object()) {
    return invalid_argument("config.json: missing object 'linear_attn_config'");
  }
  ModelConfig c;
  c.format = CheckpointFormat::kHf;
  c.kv_a_norm_eps = 1e-6f;  // HF's KimiMLAAttention builds kv_a_layernorm with the default eps
  if (auto it = obj.find("_name_or_path"); it != obj.end() && it->value().is_string()) {
    c.name = std::string(it->value().as_string());
  }
  JsonFields f(obj, "");
  JsonFields la(la_it->value().as_object(), "linear_attn_config.");
  KILN_RETURN_IF_ERROR(parse_hf_fields(f, la, c));
  KILN_RETURN_IF_ERROR(c.validate());
  return c;
}

StatusOr<ModelConfig> load_hf_config(const std::string& path) {
  KILN_ASSIGN_OR_RETURN(const std::string text, read_input_file(path, kMaxJsonFileBytes));
  auto cfg = parse_hf_config(text);
  if (!cfg.ok()) return cfg.status().with_context(path);
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// GGUF metadata

StatusOr<ModelConfig> config_from_gguf(const GgufFile& g) {
  KILN_ASSIGN_OR_RETURN(std::string arch, g.get_string("general.architecture"));
  if (arch != "kimi-linear") {
    return invalid_argument("GGUF general.architecture is '{}', expected 'kimi-linear'", arch);
  }
  auto key = [](const char* k) { return std::string("kimi-linear.") + k; };
  auto opt_int = [&](const char* k, int64_t fallback) -> StatusOr<int64_t> {
    if (g.find(key(k)) == nullptr) return fallback;
    return g.get_int(key(k));
  };
  ModelConfig c;
  c.format = CheckpointFormat::kGguf;
  if (g.find("general.name") != nullptr) {
    KILN_ASSIGN_OR_RETURN(c.name, g.get_string("general.name"));
  }
  KILN_ASSIGN_OR_RETURN(c.num_layers, g.get_int(key("block_count")));
  KILN_ASSIGN_OR_RETURN(c.hidden_size, g.get_int(key("embedding_length")));
  KILN_ASSIGN_OR_RETURN(c.intermediate_size, opt_int("feed_forward_length", 0));
  KILN_ASSIGN_OR_RETURN(c.max_context, opt_int("context_length", 1048576));
  KILN_ASSIGN_OR_RETURN(double eps, g.get_float(key("attention.layer_norm_rms_epsilon")));
  c.rms_norm_eps = static_cast<float>(eps);
  c.kv_a_norm_eps = c.rms_norm_eps;  // llama.cpp normalises the latent with rms_norm_eps
  KILN_ASSIGN_OR_RETURN(c.mla_num_heads, g.get_int(key("attention.head_count")));
  KILN_ASSIGN_OR_RETURN(c.kv_lora_rank, g.get_int(key("attention.kv_lora_rank")));
  KILN_ASSIGN_OR_RETURN(c.qk_rope_head_dim, g.get_int(key("rope.dimension_count")));
  KILN_ASSIGN_OR_RETURN(int64_t key_mla, g.get_int(key("attention.key_length_mla")));
  KILN_ASSIGN_OR_RETURN(c.v_head_dim, g.get_int(key("attention.value_length_mla")));
  c.qk_nope_head_dim = key_mla - c.qk_rope_head_dim;
  if (g.find(key("attention.q_lora_rank")) != nullptr) {
    KILN_ASSIGN_OR_RETURN(int64_t qr, g.get_int(key("attention.q_lora_rank")));
    if (qr != 0) return unimplemented("GGUF kimi-linear.attention.q_lora_rank = {} is not supported", qr);
  }
  KILN_ASSIGN_OR_RETURN(c.kda_conv_kernel, g.get_int(key("ssm.conv_kernel")));
  KILN_ASSIGN_OR_RETURN(c.kda_head_dim, g.get_int(key("kda.head_dim")));
  c.kda_num_heads = c.mla_num_heads;  // llama.cpp derives KDA heads from attention.head_count
  c.kda_gate_rank = c.kda_head_dim;
  KILN_ASSIGN_OR_RETURN(c.num_experts, opt_int("expert_count", 0));
  KILN_ASSIGN_OR_RETURN(c.experts_per_token, opt_int("expert_used_count", 0));
  KILN_ASSIGN_OR_RETURN(c.num_shared_experts, opt_int("expert_shared_count", 0));
  KILN_ASSIGN_OR_RETURN(c.moe_intermediate_size, opt_int("expert_feed_forward_length", 0));
  KILN_ASSIGN_OR_RETURN(c.first_k_dense_replace, opt_int("leading_dense_block_count", 0));
  KILN_ASSIGN_OR_RETURN(int64_t gating, opt_int("expert_gating_func", 2));
  if (gating != 2) {
    return unimplemented("GGUF kimi-linear.expert_gating_func = {} (only 2 = sigmoid supported)",
                         gating);
  }
  if (g.find(key("expert_weights_scale")) != nullptr) {
    KILN_ASSIGN_OR_RETURN(double s, g.get_float(key("expert_weights_scale")));
    c.routed_scaling_factor = static_cast<float>(s);
  }
  c.moe_renormalize = true;  // llama.cpp hard-codes renormalisation for this arch
  if (c.num_layers <= 0 || c.num_layers > 4096) {
    return invalid_argument("GGUF kimi-linear.block_count = {} is outside 1..4096", c.num_layers);
  }
  KILN_ASSIGN_OR_RETURN(auto kv_heads, g.get_int_array(key("attention.head_count_kv")));
  if (static_cast<int64_t>(kv_heads.size()) != c.num_layers) {
    return invalid_argument("GGUF kimi-linear.attention.head_count_kv has {} entries for {} layers",
                            kv_heads.size(), c.num_layers);
  }
  for (int64_t h : kv_heads) c.layer_kinds.push_back(h == 0 ? LayerKind::kKda : LayerKind::kMla);
  if (g.find("tokenizer.ggml.tokens") != nullptr) {
    KILN_ASSIGN_OR_RETURN(auto toks, g.get_string_array("tokenizer.ggml.tokens"));
    c.vocab_size = static_cast<int64_t>(toks.size());
  }
  KILN_ASSIGN_OR_RETURN(c.vocab_size, opt_int("vocab_size", c.vocab_size));
  auto tok_id = [&](const char* k) -> StatusOr<int64_t> {
    if (g.find(k) == nullptr) return int64_t{-1};
    return g.get_int(k);
  };
  KILN_ASSIGN_OR_RETURN(c.bos_token_id, tok_id("tokenizer.ggml.bos_token_id"));
  KILN_ASSIGN_OR_RETURN(c.eos_token_id, tok_id("tokenizer.ggml.eos_token_id"));
  KILN_ASSIGN_OR_RETURN(c.pad_token_id, tok_id("tokenizer.ggml.padding_token_id"));
  KILN_RETURN_IF_ERROR(c.validate());
  return c;
}

}  // namespace kiln
