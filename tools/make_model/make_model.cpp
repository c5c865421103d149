// make_model: presets, deterministic random weights, and the two writers (HF + GGUF). The weights
// are the same bits at every optimisation level: the file is built with -ffp-contract=off and its
// fused multiply-adds are explicit std::fma.
#include "tools/make_model/make_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "tools/make_model/make_model_vocab.h"
#include "kernels/base/check.h"
#include "kernels/ref/quant_k.h"
#include "shard/gguf.h"
#include "shard/mapped_file.h"
#include "shard/safetensors.h"
#include "shard/tensor_table.h"

namespace kiln {
namespace fs = std::filesystem;

namespace {

void set_layers(ModelConfig& c, int64_t n, std::vector<int64_t> mla) {
  c.num_layers = n;
  c.layer_kinds.assign(static_cast<size_t>(n), LayerKind::kKda);
  for (int64_t l : mla) c.layer_kinds[static_cast<size_t>(l)] = LayerKind::kMla;
}

}  // namespace

StatusOr<ModelConfig> preset_config(const std::string& preset) {
  ModelConfig c;
  c.rms_norm_eps = 1e-5f;
  c.kda_conv_kernel = 4;
  c.first_k_dense_replace = 1;
  c.num_shared_experts = 1;
  c.routed_scaling_factor = 2.446f;
  c.max_context = 4096;
  if (preset == "micro") {
    c.hidden_size = 128;
    set_layers(c, 8, {3, 7});
    c.kda_num_heads = 4, c.kda_head_dim = 32;
    c.mla_num_heads = 4, c.kv_lora_rank = 32, c.qk_nope_head_dim = 32, c.qk_rope_head_dim = 16;
    c.v_head_dim = 32;
    c.num_experts = 8, c.experts_per_token = 2, c.moe_intermediate_size = 64;
    c.intermediate_size = 256, c.vocab_size = 640;
  } else if (preset == "tiny") {
    c.hidden_size = 256;
    set_layers(c, 8, {3, 7});
    c.kda_num_heads = 8, c.kda_head_dim = 32;
    c.mla_num_heads = 8, c.kv_lora_rank = 64, c.qk_nope_head_dim = 32, c.qk_rope_head_dim = 64;
    c.v_head_dim = 32;
    c.num_experts = 16, c.experts_per_token = 4, c.moe_intermediate_size = 128;
    c.intermediate_size = 512, c.vocab_size = 1024;
  } else if (preset == "mini") {
    c.hidden_size = 1024;
    set_layers(c, 12, {3, 7, 11});
    c.kda_num_heads = 16, c.kda_head_dim = 64;
    c.mla_num_heads = 16, c.kv_lora_rank = 256, c.qk_nope_head_dim = 64, c.qk_rope_head_dim = 64;
    c.v_head_dim = 64;
    c.num_experts = 64, c.experts_per_token = 6, c.moe_intermediate_size = 256;
    c.intermediate_size = 2816, c.vocab_size = 32000;
    c.max_context = 32768;
  } else {
    return invalid_argument("unknown preset '{}' (expected micro, tiny or mini)", preset);
  }
  c.kda_gate_rank = c.kda_head_dim;
  c.name = "kiln-" + preset;
  return c;
}

namespace {

// Counter-based generator: the stream of a tensor depends only on (seed, tensor name).
class Rng {
 public:
  Rng(uint64_t seed, std::string_view name) : state_(seed * 0x9E3779B97F4A7C15ull + 1) {
    for (char ch : name) state_ = (state_ ^ static_cast<uint8_t>(ch)) * 0x100000001B3ull;
  }
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53; }
  float normal() {
    const double u1 = uniform(), u2 = uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }

