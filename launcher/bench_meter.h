// Measurement helpers of `kiln bench`: the weight traffic of a step (shared weights once plus the
// distinct routed experts it uses), the experts a batch actually routes to (recomputed from the
// activation hook, so the model itself is untouched), and a per-segment wall-clock profile built
// from the times between consecutive activation-hook calls. Not thread-safe; one model at a time.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "shard/model.h"

namespace kiln::launcher {

// Bytes and parameters of the matrices a forward reads (embedding table excluded), split into the
// part every step reads once (attention, dense/shared FFNs, routers, LM head) and the routed
// experts (per MoE layer: the bytes of one expert).
struct WeightTraffic {
  uint64_t shared_bytes = 0, shared_params = 0;  // LM head included
  uint64_t lm_head_bytes = 0, lm_head_params = 0;
  std::vector<uint64_t> expert_bytes;   // [num_layers]: one routed expert; 0 for non-MoE layers
  std::vector<uint64_t> expert_params;  // [num_layers]
  int64_t num_experts = 0, experts_per_token = 0;

  static WeightTraffic of(const KimiLinearModel& model);
  // One token: shared weights plus experts_per_token experts per MoE layer.
  uint64_t bytes_per_token() const;
  uint64_t params_per_token() const;
  // Expected bytes of a step of n tokens routed uniformly at random: each MoE layer reads
  // E·(1−(1−k/E)^n) distinct experts.
  double expected_step_bytes(int64_t n) const;
};

// Counts the distinct experts each MoE layer routes a forward's tokens to, recomputing the routing
// (ffn_norm, router, top-k) from the hook's residual and attn_out tags. Single-rank models only
// (it needs every layer and the whole router).
class RoutingCounter {
 public:
  RoutingCounter(KimiLinearModel& model, cpu::ThreadPool& pool);
  // Installs the hook; each forward that follows adds to the counts until detach().
  void attach();
  void detach();
  // Mean over the forwards seen of Σ_layers distinct experts × expert bytes, plus shared bytes.
  double mean_step_bytes(const WeightTraffic& t) const;
  // Mean distinct experts per MoE layer per forward.
  double mean_distinct_per_layer() const;

 private:
  void on_tag(int64_t layer, const char* name, const float* data, int64_t rows, int64_t cols);

  KimiLinearModel& model_;
  cpu::ThreadPool& pool_;
  std::vector<float> h_, x_, logits_, weights_;  // [rows][D], [rows][D], [rows][E], [rows][k]
  std::vector<int32_t> ids_;                     // [rows][k]
  std::vector<uint64_t> distinct_;               // [num_layers]: summed over forwards
  int64_t forwards_ = 0, moe_layers_ = 0;
};

// Wall time per segment "a→b" between consecutive tagged points of a forward, summed over layers
// (the FFN segment is split by MoE/dense, attention totals by KDA/MLA layers).
class SegmentProfiler {
 public:
  explicit SegmentProfiler(KimiLinearModel& model);
  // Runs one forward with the hook installed and adds its segments.
  Status profile(cpu::ThreadPool& pool, StateCache& state, const Batch& seqs,
                 std::vector<float>& logits);
  // Prints the table: segment, ms per forward (mean over the forwards profiled), % of a forward.
  void print(const char* title) const;

 private:
  using Clock = std::chrono::steady_clock;
  void add(const std::string& segment, double seconds);
  void on_tag(int64_t layer, const char* name);

  KimiLinearModel& model_;
  std::vector<std::string> names_;  // segments in order of first appearance
  std::vector<double> seconds_;     // [segment], summed over forwards
  double kda_s_ = 0, mla_s_ = 0, total_s_ = 0;
  int64_t forwards_ = 0;
  std::string last_;
  Clock::time_point t_;
};

}  // namespace kiln::launcher
