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
#include "kernels/ref/quant_k.h"
#include "shard/gguf.h"
#include "shard/mapped_file.h"
#include "shard/safetensors.h"

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

// The GGUF type of 2-D tensor `gg` (layer `layer`, −1 for none) in a file of model dtype `t`.
// Only kQ4_K is a mix: llama.cpp's Q4_K_M (llama_tensor_get_type, LLAMA_FTYPE_MOSTLY_Q4_K_M):
//   output.weight                                   → Q6_K
//   token_embd.weight                               → Q4_K (Q6_K only when there is no output)
//   attn_v.weight of the use_more_bits(i, n) ones   → Q6_K (i, n count attn_v tensors: KDA layers)
//   ffn_down* of layers use_more_bits(layer, L)     → Q6_K (dense, routed experts and shared)
//   every other matrix                              → Q4_K
// The router (ffn_gate_inp) stays f32 as for q8_0, 1-D tensors are always f32, and
// round_through turns rows that are not whole 256-blocks into Q8_0 (or f16).
DType gguf_type(DType t, const std::string& gg, int64_t layer, int64_t n_layers,
                int64_t attn_v_index, int64_t n_attn_v) {
  if (gg.find("ffn_gate_inp") != std::string::npos) return is_block_type(t) ? DType::kF32 : t;
  if (t != DType::kQ4_K) return t;
  if (gg == "output.weight") return DType::kQ6_K;
  if (gg.find("attn_v.weight") != std::string::npos && use_more_bits(attn_v_index, n_attn_v)) {
    return DType::kQ6_K;
  }
  if (gg.find("ffn_down") != std::string::npos && use_more_bits(layer, n_layers)) {
    return DType::kQ6_K;
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

  // The GGUF type of matrix `gg` in this file (see gguf_type). Call once per tensor, in file
  // order: attn_v tensors are counted as they come, as llama.cpp does.
  DType matrix_type(const std::string& gg) {
    int64_t layer = -1;
    if (gg.rfind("blk.", 0) == 0) layer = std::stoll(gg.substr(4));
    const bool attn_v = gg.find("attn_v.weight") != std::string::npos;
    const DType t = gguf_type(opt_.dtype, gg, layer, config_.num_layers, attn_v_seen_,
                              config_.num_kda_layers());
    if (attn_v) ++attn_v_seen_;
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

// A matrix [rows][cols] (HF) = GGUF {cols, rows}, stored in the model dtype.
// `t` is the model dtype; the tensor's own type comes from Emitter::matrix_type.
void emit_matrix(Emitter& em, const std::string& hf, const std::string& gg, int64_t rows,
                 int64_t cols, float stddev, DType t) {
  std::vector<float> v = normal_values(em.opt().seed, hf, rows * cols, 0.0f, stddev);
  Encoded e = round_through(v, cols, t == em.opt().dtype ? em.matrix_type(gg) : t);
  em.hf(hf, {rows, cols}, std::move(v), em.hf_dtype(e.dtype));
  em.gguf(gg, {cols, rows}, std::move(e));
}

// A small f32 tensor; `gguf_values` may differ (ssm_a holds −exp(A_log)).
void emit_f32(Emitter& em, const std::string& hf, const std::vector<int64_t>& hf_shape,
              const std::string& gg, const std::vector<int64_t>& ne, const std::vector<float>& v,
              const std::vector<float>* gguf_values = nullptr) {
  em.hf(hf, hf_shape, v, DType::kF32);
  em.gguf(gg, ne, {DType::kF32, f32_bytes(gguf_values ? *gguf_values : v)});
}


std::string hf_layer(int64_t i, const char* name) {
  return fmt::format("model.layers.{}.{}", i, name);
}
std::string gg_layer(int64_t i, const char* name) { return fmt::format("blk.{}.{}", i, name); }

std::vector<float> norm_values(const MakeModelOptions& o, const std::string& name, int64_t n) {
  return normal_values(o.seed, name, n, 1.0f, 0.1f);
}

void emit_kda(Emitter& em, const ModelConfig& c, int64_t i) {
  const MakeModelOptions& o = em.opt();
  const DType t = o.dtype;
  const int64_t D = c.hidden_size, H = c.kda_num_heads, K = c.kda_head_dim, C = H * K;
  const int64_t r = c.kda_gate_rank, taps = c.kda_conv_kernel;
  const float sd = 1.0f / std::sqrt(static_cast<float>(D));
  emit_matrix(em, hf_layer(i, "self_attn.q_proj.weight"), gg_layer(i, "attn_q.weight"), C, D, sd, t);
  emit_matrix(em, hf_layer(i, "self_attn.k_proj.weight"), gg_layer(i, "attn_k.weight"), C, D, sd, t);
  emit_matrix(em, hf_layer(i, "self_attn.v_proj.weight"), gg_layer(i, "attn_v.weight"), C, D, sd, t);
  for (const char* qkv : {"q", "k", "v"}) {
    const std::string hf = hf_layer(i, fmt::format("self_attn.{}_conv1d.weight", qkv).c_str());
    emit_f32(em, hf, {C, 1, taps}, gg_layer(i, fmt::format("ssm_conv1d_{}.weight", qkv).c_str()),
             {taps, 1, C, 1}, normal_values(o.seed, hf, C * taps, 0.0f, 0.5f));
  }
  emit_matrix(em, hf_layer(i, "self_attn.f_a_proj.weight"), gg_layer(i, "ssm_f_a.weight"), r, D, sd, t);
  emit_matrix(em, hf_layer(i, "self_attn.f_b_proj.weight"), gg_layer(i, "ssm_f_b.weight"), C, r,
              1.0f / std::sqrt(static_cast<float>(r)), t);
  // dt_bias = softplus⁻¹(dt) with dt log-uniform in [1e-3, 1e-1]; A = U(1, 16).
  {
    const std::string hf = hf_layer(i, "self_attn.dt_bias");
    Rng rng(o.seed, hf);
    std::vector<float> dt(static_cast<size_t>(C));
    for (float& x : dt) {
      const double d = std::exp(std::fma(rng.uniform(), std::log(1e-1) - std::log(1e-3), std::log(1e-3)));
      x = static_cast<float>(std::log(std::expm1(d)));
    }
    emit_f32(em, hf, {C}, gg_layer(i, "ssm_dt.bias"), {C}, dt);
    const std::string a_name = hf_layer(i, "self_attn.A_log");
    Rng ra(o.seed, a_name);
    std::vector<float> a_log(static_cast<size_t>(H)), a_neg(static_cast<size_t>(H));
    for (int64_t h = 0; h < H; ++h) {
      a_log[h] = static_cast<float>(std::log(std::fma(15.0, ra.uniform(), 1.0)));
      a_neg[h] = -std::exp(a_log[h]);
    }
    emit_f32(em, a_name, {1, 1, H, 1}, gg_layer(i, "ssm_a"), {1, H, 1, 1}, a_log, &a_neg);
  }
  emit_matrix(em, hf_layer(i, "self_attn.b_proj.weight"), gg_layer(i, "ssm_beta.weight"), H, D, sd, t);
  emit_matrix(em, hf_layer(i, "self_attn.g_a_proj.weight"), gg_layer(i, "ssm_g_a.weight"), r, D, sd, t);
  emit_matrix(em, hf_layer(i, "self_attn.g_b_proj.weight"), gg_layer(i, "ssm_g_b.weight"), C, r,
              1.0f / std::sqrt(static_cast<float>(r)), t);
  const std::string on = hf_layer(i, "self_attn.o_norm.weight");
  emit_f32(em, on, {K}, gg_layer(i, "ssm_norm.weight"), {K}, norm_values(o, on, K));
  emit_matrix(em, hf_layer(i, "self_attn.o_proj.weight"), gg_layer(i, "attn_output.weight"), D, C,
              1.0f / std::sqrt(static_cast<float>(C)), t);
}

void emit_mla(Emitter& em, const ModelConfig& c, int64_t i) {
  const MakeModelOptions& o = em.opt();
  const DType t = o.dtype;
  const int64_t D = c.hidden_size, H = c.mla_num_heads, N = c.qk_nope_head_dim;
  const int64_t P = c.qk_rope_head_dim, R = c.kv_lora_rank, V = c.v_head_dim;
  const float sd = 1.0f / std::sqrt(static_cast<float>(D));
  emit_matrix(em, hf_layer(i, "self_attn.q_proj.weight"), gg_layer(i, "attn_q.weight"), H * (N + P), D, sd, t);
  emit_matrix(em, hf_layer(i, "self_attn.kv_a_proj_with_mqa.weight"),
              gg_layer(i, "attn_kv_a_mqa.weight"), R + P, D, sd, t);
  const std::string kvn = hf_layer(i, "self_attn.kv_a_layernorm.weight");
  emit_f32(em, kvn, {R}, gg_layer(i, "attn_kv_a_norm.weight"), {R}, norm_values(o, kvn, R));
  // kv_b [H*(N+V)][R]: generated in HF layout, rounded in GGUF's split layout (k_b transposed
  // per head to [R][N], v_b [V][R]) and assembled back so both files hold the same values.
  const std::string kvb = hf_layer(i, "self_attn.kv_b_proj.weight");
  std::vector<float> w = normal_values(o.seed, kvb, H * (N + V) * R, 0.0f,
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
  Encoded ekb = round_through(kb, N, em.matrix_type(gg_layer(i, "attn_k_b.weight")));
  Encoded evb = round_through(vb, R, em.matrix_type(gg_layer(i, "attn_v_b.weight")));
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t n = 0; n < N; ++n) {
      for (int64_t r = 0; r < R; ++r) w[(h * (N + V) + n) * R + r] = kb[(h * R + r) * N + n];
    }
    for (int64_t v = 0; v < V; ++v) {
      std::copy_n(&vb[(h * V + v) * R], R, &w[(h * (N + V) + N + v) * R]);
    }
  }
  const bool widen = is_block_type(ekb.dtype) || is_block_type(evb.dtype) || ekb.dtype != evb.dtype;
  const DType hf_t = widen ? DType::kF32 : ekb.dtype;
  em.hf(kvb, {H * (N + V), R}, std::move(w), hf_t);
  em.gguf(gg_layer(i, "attn_k_b.weight"), {N, R, H}, std::move(ekb));
  em.gguf(gg_layer(i, "attn_v_b.weight"), {R, V, H}, std::move(evb));
  emit_matrix(em, hf_layer(i, "self_attn.o_proj.weight"), gg_layer(i, "attn_output.weight"), D,
              H * V, 1.0f / std::sqrt(static_cast<float>(H * V)), t);
}

void emit_dense(Emitter& em, const ModelConfig& c, int64_t i) {
  const DType t = em.opt().dtype;
  const int64_t D = c.hidden_size, F = c.intermediate_size;
  const float sd = 1.0f / std::sqrt(static_cast<float>(D)), sf = 1.0f / std::sqrt(static_cast<float>(F));
  emit_matrix(em, hf_layer(i, "mlp.gate_proj.weight"), gg_layer(i, "ffn_gate.weight"), F, D, sd, t);
  emit_matrix(em, hf_layer(i, "mlp.up_proj.weight"), gg_layer(i, "ffn_up.weight"), F, D, sd, t);
  emit_matrix(em, hf_layer(i, "mlp.down_proj.weight"), gg_layer(i, "ffn_down.weight"), D, F, sf, t);
}

// Per-expert tensors in HF; stacked {in, out, E} in GGUF.
void emit_experts(Emitter& em, const ModelConfig& c, int64_t i, const char* hf_w,
                  const char* gg_name, int64_t rows, int64_t cols) {
  const MakeModelOptions& o = em.opt();
  const int64_t E = c.num_experts;
  const DType t = em.matrix_type(gg_layer(i, gg_name));
  Encoded all{t, {}};
  for (int64_t e = 0; e < E; ++e) {
    const std::string hf = fmt::format("model.layers.{}.block_sparse_moe.experts.{}.{}.weight", i, e, hf_w);
    std::vector<float> v = normal_values(o.seed, hf, rows * cols, 0.0f,
                                         1.0f / std::sqrt(static_cast<float>(cols)));
    Encoded enc = round_through(v, cols, t);
    em.hf(hf, {rows, cols}, std::move(v), em.hf_dtype(enc.dtype));
    all.dtype = enc.dtype;
    all.bytes += enc.bytes;
  }
  em.gguf(gg_layer(i, gg_name), {cols, rows, E}, std::move(all));
}

void emit_moe(Emitter& em, const ModelConfig& c, int64_t i) {
  const MakeModelOptions& o = em.opt();
  const DType t = o.dtype;
  const int64_t D = c.hidden_size, E = c.num_experts, F = c.moe_intermediate_size;
  const float sd = 1.0f / std::sqrt(static_cast<float>(D));
  // The router stays f32 in quantised files (llama.cpp does not quantise ffn_gate_inp).
  emit_matrix(em, hf_layer(i, "block_sparse_moe.gate.weight"), gg_layer(i, "ffn_gate_inp.weight"),
              E, D, sd, t);
  const std::string bias = hf_layer(i, "block_sparse_moe.gate.e_score_correction_bias");
  emit_f32(em, bias, {E}, gg_layer(i, "exp_probs_b.bias"), {E},
           normal_values(o.seed, bias, E, 0.0f, 0.05f));
  emit_experts(em, c, i, "w1", "ffn_gate_exps.weight", F, D);
  emit_experts(em, c, i, "w3", "ffn_up_exps.weight", F, D);
  emit_experts(em, c, i, "w2", "ffn_down_exps.weight", D, F);
  if (c.num_shared_experts > 0) {
    const int64_t Fs = F * c.num_shared_experts;
    emit_matrix(em, hf_layer(i, "block_sparse_moe.shared_experts.gate_proj.weight"),
                gg_layer(i, "ffn_gate_shexp.weight"), Fs, D, sd, t);
    emit_matrix(em, hf_layer(i, "block_sparse_moe.shared_experts.up_proj.weight"),
                gg_layer(i, "ffn_up_shexp.weight"), Fs, D, sd, t);
    emit_matrix(em, hf_layer(i, "block_sparse_moe.shared_experts.down_proj.weight"),
                gg_layer(i, "ffn_down_shexp.weight"), D, Fs, 1.0f / std::sqrt(static_cast<float>(Fs)), t);
  }
}

void emit_all(Emitter& em, const ModelConfig& c) {
  const MakeModelOptions& o = em.opt();
  const int64_t D = c.hidden_size;
  emit_matrix(em, "model.embed_tokens.weight", "token_embd.weight", c.vocab_size, D, 1.0f, o.dtype);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string an = hf_layer(i, "input_layernorm.weight");
    emit_f32(em, an, {D}, gg_layer(i, "attn_norm.weight"), {D}, norm_values(o, an, D));
    if (c.is_kda(i)) {
      emit_kda(em, c, i);
    } else {
      emit_mla(em, c, i);
    }
    const std::string fn = hf_layer(i, "post_attention_layernorm.weight");
    emit_f32(em, fn, {D}, gg_layer(i, "ffn_norm.weight"), {D}, norm_values(o, fn, D));
    if (c.is_moe(i)) {
      emit_moe(em, c, i);
    } else {
      emit_dense(em, c, i);
    }
  }
  emit_f32(em, "model.norm.weight", {D}, "output_norm.weight", {D}, norm_values(o, "model.norm.weight", D));
  emit_matrix(em, "lm_head.weight", "output.weight", c.vocab_size, D,
              1.0f / std::sqrt(static_cast<float>(D)), o.dtype);
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
