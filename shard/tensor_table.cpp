// The tensor table's entries and the walks over them.
#include "shard/tensor_table.h"

#include <fmt/format.h>

#include "kernels/base/check.h"

namespace kiln {
namespace {

// Slots: where an entry's views live in ModelWeights.
template <auto... path>
MatrixView& layer_matrix(ModelWeights& w, int64_t layer, int64_t) {
  return (w.layers[static_cast<size_t>(layer)] .* ... .* path);
}
template <auto... path>
FloatView& layer_floats(ModelWeights& w, int64_t layer) {
  return (w.layers[static_cast<size_t>(layer)] .* ... .* path);
}
template <auto member>
MatrixView& expert_matrix(ModelWeights& w, int64_t layer, int64_t e) {
  return w.layers[static_cast<size_t>(layer)].moe.experts[static_cast<size_t>(e)].*member;
}
template <auto heads>
MatrixView& head_matrix(ModelWeights& w, int64_t layer, int64_t h) {
  return (w.layers[static_cast<size_t>(layer)].mla.*heads)[static_cast<size_t>(h)];
}
template <auto member>
MatrixView& model_matrix(ModelWeights& w, int64_t, int64_t) {
  return w.*member;
}
template <auto member>
FloatView& model_floats(ModelWeights& w, int64_t) {
  return w.*member;
}

using B = Block;
using S = Size;
using L = LayerWeights;
using K = KdaWeights;
using A = MlaWeights;
using M = MlpWeights;

const TensorSpec kTable[] = {
    {.block = B::kEmbedding, .hf = "model.embed_tokens.weight", .gguf = "token_embd.weight",
     .rows = S::kVocab, .cols = S::kHidden, .cut = Cut::kColumn, .part = Part::kVocab,
     .init = Init::kEmbedding, .matrix = model_matrix<&ModelWeights::embed>},
    {.block = B::kAttnNorm, .hf = "model.layers.{}.input_layernorm.weight",
     .gguf = "blk.{}.attn_norm.weight", .kind = Kind::kFloats, .layout = Layout::kVector,
     .rows = S::kHidden, .init = Init::kNorm, .floats = layer_floats<&L::attn_norm>},
    // KDA (kimi-linear.md §3): q/k/v and their conv taps, the gates, the output.
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.q_proj.weight",
     .gguf = "blk.{}.attn_q.weight",
     .rows = S::kKdaChannels, .cols = S::kHidden, .cut = Cut::kColumn, .part = Part::kKdaHeads,
     .unit = S::kKdaHeadDim, .matrix = layer_matrix<&L::kda, &K::q>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.k_proj.weight",
     .gguf = "blk.{}.attn_k.weight",
     .rows = S::kKdaChannels, .cols = S::kHidden, .cut = Cut::kColumn, .part = Part::kKdaHeads,
     .unit = S::kKdaHeadDim, .matrix = layer_matrix<&L::kda, &K::k>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.v_proj.weight",
     .gguf = "blk.{}.attn_v.weight",
     .rows = S::kKdaChannels, .cols = S::kHidden, .cut = Cut::kColumn, .part = Part::kKdaHeads,
     .unit = S::kKdaHeadDim, .mix = Mix::kAttnV, .matrix = layer_matrix<&L::kda, &K::v>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.q_conv1d.weight",
     .gguf = "blk.{}.ssm_conv1d_q.weight", .kind = Kind::kFloats, .layout = Layout::kConv,
     .rows = S::kKdaChannels, .cols = S::kKdaTaps, .cut = Cut::kColumn, .part = Part::kKdaHeads,
     .unit = S::kKdaHeadDim, .init = Init::kConv, .floats = layer_floats<&L::kda, &K::conv_q>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.k_conv1d.weight",
     .gguf = "blk.{}.ssm_conv1d_k.weight", .kind = Kind::kFloats, .layout = Layout::kConv,
     .rows = S::kKdaChannels, .cols = S::kKdaTaps, .cut = Cut::kColumn, .part = Part::kKdaHeads,
     .unit = S::kKdaHeadDim, .init = Init::kConv, .floats = layer_floats<&L::kda, &K::conv_k>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.v_conv1d.weight",
     .gguf = "blk.{}.ssm_conv1d_v.weight", .kind = Kind::kFloats, .layout = Layout::kConv,
     .rows = S::kKdaChannels, .cols = S::kKdaTaps, .cut = Cut::kColumn, .part = Part::kKdaHeads,
     .unit = S::kKdaHeadDim, .init = Init::kConv, .floats = layer_floats<&L::kda, &K::conv_v>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.f_a_proj.weight",
     .gguf = "blk.{}.ssm_f_a.weight", .rows = S::kKdaRank, .cols = S::kHidden,
     .matrix = layer_matrix<&L::kda, &K::f_a>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.f_b_proj.weight",
     .gguf = "blk.{}.ssm_f_b.weight", .rows = S::kKdaChannels, .cols = S::kKdaRank,
     .cut = Cut::kColumn, .part = Part::kKdaHeads, .unit = S::kKdaHeadDim,
     .matrix = layer_matrix<&L::kda, &K::f_b>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.dt_bias", .gguf = "blk.{}.ssm_dt.bias",
     .kind = Kind::kFloats, .layout = Layout::kVector, .rows = S::kKdaChannels,
     .cut = Cut::kColumn, .part = Part::kKdaHeads, .unit = S::kKdaHeadDim,
     .init = Init::kDtBias, .floats = layer_floats<&L::kda, &K::dt_bias>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.A_log", .gguf = "blk.{}.ssm_a",
     .kind = Kind::kFloats, .layout = Layout::kHeadVector, .rows = S::kKdaHeads,
     .cut = Cut::kColumn, .part = Part::kKdaHeads, .special = Special::kNegExp,
     .init = Init::kALog, .floats = layer_floats<&L::kda, &K::a_neg>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.b_proj.weight",
     .gguf = "blk.{}.ssm_beta.weight", .rows = S::kKdaHeads, .cols = S::kHidden,
     .cut = Cut::kColumn, .part = Part::kKdaHeads, .matrix = layer_matrix<&L::kda, &K::b>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.g_a_proj.weight",
     .gguf = "blk.{}.ssm_g_a.weight", .rows = S::kKdaRank, .cols = S::kHidden,
     .matrix = layer_matrix<&L::kda, &K::g_a>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.g_b_proj.weight",
     .gguf = "blk.{}.ssm_g_b.weight", .rows = S::kKdaChannels, .cols = S::kKdaRank,
     .cut = Cut::kColumn, .part = Part::kKdaHeads, .unit = S::kKdaHeadDim,
     .matrix = layer_matrix<&L::kda, &K::g_b>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.o_norm.weight",
     .gguf = "blk.{}.ssm_norm.weight", .kind = Kind::kFloats, .layout = Layout::kVector,
     .rows = S::kKdaHeadDim, .init = Init::kNorm, .floats = layer_floats<&L::kda, &K::o_norm>},
    {.block = B::kKda, .hf = "model.layers.{}.self_attn.o_proj.weight",
     .gguf = "blk.{}.attn_output.weight", .rows = S::kHidden, .cols = S::kKdaChannels,
     .cut = Cut::kRow, .part = Part::kKdaHeads, .unit = S::kKdaHeadDim,
     .matrix = layer_matrix<&L::kda, &K::o>},
    // MLA (kimi-linear.md §4): W_UK is kept absorbed [R][N] per head, W_UV [V][R] per head.
    {.block = B::kMla, .hf = "model.layers.{}.self_attn.q_proj.weight",
     .gguf = "blk.{}.attn_q.weight",
     .rows = S::kMlaQ, .cols = S::kHidden, .cut = Cut::kColumn, .part = Part::kMlaHeads,
     .unit = S::kMlaQHeadDim, .matrix = layer_matrix<&L::mla, &A::q>},
    {.block = B::kMla, .hf = "model.layers.{}.self_attn.kv_a_proj_with_mqa.weight",
     .gguf = "blk.{}.attn_kv_a_mqa.weight", .rows = S::kMlaLatent, .cols = S::kHidden,
     .matrix = layer_matrix<&L::mla, &A::kv_a>},
    {.block = B::kMla, .hf = "model.layers.{}.self_attn.kv_a_layernorm.weight",
     .gguf = "blk.{}.attn_kv_a_norm.weight", .kind = Kind::kFloats, .layout = Layout::kVector,
     .rows = S::kKvLoraRank, .init = Init::kNorm, .floats = layer_floats<&L::mla, &A::kv_a_norm>},
    {.block = B::kMla, .hf = "model.layers.{}.self_attn.kv_b_proj.weight",
     .gguf = "blk.{}.attn_kv_b.weight", .rows = S::kMlaKvB, .cols = S::kKvLoraRank,
     .cut = Cut::kColumn, .part = Part::kMlaHeads, .unit = S::kMlaKvHeadDim,
     .special = Special::kKvB},
    {.block = B::kMla, .hf = nullptr, .gguf = "blk.{}.attn_k_b.weight", .rows = S::kKvLoraRank,
     .cols = S::kNope, .stack = Stack::kHeads, .cut = Cut::kStack, .part = Part::kMlaHeads,
     .special = Special::kKB, .matrix = head_matrix<&A::k_b>},
    {.block = B::kMla, .hf = nullptr, .gguf = "blk.{}.attn_v_b.weight", .rows = S::kVHeadDim,
     .cols = S::kKvLoraRank, .stack = Stack::kHeads, .cut = Cut::kStack, .part = Part::kMlaHeads,
     .special = Special::kVB, .matrix = head_matrix<&A::v_b>},
    {.block = B::kMla, .hf = "model.layers.{}.self_attn.o_proj.weight",
     .gguf = "blk.{}.attn_output.weight", .rows = S::kHidden, .cols = S::kMlaO, .cut = Cut::kRow,
     .part = Part::kMlaHeads, .unit = S::kVHeadDim, .matrix = layer_matrix<&L::mla, &A::o>},
    {.block = B::kFfnNorm, .hf = "model.layers.{}.post_attention_layernorm.weight",
     .gguf = "blk.{}.ffn_norm.weight", .kind = Kind::kFloats, .layout = Layout::kVector,
     .rows = S::kHidden, .init = Init::kNorm, .floats = layer_floats<&L::ffn_norm>},
    // Dense SwiGLU MLP, cut on its intermediate dimension.
    {.block = B::kDense, .hf = "model.layers.{}.mlp.gate_proj.weight",
     .gguf = "blk.{}.ffn_gate.weight",
     .rows = S::kFfn, .cols = S::kHidden, .cut = Cut::kColumn, .part = Part::kDenseFfn,
     .matrix = layer_matrix<&L::dense, &M::gate>},
    {.block = B::kDense, .hf = "model.layers.{}.mlp.up_proj.weight", .gguf = "blk.{}.ffn_up.weight",
     .rows = S::kFfn, .cols = S::kHidden, .cut = Cut::kColumn, .part = Part::kDenseFfn,
     .matrix = layer_matrix<&L::dense, &M::up>},
    {.block = B::kDense, .hf = "model.layers.{}.mlp.down_proj.weight",
     .gguf = "blk.{}.ffn_down.weight",
     .rows = S::kHidden, .cols = S::kFfn, .cut = Cut::kRow, .part = Part::kDenseFfn,
     .mix = Mix::kFfnDown, .matrix = layer_matrix<&L::dense, &M::down>},
    // MoE: router and its selection bias (replicated), routed experts, the shared expert.
    {.block = B::kMoeGate, .hf = "model.layers.{}.block_sparse_moe.gate.weight",
     .gguf = "blk.{}.ffn_gate_inp.weight", .kind = Kind::kRouter, .rows = S::kExperts,
     .cols = S::kHidden, .matrix = layer_matrix<&L::moe, &MoeWeights::router>},
    {.block = B::kMoeGate, .hf = "model.layers.{}.block_sparse_moe.gate.e_score_correction_bias",
     .gguf = "blk.{}.exp_probs_b.bias", .kind = Kind::kFloats, .layout = Layout::kVector,
     .rows = S::kExperts, .special = Special::kOptional, .init = Init::kBias,
     .floats = layer_floats<&L::moe, &MoeWeights::bias>},
    {.block = B::kExperts, .hf = "model.layers.{}.block_sparse_moe.experts.{}.w1.weight",
     .gguf = "blk.{}.ffn_gate_exps.weight", .rows = S::kExpertFfn, .cols = S::kHidden,
     .stack = Stack::kExperts, .cut = Cut::kColumn, .part = Part::kExpertFfn,
     .matrix = expert_matrix<&M::gate>},
    {.block = B::kExperts, .hf = "model.layers.{}.block_sparse_moe.experts.{}.w3.weight",
     .gguf = "blk.{}.ffn_up_exps.weight", .rows = S::kExpertFfn, .cols = S::kHidden,
     .stack = Stack::kExperts, .cut = Cut::kColumn, .part = Part::kExpertFfn,
     .matrix = expert_matrix<&M::up>},
    {.block = B::kExperts, .hf = "model.layers.{}.block_sparse_moe.experts.{}.w2.weight",
     .gguf = "blk.{}.ffn_down_exps.weight", .rows = S::kHidden, .cols = S::kExpertFfn,
     .stack = Stack::kExperts, .cut = Cut::kRow, .part = Part::kExpertFfn, .mix = Mix::kFfnDown,
     .matrix = expert_matrix<&M::down>},
    {.block = B::kSharedExpert,
     .hf = "model.layers.{}.block_sparse_moe.shared_experts.gate_proj.weight",
     .gguf = "blk.{}.ffn_gate_shexp.weight", .rows = S::kSharedFfn, .cols = S::kHidden,
     .cut = Cut::kColumn, .part = Part::kSharedFfn,
     .matrix = layer_matrix<&L::moe, &MoeWeights::shared, &M::gate>},
    {.block = B::kSharedExpert,
     .hf = "model.layers.{}.block_sparse_moe.shared_experts.up_proj.weight",
     .gguf = "blk.{}.ffn_up_shexp.weight", .rows = S::kSharedFfn, .cols = S::kHidden,
     .cut = Cut::kColumn, .part = Part::kSharedFfn,
     .matrix = layer_matrix<&L::moe, &MoeWeights::shared, &M::up>},
    {.block = B::kSharedExpert,
     .hf = "model.layers.{}.block_sparse_moe.shared_experts.down_proj.weight",
     .gguf = "blk.{}.ffn_down_shexp.weight", .rows = S::kHidden, .cols = S::kSharedFfn,
     .cut = Cut::kRow, .part = Part::kSharedFfn, .mix = Mix::kFfnDown,
     .matrix = layer_matrix<&L::moe, &MoeWeights::shared, &M::down>},
    {.block = B::kFinalNorm, .hf = "model.norm.weight", .gguf = "output_norm.weight",
     .kind = Kind::kFloats, .layout = Layout::kVector, .rows = S::kHidden, .init = Init::kNorm,
     .floats = model_floats<&ModelWeights::final_norm>},
    {.block = B::kLmHead, .hf = "lm_head.weight", .gguf = "output.weight", .rows = S::kVocab,
     .cols = S::kHidden, .cut = Cut::kColumn, .part = Part::kVocab, .special = Special::kTiedHead,
     .mix = Mix::kOutput, .matrix = model_matrix<&ModelWeights::lm_head>},
};

bool model_level(Block b) {
  return b == Block::kEmbedding || b == Block::kFinalNorm || b == Block::kLmHead;
}

uint64_t u64(int64_t v) { return static_cast<uint64_t>(v); }

// Bytes of a [rows][cols] matrix; a partial trailing block is counted whole.
uint64_t matrix_bytes(DType t, int64_t rows, int64_t cols) {
  const int64_t be = dtype_block_elems(t);
  return u64(rows) * u64((cols + be - 1) / be * dtype_block_bytes(t));
}

// Entries of a stacked slot in `w` (the rank's experts or heads).
int64_t slot_count(const TensorSpec& s, const ModelWeights& w, int64_t layer) {
  const LayerWeights& l = w.layers[static_cast<size_t>(layer)];
  switch (s.stack) {
    case Stack::kNone: return 1;
    case Stack::kExperts: return static_cast<int64_t>(l.moe.experts.size());
    case Stack::kHeads:
      return static_cast<int64_t>(s.special == Special::kKB ? l.mla.k_b.size() : l.mla.v_b.size());
  }
  return 1;
}

}  // namespace