 private:
  uint64_t state_;
};

std::vector<float> normal_values(uint64_t seed, const std::string& name, int64_t n, float mean,
                                 float stddev) {
  Rng rng(seed, name);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = std::fma(stddev, rng.normal(), mean);
  return v;
}

// Storage of one tensor in a file: dtype + raw bytes.
struct Encoded {
  DType dtype;
  std::string bytes;
};

std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

bool is_block_type(DType t) { return dtype_block_elems(t) > 1; }

// Rounds `v` (rows of `cols`) through `t` in place and returns the encoded bytes.
Encoded round_through(std::vector<float>& v, int64_t cols, DType t) {
  // llama.cpp's fallbacks for rows that are not whole blocks: a k-quant becomes Q5_0/Q8_0
  // (kiln has no Q5_0, so Q8_0 for both), and q8_0 becomes f16.
  if ((t == DType::kQ4_K || t == DType::kQ6_K) && cols % kQKBlock != 0) t = DType::kQ8_0;
  if (t == DType::kQ8_0 && cols % kQ8Block != 0) t = DType::kF16;
  Encoded e{t, {}};
  const int64_t n = static_cast<int64_t>(v.size());
  switch (t) {
    case DType::kF32:
      e.bytes = f32_bytes(v);
      break;
    case DType::kF16:
    case DType::kBF16: {
      std::vector<uint16_t> h(v.size());
      for (size_t i = 0; i < v.size(); ++i) {
        h[i] = t == DType::kF16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
        v[i] = t == DType::kF16 ? f16_to_f32(h[i]) : bf16_to_f32(h[i]);
      }
      e.bytes.assign(reinterpret_cast<const char*>(h.data()), h.size() * 2);
      break;
    }
    case DType::kQ8_0: {
      std::vector<BlockQ8_0> q(static_cast<size_t>(n / kQ8Block));
      quantize_row_q8_0(v.data(), q.data(), n);
      dequantize_row_q8_0(q.data(), v.data(), n);
      e.bytes.assign(reinterpret_cast<const char*>(q.data()), q.size() * sizeof(BlockQ8_0));
      break;
    }
    case DType::kQ4_K: {
      std::vector<BlockQ4_K> q(static_cast<size_t>(n / kQKBlock));
      ref::quantize_row_q4_k(v.data(), q.data(), n);
      ref::dequantize_row_q4_k(q.data(), v.data(), n);
      e.bytes.assign(reinterpret_cast<const char*>(q.data()), q.size() * sizeof(BlockQ4_K));
      break;
    }
    case DType::kQ6_K: {
      std::vector<BlockQ6_K> q(static_cast<size_t>(n / kQKBlock));
      ref::quantize_row_q6_k(v.data(), q.data(), n);
      ref::dequantize_row_q6_k(q.data(), v.data(), n);
      e.bytes.assign(reinterpret_cast<const char*>(q.data()), q.size() * sizeof(BlockQ6_K));
      break;
    }
  }
  return e;
}

// llama.cpp's use_more_bits: the first and last eighth of the layers and every third one between.
bool use_more_bits(int64_t i, int64_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

// The GGUF type of matrix `s` (layer `layer`, −1 for none) in a file of model dtype `t`.
// Only kQ4_K is a mix: llama.cpp's Q4_K_M (llama_tensor_get_type, LLAMA_FTYPE_MOSTLY_Q4_K_M):
//   lm_head (Mix::kOutput)                          → Q6_K
//   the embedding                                   → Q4_K (Q6_K only when there is no lm_head)
//   KDA v (Mix::kAttnV) of the use_more_bits(i, n)  → Q6_K (i, n count those tensors: KDA layers)
//   FFN down (Mix::kFfnDown) of use_more_bits(layer, L) layers → Q6_K (dense, routed, shared)
//   every other matrix                              → Q4_K
// The router stays f32 as for q8_0 (tensor_dtype), 1-D tensors are always f32, and
// round_through turns rows that are not whole 256-blocks into Q8_0 (or f16).
DType gguf_type(DType t, const TensorSpec& s, int64_t layer, int64_t n_layers,
                int64_t attn_v_index, int64_t n_attn_v) {
  if (s.kind == Kind::kRouter || t != DType::kQ4_K) return tensor_dtype(s, t);
  switch (s.mix) {
    case Mix::kOutput: return DType::kQ6_K;
    case Mix::kAttnV: return use_more_bits(attn_v_index, n_attn_v) ? DType::kQ6_K : DType::kQ4_K;
    case Mix::kFfnDown: return use_more_bits(layer, n_layers) ? DType::kQ6_K : DType::kQ4_K;
    case Mix::kNone: break;
  }
  return DType::kQ4_K;
}

GgmlType ggml_type_of(DType t) {
  switch (t) {
    case DType::kF32: return GgmlType::kF32;
    case DType::kF16: return GgmlType::kF16;
    case DType::kBF16: return GgmlType::kBF16;
    case DType::kQ8_0: return GgmlType::kQ8_0;
    case DType::kQ4_K: return GgmlType::kQ4_K;
    case DType::kQ6_K: return GgmlType::kQ6_K;
  }
  return GgmlType::kF32;
}

// Collects tensors for both files.
class Emitter {
 public:
  Emitter(const MakeModelOptions& o, const ModelConfig& c) : opt_(o), config_(c) {}

  // HF dtype for a tensor whose GGUF encoding is `t`: block-quantised values are written exactly
  // as f32.
  DType hf_dtype(DType t) const { return is_block_type(t) ? DType::kF32 : t; }

  // The GGUF type of matrix `s` of `layer` in this file (see gguf_type). Call once per tensor,
  // in file order: KDA v tensors are counted as they come, as llama.cpp does.
  DType matrix_type(const TensorSpec& s, int64_t layer) {
    const DType t = gguf_type(opt_.dtype, s, layer, config_.num_layers, attn_v_seen_,
                              config_.num_kda_layers());
    if (s.mix == Mix::kAttnV) ++attn_v_seen_;
    return t;
  }

  void hf(const std::string& name, const std::vector<int64_t>& shape, std::vector<float> values,
          DType t) {
    if (!opt_.write_hf) return;
    Encoded e;
    if (t == DType::kF32) {
      e = {DType::kF32, f32_bytes(values)};
    } else {
      e = round_through(values, shape.back(), t);
    }
    st_.add(name, e.dtype, shape, std::move(e.bytes));
  }
  void gguf(const std::string& name, const std::vector<int64_t>& ne, Encoded e) {
    if (!opt_.write_gguf) return;
    gg_.add_tensor(name, ggml_type_of(e.dtype), ne, std::move(e.bytes));
  }
  SafetensorsWriter& st() { return st_; }
  GgufWriter& gg() { return gg_; }
  const MakeModelOptions& opt() const { return opt_; }

 private:
  const MakeModelOptions& opt_;
  const ModelConfig& config_;
  int64_t attn_v_seen_ = 0;
  SafetensorsWriter st_;
  GgufWriter gg_;
};

// A matrix [rows][cols] (HF) = GGUF {cols, rows}, N(0, 1/cols) (the embedding N(0, 1)).
void emit_matrix(Emitter& em, const ModelConfig& c, const TensorSpec& s, int64_t layer) {
  const int64_t rows = size_of(c, s.rows), cols = size_of(c, s.cols);
  const std::string hf = s.hf_name(layer);
  const float sd = s.init == Init::kEmbedding ? 1.0f : 1.0f / std::sqrt(static_cast<float>(cols));
  std::vector<float> v = normal_values(em.opt().seed, hf, rows * cols, 0.0f, sd);
  Encoded e = round_through(v, cols, em.matrix_type(s, layer));
  em.hf(hf, s.hf_shape(c), std::move(v), em.hf_dtype(e.dtype));
  em.gguf(s.gguf_name(layer), s.gguf_shape(c), std::move(e));
}

// The values of a small f32 tensor drawn as `init` says.
std::vector<float> float_values(const MakeModelOptions& o, Init init, const std::string& name,
                                int64_t n) {
  std::vector<float> v(static_cast<size_t>(n));
  Rng rng(o.seed, name);
  switch (init) {
    case Init::kNorm: return normal_values(o.seed, name, n, 1.0f, 0.1f);
    case Init::kConv: return normal_values(o.seed, name, n, 0.0f, 0.5f);
    case Init::kBias: return normal_values(o.seed, name, n, 0.0f, 0.05f);
    case Init::kDtBias:  // softplus⁻¹(dt) with dt log-uniform in [1e-3, 1e-1]
      for (float& x : v) {
        const double d =
            std::exp(std::fma(rng.uniform(), std::log(1e-1) - std::log(1e-3), std::log(1e-3)));
        x = static_cast<float>(std::log(std::expm1(d)));
      }
      return v;
    case Init::kALog:  // A = U(1, 16)
      for (float& x : v) x = static_cast<float>(std::log(std::fma(15.0, rng.uniform(), 1.0)));
      return v;
    case Init::kMatrix:
    case Init::kEmbedding: break;
  }
  KILN_CHECK(false);
  return v;
}

// A small f32 tensor; GGUF holds −exp of the values for Special::kNegExp (ssm_a).
void emit_floats(Emitter& em, const ModelConfig& c, const TensorSpec& s, int64_t layer) {
  const std::string hf = s.hf_name(layer);
  const std::vector<float> v =
      float_values(em.opt(), s.init, hf, size_of(c, s.rows) * size_of(c, s.cols));
  std::vector<float> gg = v;
  if (s.special == Special::kNegExp) {
    for (float& x : gg) x = -std::exp(x);
  }
  em.hf(hf, s.hf_shape(c), v, DType::kF32);
  em.gguf(s.gguf_name(layer), s.gguf_shape(c), {DType::kF32, f32_bytes(gg)});
}

// kv_b [H*(N+V)][R]: generated in HF layout, rounded in GGUF's split layout (k_b transposed
// per head to [R][N], v_b [V][R]) and assembled back so both files hold the same values.
void emit_kv_b(Emitter& em, const ModelConfig& c, const TensorSpec& s, int64_t i) {
  const int64_t H = c.mla_num_heads, N = c.qk_nope_head_dim, R = c.kv_lora_rank, V = c.v_head_dim;
  const TensorSpec& k_b = tensor_with(Special::kKB);
  const TensorSpec& v_b = tensor_with(Special::kVB);
  const std::string kvb = s.hf_name(i);
  std::vector<float> w = normal_values(em.opt().seed, kvb, H * (N + V) * R, 0.0f,
                                       1.0f / std::sqrt(static_cast<float>(R)));
  std::vector<float> kb(static_cast<size_t>(H * R * N)), vb(static_cast<size_t>(H * V * R));
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t r = 0; r < R; ++r) kb[(h * R + r) * N + n] = w[(h * (N + V) + n) * R + r];
    }
    for (int64_t v = 0; v < V; ++v) {
      std::copy_n(&w[(h * (N + V) + N + v) * R], R, &vb[(h * V + v) * R]);
    }
  }
  Encoded ekb = round_through(kb, N, em.matrix_type(k_b, i));
  Encoded evb = round_through(vb, R, em.matrix_type(v_b, i));
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t r = 0; r < R; ++r) w[(h * (N + V) + n) * R + r] = kb[(h * R + r) * N + n];
    }
    for (int64_t v = 0; v < V; ++v) {
      std::copy_n(&vb[(h * V + v) * R], R, &w[(h * (N + V) + N + v) * R]);
    }
  }
  const bool widen =
      is_block_type(ekb.dtype) || is_block_type(evb.dtype) || ekb.dtype != evb.dtype;
  const DType hf_t = widen ? DType::kF32 : ekb.dtype;
  em.hf(kvb, s.hf_shape(c), std::move(w), hf_t);
  em.gguf(k_b.gguf_name(i), k_b.gguf_shape(c), std::move(ekb));
  em.gguf(v_b.gguf_name(i), v_b.gguf_shape(c), std::move(evb));
}

