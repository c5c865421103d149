// The partition plan: TP ranges, pipeline stage split (exact min-max DP), and per-rank byte
// estimates computed from the config's shapes by walking the tensor table (W_UK and W_UV per
// head, small vectors widened to f32, as ModelWeights holds them).
#include "shard/partition.h"

#include <algorithm>
#include <iterator>
#include <limits>

#include <fmt/format.h>

#include "shard/tensor_table.h"

namespace kiln {
namespace {

uint64_t f32_bytes(int64_t n) { return static_cast<uint64_t>(n) * 4; }

// Bytes of layer `layer`'s tensors held by a rank with `plan`'s ranges.
uint64_t layer_bytes_for(const ModelConfig& c, int64_t layer, const RankPlan& plan, DType t) {
  uint64_t b = 0;
  for_each_layer_tensor(c, layer, [&](const TensorSpec& s) {
    if (s.held()) b += tensor_bytes(s, c, part_range(plan, s.part).size(), t);
  });
  return b;
}

// Bytes of a model-level tensor (embedding, final norm, lm_head) for `vocab` rows.
uint64_t model_tensor_bytes(const ModelConfig& c, Block b, int64_t vocab, DType t) {
  return tensor_bytes(tensor_of(b), c, vocab, t);
}

bool has_dense_layers(const ModelConfig& c) {
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.is_moe(l)) return c.intermediate_size > 0;
  }
  return false;
}
bool has_moe_layers(const ModelConfig& c) {
  return c.num_experts > 0 && c.num_layers > c.first_k_dense_replace;
}
int64_t shared_ffn_size(const ModelConfig& c) {
  return c.num_shared_experts * c.moe_intermediate_size;
}

// Every TP-split dimension must divide evenly (vocab excepted: it is cut unevenly).
Status check_tensor_divides(const ModelConfig& c, int tp) {
  auto divides = [tp](int64_t n) { return n % tp == 0; };
  if (c.num_kda_layers() > 0 && !divides(c.kda_num_heads)) {
    return invalid_argument("tensor={} does not divide {} KDA heads", tp, c.kda_num_heads);
  }
  if (c.num_mla_layers() > 0 && !divides(c.mla_num_heads)) {
    return invalid_argument("tensor={} does not divide {} MLA heads", tp, c.mla_num_heads);
  }
  if (has_dense_layers(c) && !divides(c.intermediate_size)) {
    return invalid_argument("tensor={} does not divide intermediate_size {}", tp,
                            c.intermediate_size);
  }
  if (has_moe_layers(c) && !divides(c.moe_intermediate_size)) {
    return invalid_argument("tensor={} does not divide moe_intermediate_size {}", tp,
                            c.moe_intermediate_size);
  }
  if (has_moe_layers(c) && !divides(shared_ffn_size(c))) {
    return invalid_argument("tensor={} does not divide the shared expert intermediate size {}", tp,
                            shared_ffn_size(c));
  }
  return Status::ok_status();
}

// Row-parallel weights are cut along their input (row) dimension, which for a quantised dtype
// must stay a whole number of blocks.
Status check_block_aligned(const ModelConfig& c, int tp, DType t) {
  const int64_t block = dtype_block_elems(t);
  if (block == 1) return Status::ok_status();
  struct Cut {
    bool present;
    const char* tensor;
    int64_t columns;
  };
  const Cut cuts[] = {
      {c.num_kda_layers() > 0, "KDA o_proj", c.kda_num_heads / tp * c.kda_head_dim},
      {c.num_mla_layers() > 0, "MLA o_proj", c.mla_num_heads / tp * c.v_head_dim},
      {has_dense_layers(c), "dense MLP down_proj", c.intermediate_size / tp},
      {has_moe_layers(c), "routed expert down_proj", c.moe_intermediate_size / tp},
      {has_moe_layers(c) && c.num_shared_experts > 0, "shared expert down_proj",
       shared_ffn_size(c) / tp},
  };
  for (const Cut& cut : cuts) {
    // K-quant files (q4_k_m and the like) store a matrix whose rows are not whole 256-blocks in
    // a 32-block type instead (llama.cpp's fallback; kiln writes q8_0), so such a matrix only
    // needs 32-aligned slices.
    const bool k_quant = t == DType::kQ4_K || t == DType::kQ6_K;
    const int64_t need = k_quant && (cut.columns * tp) % block != 0 ? kQ8Block : block;
    if (cut.present && cut.columns % need != 0) {
      return invalid_argument(
          "tensor={} cuts {} into slices of {} input columns, not a multiple of the {} block "
          "of {}",
          tp, cut.tensor, cut.columns, need == block ? dtype_name(t) : "q8_0", need);
    }
  }
  return Status::ok_status();
}