bool block_present(Block b, const ModelConfig& c, int64_t layer) {
  switch (b) {
    case Block::kEmbedding:
    case Block::kFinalNorm:
    case Block::kLmHead:
    case Block::kAttnNorm:
    case Block::kFfnNorm: return true;
    case Block::kKda: return c.is_kda(layer);
    case Block::kMla: return !c.is_kda(layer);
    case Block::kDense: return !c.is_moe(layer);
    case Block::kMoeGate:
    case Block::kExperts: return c.is_moe(layer);
    case Block::kSharedExpert: return c.is_moe(layer) && c.num_shared_experts > 0;
  }
  return false;
}

int64_t size_of(const ModelConfig& c, Size s) {
  switch (s) {
    case Size::kOne: return 1;
    case Size::kHidden: return c.hidden_size;
    case Size::kVocab: return c.vocab_size;
    case Size::kKdaHeads: return c.kda_num_heads;
    case Size::kKdaHeadDim: return c.kda_head_dim;
    case Size::kKdaChannels: return c.kda_proj_dim();
    case Size::kKdaRank: return c.kda_gate_rank;
    case Size::kKdaTaps: return c.kda_conv_kernel;
    case Size::kMlaHeads: return c.mla_num_heads;
    case Size::kMlaQ: return c.mla_num_heads * c.mla_qk_head_dim();
    case Size::kMlaQHeadDim: return c.mla_qk_head_dim();
    case Size::kMlaLatent: return c.mla_latent_dim();
    case Size::kKvLoraRank: return c.kv_lora_rank;
    case Size::kNope: return c.qk_nope_head_dim;
    case Size::kVHeadDim: return c.v_head_dim;
    case Size::kMlaKvB: return c.mla_num_heads * (c.qk_nope_head_dim + c.v_head_dim);
    case Size::kMlaKvHeadDim: return c.qk_nope_head_dim + c.v_head_dim;
    case Size::kMlaO: return c.mla_num_heads * c.v_head_dim;
    case Size::kFfn: return c.intermediate_size;
    case Size::kExperts: return c.num_experts;
    case Size::kExpertFfn: return c.moe_intermediate_size;
    case Size::kSharedFfn: return c.num_shared_experts * c.moe_intermediate_size;
  }
  return 0;
}