// Per-expert tensors in HF; stacked {in, out, E} in GGUF.
void emit_experts(Emitter& em, const ModelConfig& c, const TensorSpec& s, int64_t i) {
  const int64_t rows = size_of(c, s.rows), cols = size_of(c, s.cols);
  const DType t = em.matrix_type(s, i);
  Encoded all{t, {}};
  for (int64_t e = 0; e < c.num_experts; ++e) {
    const std::string hf = s.hf_name(i, e);
    std::vector<float> v = normal_values(em.opt().seed, hf, rows * cols, 0.0f,
                                         1.0f / std::sqrt(static_cast<float>(cols)));
    Encoded enc = round_through(v, cols, t);
    em.hf(hf, s.hf_shape(c), std::move(v), em.hf_dtype(enc.dtype));
    all.dtype = enc.dtype;
    all.bytes += enc.bytes;
  }
  em.gguf(s.gguf_name(i), s.gguf_shape(c), std::move(all));
}

// Every tensor of the table in file order. W_UK and W_UV are written with kv_b.
void emit_all(Emitter& em, const ModelConfig& c) {
  for_each_tensor(c, Range{0, c.num_layers}, [&](const TensorSpec& s, int64_t layer) {
    if (s.special == Special::kKB || s.special == Special::kVB) return;
    if (s.special == Special::kKvB) return emit_kv_b(em, c, s, layer);
    if (s.kind == Kind::kFloats) return emit_floats(em, c, s, layer);
    if (s.stack == Stack::kExperts) return emit_experts(em, c, s, layer);
    emit_matrix(em, c, s, layer);
  });
}

}  // namespace