Status check_explicit_split(const ModelConfig& c, const ParallelSpec& spec) {
  const auto& split = spec.layer_split;
  if (static_cast<int64_t>(split.size()) != spec.pipeline) {
    return invalid_argument("layer_split lists {} stages, pipeline={}", split.size(),
                            spec.pipeline);
  }
  int64_t sum = 0;
  for (size_t s = 0; s < split.size(); ++s) {
    if (split[s] < 1) {
      return invalid_argument("layer_split stage {} has {} layers; every stage needs at least 1", s,
                              split[s]);
    }
    sum += split[s];
  }
  if (sum != c.num_layers) {
    return invalid_argument("layer_split sums to {}, model has {} layers", sum, c.num_layers);
  }
  return Status::ok_status();
}

StatusOr<std::vector<Range>> stage_ranges(const ModelConfig& c, const ParallelSpec& spec, DType t,
                                          const std::vector<uint64_t>& layer_bytes) {
  if (spec.pipeline > c.num_layers) {
    return invalid_argument("pipeline={} exceeds {} layers", spec.pipeline, c.num_layers);
  }
  if (!spec.layer_split.empty()) {
    KILN_RETURN_IF_ERROR(check_explicit_split(c, spec));
    std::vector<Range> stages;
    int64_t at = 0;
    for (int64_t n : spec.layer_split) {
      stages.push_back({at, at + n});
      at += n;
    }
    return stages;
  }
  if (layer_bytes.empty()) return split_layers(pipeline_balance_bytes(c, t), spec.pipeline);
  if (static_cast<int64_t>(layer_bytes.size()) != c.num_layers) {
    return invalid_argument("layer_bytes has {} entries, model has {} layers", layer_bytes.size(),
                            c.num_layers);
  }
  return split_layers(layer_bytes, spec.pipeline);
}

Status check_spec(const ModelConfig& c, const ParallelSpec& spec, DType t) {
  if (spec.tensor < 1) return invalid_argument("tensor={} must be at least 1", spec.tensor);
  if (spec.pipeline < 1) return invalid_argument("pipeline={} must be at least 1", spec.pipeline);
  KILN_RETURN_IF_ERROR(check_tensor_divides(c, spec.tensor));
  return check_block_aligned(c, spec.tensor, t);
}

// Slice `tp_rank` of `n` split evenly over `tp` (callers checked divisibility).
Range even_slice(int64_t n, int tp, int tp_rank) {
  return {n / tp * tp_rank, n / tp * (tp_rank + 1)};
}
// Ceil-sized contiguous slice; trailing ranks may get fewer (or no) rows.
Range ceil_slice(int64_t n, int tp, int tp_rank) {
  const int64_t chunk = (n + tp - 1) / tp;
  const int64_t begin = std::min(n, chunk * tp_rank);
  return {begin, std::min(n, begin + chunk)};
}

RankPlan make_plan(const ModelConfig& c, const ParallelSpec& spec, int rank,
                   const std::vector<Range>& stages) {
  RankPlan p;
  p.rank = rank;
  p.tensor = spec.tensor;
  p.pipeline = spec.pipeline;
  p.tp_rank = rank % spec.tensor;
  p.pp_stage = rank / spec.tensor;
  p.layers = stages[static_cast<size_t>(p.pp_stage)];
  p.kda_heads = even_slice(c.kda_num_heads, p.tensor, p.tp_rank);
  p.mla_heads = even_slice(c.mla_num_heads, p.tensor, p.tp_rank);
  p.dense_ffn = even_slice(has_dense_layers(c) ? c.intermediate_size : 0, p.tensor, p.tp_rank);
  p.expert_ffn = even_slice(has_moe_layers(c) ? c.moe_intermediate_size : 0, p.tensor, p.tp_rank);
  p.shared_ffn = even_slice(has_moe_layers(c) ? shared_ffn_size(c) : 0, p.tensor, p.tp_rank);
  p.vocab = ceil_slice(c.vocab_size, p.tensor, p.tp_rank);
  return p;
}