std::string TensorSpec::hf_name(int64_t layer, int64_t expert) const {
  KILN_CHECK(hf != nullptr);
  return fmt::format(fmt::runtime(hf), layer, expert);
}

std::string TensorSpec::gguf_name(int64_t layer) const {
  KILN_CHECK(gguf != nullptr);
  return fmt::format(fmt::runtime(gguf), layer);
}

std::vector<int64_t> TensorSpec::hf_shape(const ModelConfig& c) const {
  const int64_t r = size_of(c, rows), k = size_of(c, cols);
  switch (layout) {
    case Layout::kMatrix: return {r, k};
    case Layout::kVector: return {r};
    case Layout::kConv: return {r, 1, k};
    case Layout::kHeadVector: return {1, 1, r, 1};
  }
  return {};
}

std::vector<int64_t> TensorSpec::gguf_shape(const ModelConfig& c) const {
  const int64_t r = size_of(c, rows), k = size_of(c, cols);
  switch (layout) {
    case Layout::kMatrix:
      if (stack == Stack::kNone) return {k, r};
      return {k, r, stack_count(c)};
    case Layout::kVector: return {r};
    case Layout::kConv: return {k, 1, r, 1};
    case Layout::kHeadVector: return {1, r, 1, 1};
  }
  return {};
}

