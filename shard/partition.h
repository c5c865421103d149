// The partition plan: which layers, heads, FFN slices and vocab rows each rank of a
// tensor × pipeline job owns (architecture.md §4, kimi-linear.md §7), and what that costs in
// weight and state bytes. Pure functions of the config: no I/O, no collectives. The parallel
// layers slice tensors with these ranges; nothing else decides a split.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/base/dtype.h"
#include "kernels/base/status.h"
#include "shard/config.h"

namespace kiln {

// Half-open index range [begin, end).
struct Range {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const Range&) const = default;
};

struct ParallelSpec {
  int tensor = 1;    // TP group size
  int pipeline = 1;  // number of stages
  // Layers per stage, first stage first; empty = contiguous stages balanced by weight bytes.
  std::vector<int64_t> layer_split;
};

// What rank `rank` owns. Ranks are numbered rank = pp_stage * tensor + tp_rank, so a TP group is
// a block of consecutive ranks (packed inside one node by the launcher).
struct RankPlan {
  int rank = 0, tp_rank = 0, pp_stage = 0, tensor = 1, pipeline = 1;
  Range layers;  // this stage's contiguous layers
  // KDA heads [h0, h1): channels [h0*K, h1*K) of q/k/v, their conv taps, f_b, dt_bias and g_b;
  // heads [h0, h1) of A_log and b_proj; input columns [h0*K, h1*K) of o_proj.
  Range kda_heads;
  // MLA heads: q_proj rows [h0*(N+P), h1*(N+P)), kv_b (W_UK, W_UV) of those heads, o_proj input
  // columns [h0*V, h1*V).
  Range mla_heads;
  Range dense_ffn;   // dense MLP intermediate slice: gate/up rows, down input columns
  Range expert_ffn;  // every routed expert's intermediate slice (same for all experts)
  Range shared_ffn;  // shared expert intermediate slice, of num_shared × moe_intermediate
  Range vocab;       // embedding rows (first stage) and lm_head rows (last stage); may be uneven
  bool first_stage() const { return pp_stage == 0; }
  bool last_stage() const { return pp_stage == pipeline - 1; }
};

// Plans one rank. Every head and FFN dimension must divide evenly by `tensor` (the error names
// the quantity: "tensor=3 does not divide 32 KDA heads"); vocab rows are cut into ceil-sized
// contiguous ranges. With a q8_0 weight dtype, every row-parallel input slice (dense/expert/
// shared down, KDA and MLA o_proj) must be a whole number of 32-element blocks.
// `layer_bytes` ([num_layers]) is the per-layer cost the stages are balanced by when
// spec.layer_split is empty; when it is empty too, pipeline_balance_bytes(config, weight_dtype).
StatusOr<RankPlan> plan_rank(const ModelConfig& config, const ParallelSpec& spec, int rank,
                             DType weight_dtype, const std::vector<uint64_t>& layer_bytes);
// The share of a single rank that runs the whole model (every range whole).
RankPlan whole_model_plan(const ModelConfig& config);

// All tensor × pipeline ranks, in rank order.
StatusOr<std::vector<RankPlan>> plan_all(const ModelConfig& config, const ParallelSpec& spec,
                                         DType weight_dtype,
                                         const std::vector<uint64_t>& layer_bytes);

// Contiguous split of layers into `pipeline` stages, each ≥ 1 layer, minimising the largest
// stage's summed cost (exact). Among optimal splits, earlier stages take as many layers as
// possible.
StatusOr<std::vector<Range>> split_layers(const std::vector<uint64_t>& layer_bytes, int pipeline);

// Bytes of every weight of each layer at TP 1 ([num_layers]): matrices in `dtype` (the router
// in f32 when dtype is q8_0, as GGUF files keep ffn_gate_inp unquantised), norm weights, conv
// taps, A_log, dt_bias and the router bias in f32, all experts included. From shapes only.
std::vector<uint64_t> layer_weight_bytes(const ModelConfig& config, DType dtype);
// layer_weight_bytes with the embedding added to the first layer and lm_head + final norm to
// the last: the default pipeline balancing cost, so stage 0 and the last stage carry their tables.
std::vector<uint64_t> pipeline_balance_bytes(const ModelConfig& config, DType dtype);

// What one rank holds.
struct RankMemory {
  // Its weight slices plus the replicated parts (norms, KDA f_a/g_a, MLA kv_a, router + bias,
  // final norm), the embedding vocab slice on the first stage and the lm_head slice on the last.
  uint64_t weight_bytes = 0;
  // f32 conv windows and recurrent state of its KDA heads, over its stage's KDA layers.
  uint64_t kda_state_bytes_per_sequence = 0;
  // f32 latent rows (kv_lora + rope) over its stage's MLA layers; replicated within a TP group.
  uint64_t mla_bytes_per_token = 0;
};
RankMemory estimate_rank_memory(const ModelConfig& config, const RankPlan& plan, DType dtype);

// One-paragraph summary of a rank's share and memory (kiln inspect --tensor N --pipeline M).
std::string describe_plan(const ModelConfig& config, const RankPlan& plan, const RankMemory& mem);

}  // namespace kiln