std::string human_bytes(uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  auto v = static_cast<double>(b);
  size_t u = 0;
  while (v >= 1024.0 && u + 1 < std::size(units)) v /= 1024.0, ++u;
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.2f} {}", v, units[u]);
}

}  // namespace

StatusOr<RankPlan> plan_rank(const ModelConfig& config, const ParallelSpec& spec, int rank,
                             DType weight_dtype, const std::vector<uint64_t>& layer_bytes) {
  KILN_RETURN_IF_ERROR(check_spec(config, spec, weight_dtype));
  const int world = spec.tensor * spec.pipeline;
  if (rank < 0 || rank >= world) {
    return invalid_argument("rank {} is outside 0..{} (tensor={} × pipeline={})", rank, world - 1,
                            spec.tensor, spec.pipeline);
  }
  KILN_ASSIGN_OR_RETURN(std::vector<Range> stages,
                        stage_ranges(config, spec, weight_dtype, layer_bytes));
  return make_plan(config, spec, rank, stages);
}

StatusOr<std::vector<RankPlan>> plan_all(const ModelConfig& config, const ParallelSpec& spec,
                                         DType weight_dtype,
                                         const std::vector<uint64_t>& layer_bytes) {
  KILN_RETURN_IF_ERROR(check_spec(config, spec, weight_dtype));
  KILN_ASSIGN_OR_RETURN(std::vector<Range> stages,
                        stage_ranges(config, spec, weight_dtype, layer_bytes));
  std::vector<RankPlan> plans;
  plans.reserve(static_cast<size_t>(spec.tensor) * static_cast<size_t>(spec.pipeline));
  for (int r = 0; r < spec.tensor * spec.pipeline; ++r) {
    plans.push_back(make_plan(config, spec, r, stages));
  }
  return plans;
}