std::vector<int64_t> TensorSpec::expected_shape(const ModelConfig& c) const {
  const int64_t r = size_of(c, rows), k = size_of(c, cols);
  return layout == Layout::kMatrix || layout == Layout::kConv ? std::vector<int64_t>{r, k}
                                                              : std::vector<int64_t>{r};
}

int64_t TensorSpec::stack_count(const ModelConfig& c) const {
  switch (stack) {
    case Stack::kNone: return 1;
    case Stack::kExperts: return c.num_experts;
    case Stack::kHeads: return c.mla_num_heads;
  }
  return 1;
}

std::span<const TensorSpec> tensor_table() { return kTable; }

const TensorSpec& tensor_with(Special s) {
  for (const TensorSpec& t : kTable) {
    if (t.special == s) return t;
  }
  KILN_CHECK(false);
  return kTable[0];
}

const TensorSpec& tensor_of(Block b) {
  for (const TensorSpec& t : kTable) {
    if (t.block == b) return t;
  }
  KILN_CHECK(false);
  return kTable[0];
}

void for_each_layer_tensor(const ModelConfig& c, int64_t layer,
                           const std::function<void(const TensorSpec&)>& fn) {
  for (const TensorSpec& t : kTable) {
    if (!model_level(t.block) && block_present(t.block, c, layer)) fn(t);
  }
}