StatusOr<std::string> make_model(const ModelConfig& config, const MakeModelOptions& options) {
  if (options.out_dir.empty()) return invalid_argument("make-model: --out is required");
  KILN_ASSIGN_OR_RETURN(DemoVocab vocab, build_demo_vocab(config.vocab_size));
  ModelConfig c = config;
  c.bos_token_id = vocab.bos_id;
  c.eos_token_id = vocab.eos_id;
  c.pad_token_id = vocab.pad_id;
  KILN_RETURN_IF_ERROR(c.validate());

  std::error_code ec;
  const fs::path out(options.out_dir);
  const fs::path hf_dir = out / "hf";
  fs::create_directories(options.write_hf ? hf_dir : out, ec);
  if (ec) return invalid_argument("make-model: cannot create '{}': {}", options.out_dir, ec.message());

  Emitter em(options, c);
  emit_all(em, c);
  auto write_text = [](const fs::path& p, const std::string& text) {
    return write_file(p.string(), text);
  };
  std::string summary = fmt::format("{}: {} layers, hidden {}, vocab {}, dtype {}, seed {}", c.name,
                                    c.num_layers, c.hidden_size, c.vocab_size,
                                    options.dtype == DType::kQ4_K ? "q4_k_m"
                                                                  : dtype_name(options.dtype),
                                    options.seed);
  if (options.write_hf) {
    em.st().add_metadata("format", "pt");
    KILN_RETURN_IF_ERROR(em.st().write((hf_dir / "model.safetensors").string()));
    KILN_RETURN_IF_ERROR(write_text(hf_dir / "config.json", hf_config_json(c, vocab, options.dtype)));
    KILN_RETURN_IF_ERROR(write_text(hf_dir / "tiktoken.model", vocab.tiktoken_model));
    KILN_RETURN_IF_ERROR(write_text(hf_dir / "tokenizer_config.json", vocab.tokenizer_config_json));
    summary += "\n  hf:   " + hf_dir.string();
  }
  if (options.write_gguf) {
    add_gguf_metadata(em.gg(), c, options.dtype);
    vocab.add_to_gguf(em.gg());
    const fs::path gguf = out / "model.gguf";
    KILN_RETURN_IF_ERROR(em.gg().write(gguf.string()));
    summary += "\n  gguf: " + gguf.string();
  }
  return summary;
}

}  // namespace kiln