StatusOr<std::vector<Range>> split_layers(const std::vector<uint64_t>& layer_bytes, int pipeline) {
  const size_t n = layer_bytes.size();
  if (pipeline < 1) return invalid_argument("pipeline={} must be at least 1", pipeline);
  if (static_cast<size_t>(pipeline) > n) {
    return invalid_argument("pipeline={} exceeds {} layers", pipeline, n);
  }
  const auto stages = static_cast<size_t>(pipeline);
  std::vector<uint64_t> prefix(n + 1, 0);
  for (size_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + layer_bytes[i];
  // best[s][i]: smallest possible largest stage when layers [0, i) form s + 1 stages;
  // cut[s][i]: where the last of those stages begins (the latest among optimal choices).
  constexpr uint64_t kInf = std::numeric_limits<uint64_t>::max();
  std::vector<std::vector<uint64_t>> best(stages, std::vector<uint64_t>(n + 1, kInf));
  std::vector<std::vector<size_t>> cut(stages, std::vector<size_t>(n + 1, 0));
  for (size_t i = 1; i <= n; ++i) best[0][i] = prefix[i];
  for (size_t s = 1; s < stages; ++s) {
    for (size_t i = s + 1; i <= n; ++i) {
      for (size_t j = s; j < i; ++j) {
        const uint64_t cost = std::max(best[s - 1][j], prefix[i] - prefix[j]);
        if (cost <= best[s][i]) best[s][i] = cost, cut[s][i] = j;
      }
    }
  }
  std::vector<Range> out(stages);
  size_t end = n;
  for (size_t s = stages; s-- > 0;) {
    const size_t begin = s == 0 ? 0 : cut[s][end];
    out[s] = {static_cast<int64_t>(begin), static_cast<int64_t>(end)};
    end = begin;
  }
  return out;
}

std::vector<uint64_t> layer_weight_bytes(const ModelConfig& config, DType dtype) {
  const RankPlan whole = whole_model_plan(config);
  std::vector<uint64_t> out;
  for (int64_t l = 0; l < config.num_layers; ++l) {
    out.push_back(layer_bytes_for(config, l, whole, dtype));
  }
  return out;
}

std::vector<uint64_t> pipeline_balance_bytes(const ModelConfig& config, DType dtype) {
  std::vector<uint64_t> out = layer_weight_bytes(config, dtype);
  if (out.empty()) return out;
  const int64_t vocab = config.vocab_size;
  out.front() += model_tensor_bytes(config, Block::kEmbedding, vocab, dtype);
  // A tied table is still held by the last stage when the pipeline has more than one.
  out.back() += model_tensor_bytes(config, Block::kLmHead, vocab, dtype) +
                model_tensor_bytes(config, Block::kFinalNorm, vocab, dtype);
  return out;
}

RankMemory estimate_rank_memory(const ModelConfig& config, const RankPlan& plan, DType dtype) {
  const ModelConfig& c = config;
  RankMemory m;
  const int64_t channels = plan.kda_heads.size() * c.kda_head_dim;
  const int64_t kda_floats = 3 * (c.kda_conv_kernel - 1) * channels +  // conv windows q, k, v
                             channels * c.kda_head_dim;                // [h][K][V]
  for (int64_t l = plan.layers.begin; l < plan.layers.end; ++l) {
    m.weight_bytes += layer_bytes_for(c, l, plan, dtype);
    if (c.is_kda(l)) {
      m.kda_state_bytes_per_sequence += f32_bytes(kda_floats);
    } else {
      m.mla_bytes_per_token += f32_bytes(c.mla_latent_dim());
    }
  }
  const int64_t vocab = plan.vocab.size();
  if (plan.first_stage()) m.weight_bytes += model_tensor_bytes(c, Block::kEmbedding, vocab, dtype);
  if (plan.last_stage()) {
    // lm_head rows (the embedding's own, when tied and this stage already holds them) + final norm
    if (!(c.tie_word_embeddings && plan.first_stage())) {
      m.weight_bytes += model_tensor_bytes(c, Block::kLmHead, vocab, dtype);
    }
    m.weight_bytes += model_tensor_bytes(c, Block::kFinalNorm, vocab, dtype);
  }
  return m;
}

std::string describe_plan(const ModelConfig& config, const RankPlan& plan, const RankMemory& mem) {
  const ModelConfig& c = config;
  int64_t kda = 0, mla = 0, dense = 0;
  for (int64_t l = plan.layers.begin; l < plan.layers.end; ++l) {
    (c.is_kda(l) ? kda : mla) += 1;
    dense += c.is_moe(l) ? 0 : 1;
  }
  auto range = [](const Range& r, int64_t total) {
    return fmt::format("[{}, {}) of {}", r.begin, r.end, total);
  };
  std::string s = fmt::format(
      "rank {} (tp rank {} of {}, pipeline stage {} of {}): layers [{}, {}) ({} KDA, {} MLA, "
      "{} dense)",
      plan.rank, plan.tp_rank, plan.tensor, plan.pp_stage, plan.pipeline, plan.layers.begin,
      plan.layers.end, kda, mla, dense);
  if (kda > 0) s += "; KDA heads " + range(plan.kda_heads, c.kda_num_heads);
  if (mla > 0) s += "; MLA heads " + range(plan.mla_heads, c.mla_num_heads);
  if (dense > 0) s += "; dense FFN " + range(plan.dense_ffn, c.intermediate_size);
  if (plan.layers.size() > dense && c.num_experts > 0) {
    s += fmt::format("; expert FFN {} in each of {} experts",
                     range(plan.expert_ffn, c.moe_intermediate_size), c.num_experts);
    if (c.num_shared_experts > 0) s += "; shared FFN " + range(plan.shared_ffn, shared_ffn_size(c));
  }
  const char* tables = plan.first_stage() && plan.last_stage() ? "embedding and lm_head"
                       : plan.first_stage()                    ? "embedding"
                       : plan.last_stage()                     ? "lm_head"
                                                               : nullptr;
  if (tables) s += fmt::format("; {} rows {}", tables, range(plan.vocab, c.vocab_size));
  s += fmt::format(
      ". Holds {} of weights, {} of KDA state per sequence, {} of MLA latent per "
      "token (replicated in the TP group).",
      human_bytes(mem.weight_bytes), human_bytes(mem.kda_state_bytes_per_sequence),
      human_bytes(mem.mla_bytes_per_token));
  return s;
}

RankPlan whole_model_plan(const ModelConfig& c) {
  RankPlan p;
  p.layers = {0, c.num_layers};
  p.kda_heads = {0, c.kda_num_heads};
  p.mla_heads = {0, c.mla_num_heads};
  p.dense_ffn = {0, c.intermediate_size};
  p.expert_ffn = {0, c.moe_intermediate_size};
  p.shared_ffn = {0, c.moe_intermediate_size * c.num_shared_experts};
  p.vocab = {0, c.vocab_size};
  return p;
}

}  // namespace kiln