void for_each_tensor(const ModelConfig& c, Range layers,
                     const std::function<void(const TensorSpec&, int64_t layer)>& fn) {
  fn(tensor_of(Block::kEmbedding), -1);
  for (int64_t l = layers.begin; l < layers.end; ++l) {
    for_each_layer_tensor(c, l, [&](const TensorSpec& t) { fn(t, l); });
  }
  fn(tensor_of(Block::kFinalNorm), -1);
  fn(tensor_of(Block::kLmHead), -1);
}

DType tensor_dtype(const TensorSpec& s, DType t) {
  switch (s.kind) {
    case Kind::kMatrix: return t;
    case Kind::kRouter: return dtype_block_elems(t) > 1 ? DType::kF32 : t;
    case Kind::kFloats: return DType::kF32;
  }
  return t;
}

Range part_range(const RankPlan& p, Part part) {
  switch (part) {
    case Part::kNone: return {};
    case Part::kKdaHeads: return p.kda_heads;
    case Part::kMlaHeads: return p.mla_heads;
    case Part::kDenseFfn: return p.dense_ffn;
    case Part::kExpertFfn: return p.expert_ffn;
    case Part::kSharedFfn: return p.shared_ffn;
    case Part::kVocab: return p.vocab;
  }
  return {};
}

uint64_t tensor_bytes(const TensorSpec& s, const ModelConfig& c, int64_t share, DType t) {
  int64_t rows = size_of(c, s.rows), cols = size_of(c, s.cols), count = s.stack_count(c);
  const int64_t unit = size_of(c, s.unit);
  switch (s.cut) {
    case Cut::kReplicated: break;
    case Cut::kColumn: rows = share * unit; break;
    case Cut::kRow: cols = share * unit; break;
    case Cut::kStack: count = share; break;
  }
  if (s.kind == Kind::kFloats) return u64(count * rows * cols) * 4;
  return u64(count) * matrix_bytes(tensor_dtype(s, t), rows, cols);
}

void for_each_weight(ModelWeights& w, const ModelConfig& c, const MatrixVisitor& matrix,
                     const FloatVisitor& floats) {
  for_each_tensor(c, w.layers_loaded, [&](const TensorSpec& s, int64_t layer) {
    if (s.floats != nullptr) {
      FloatView& f = s.floats(w, layer);
      if (floats && !f.empty()) floats(s, layer, f);
      return;
    }
    if (s.matrix == nullptr || !matrix) return;
    const int64_t n = slot_count(s, w, layer);
    for (int64_t i = 0; i < n; ++i) {
      MatrixView& m = s.matrix(w, layer, i);
      if (m.data != nullptr && m.rows > 0) matrix(s, layer, s.stack == Stack::kNone ? -1 : i, m);
    }
  });
}

void for_each_weight(const ModelWeights& w, const ModelConfig& c,
                     const std::function<void(const TensorSpec&, int64_t, int64_t,
                                              const MatrixView&)>& matrix,
                     const std::function<void(const TensorSpec&, int64_t, const FloatView&)>&
                         floats) {
  // The visitors only read: the slots are reached through the mutable walk.
  auto& mut = const_cast<ModelWeights&>(w);
  MatrixVisitor m;
  if (matrix) {
    m = [&](const TensorSpec& s, int64_t l, int64_t i, MatrixView& v) { matrix(s, l, i, v); };
  }
  FloatVisitor f;
  if (floats) f = [&](const TensorSpec& s, int64_t l, FloatView& v) { floats(s, l, v); };
  for_each_weight(mut, c, m, f);
}

uint64_t view_bytes(const MatrixView& m) {
  return static_cast<uint64_t>(m.rows * dtype_row_bytes(m.dtype, m.cols));
}

}  // namespace kiln
