// Weight-traffic accounting, routing counts and the per-segment profile of `kiln bench`.
#include "launcher/bench_meter.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/moe.h"
#include "kernels/cpu/norm.h"
#include "shard/tensor_table.h"

namespace kiln::launcher {

namespace {

uint64_t params_of(const MatrixView& m) { return static_cast<uint64_t>(m.rows * m.cols); }

// What the ops between two tags are (model.cpp, kda_block.cpp, mla_block.cpp).
const char* describe(const std::string& segment) {
  static const std::pair<const char*, const char*> kWhat[] = {
      {"start→embedding", "embedding rows"},
      {"residual→kda.q", "norm, q/k/v/gate/beta projections, conv, L2 norm"},
      {"kda.beta→kda.core", "KDA recurrence (decode) / chunked core (prefill)"},
      {"kda.core→attn_out", "gated output norm, o_proj"},
      {"residual→mla.latent", "norm, q/kv_a projections, absorbed attention, v_b"},
      {"mla.heads→attn_out", "o_proj"},
      {"attn_out→ffn_out (MoE)", "norm, router, routed + shared experts"},
      {"attn_out→ffn_out (dense MLP)", "norm, dense SwiGLU MLP"},
      {"ffn_out→residual", "residual add"},
      {"residual→end", "final norm, LM head"},
  };
  for (const auto& [name, what] : kWhat) {
    if (segment == name) return what;
  }
  return "(between tags only)";
}

}  // namespace

WeightTraffic WeightTraffic::of(const KimiLinearModel& model) {
  const ModelConfig& c = model.config();
  WeightTraffic t;
  t.num_experts = c.num_experts;
  t.experts_per_token = c.experts_per_token;
  t.expert_bytes.assign(static_cast<size_t>(c.num_layers), 0);
  t.expert_params.assign(static_cast<size_t>(c.num_layers), 0);
  for_each_weight(model.weights(), c, [&](const TensorSpec& s, int64_t layer, int64_t index,
                                          const MatrixView& m) {
    const uint64_t bytes = view_bytes(m), params = params_of(m);
    if (s.block == Block::kEmbedding) return;  // a lookup, not a matmul
    if (s.block == Block::kExperts) {
      if (index == 0) t.expert_bytes[layer] += bytes, t.expert_params[layer] += params;
      return;
    }
    if (s.block == Block::kLmHead) t.lm_head_bytes += bytes, t.lm_head_params += params;
    t.shared_bytes += bytes;
    t.shared_params += params;
  });
  return t;
}

uint64_t WeightTraffic::bytes_per_token() const {
  uint64_t b = shared_bytes;
  for (uint64_t e : expert_bytes) b += e * static_cast<uint64_t>(experts_per_token);
  return b;
}

uint64_t WeightTraffic::params_per_token() const {
  uint64_t p = shared_params;
  for (uint64_t e : expert_params) p += e * static_cast<uint64_t>(experts_per_token);
  return p;
}

double WeightTraffic::expected_step_bytes(int64_t n) const {
  if (num_experts == 0) return static_cast<double>(shared_bytes);
  const double E = static_cast<double>(num_experts);
  const double distinct = E * (1.0 - std::pow(1.0 - static_cast<double>(experts_per_token) / E,
                                              static_cast<double>(n)));
  double b = static_cast<double>(shared_bytes);
  for (uint64_t e : expert_bytes) b += distinct * static_cast<double>(e);
  return b;
}

RoutingCounter::RoutingCounter(KimiLinearModel& model, cpu::ThreadPool& pool)
    : model_(model), pool_(pool) {
  const ModelConfig& c = model.config();
  distinct_.assign(static_cast<size_t>(c.num_layers), 0);
  for (int64_t i = 0; i < c.num_layers; ++i) moe_layers_ += c.is_moe(i) ? 1 : 0;
}

void RoutingCounter::attach() {
  model_.set_activation_hook([this](int64_t layer, const char* name, const float* data,
                                    int64_t rows, int64_t cols) {
    on_tag(layer, name, data, rows, cols);
  });
}

void RoutingCounter::detach() { model_.set_activation_hook({}); }

void RoutingCounter::on_tag(int64_t layer, const char* name, const float* data, int64_t rows,
                            int64_t cols) {
  const ModelConfig& c = model_.config();
  const size_t n = static_cast<size_t>(rows * cols);
  // The residual stream entering the next layer (the layer-0 input is the embedding).
  if (std::strcmp(name, "embedding") == 0 || std::strcmp(name, "residual") == 0) {
    h_.assign(data, data + n);
    if (std::strcmp(name, "embedding") == 0) ++forwards_;
    return;
  }
  if (std::strcmp(name, "attn_out") != 0 || !c.is_moe(layer)) return;
  const MoeWeights& w = model_.weights().layers[layer].moe;
  const int64_t E = c.num_experts, D = cols;
  const int k = static_cast<int>(c.experts_per_token);
  x_.resize(n);
  for (size_t j = 0; j < n; ++j) x_[j] = h_[j] + data[j];
  cpu::rms_norm(x_.data(), model_.weights().layers[layer].ffn_norm.data(), rows, D,
                c.rms_norm_eps, x_.data());
  logits_.resize(static_cast<size_t>(rows * E));
  weights_.resize(static_cast<size_t>(rows * k));
  ids_.resize(static_cast<size_t>(rows * k));
  // Attached during decode steps only: every row is a decode row, as the model computes it.
  cpu::matmul(pool_, w.router, x_.data(), D, rows, logits_.data(), E, rows);
  cpu::moe_route(logits_.data(), rows, E, w.bias.empty() ? nullptr : w.bias.data(), k,
                 c.moe_renormalize, c.routed_scaling_factor, ids_.data(), weights_.data());
  std::sort(ids_.begin(), ids_.end());
  distinct_[layer] += static_cast<uint64_t>(std::unique(ids_.begin(), ids_.end()) - ids_.begin());
}

double RoutingCounter::mean_step_bytes(const WeightTraffic& t) const {
  if (forwards_ == 0) return 0;
  double b = 0;
  for (size_t i = 0; i < distinct_.size(); ++i) {
    b += static_cast<double>(distinct_[i]) * static_cast<double>(t.expert_bytes[i]);
  }
  return static_cast<double>(t.shared_bytes) + b / static_cast<double>(forwards_);
}

double RoutingCounter::mean_distinct_per_layer() const {
  if (forwards_ == 0 || moe_layers_ == 0) return 0;
  uint64_t sum = 0;
  for (uint64_t d : distinct_) sum += d;
  return static_cast<double>(sum) / static_cast<double>(forwards_ * moe_layers_);
}

SegmentProfiler::SegmentProfiler(KimiLinearModel& model) : model_(model) {}

void SegmentProfiler::add(const std::string& segment, double seconds) {
  const auto it = std::find(names_.begin(), names_.end(), segment);
  if (it == names_.end()) {
    names_.push_back(segment);
    seconds_.push_back(seconds);
  } else {
    seconds_[static_cast<size_t>(it - names_.begin())] += seconds;
  }
  total_s_ += seconds;
}

void SegmentProfiler::on_tag(int64_t layer, const char* name) {
  const Clock::time_point now = Clock::now();
  const double dt = std::chrono::duration<double>(now - t_).count();
  const ModelConfig& c = model_.config();
  std::string segment = last_ + "→" + name;
  const bool ffn = std::strcmp(name, "ffn_out") == 0;
  if (ffn) segment += c.is_moe(layer) ? " (MoE)" : " (dense MLP)";
  add(segment, dt);
  // Everything from the layer's input to attn_out is its attention block.
  const bool attention = std::strncmp(name, "kda.", 4) == 0 ||
                         std::strncmp(name, "mla.", 4) == 0 || std::strcmp(name, "attn_out") == 0;
  if (attention) (c.is_kda(layer) ? kda_s_ : mla_s_) += dt;
  // The embedding is layer 0's input, as the residual is every later layer's.
  last_ = std::strcmp(name, "embedding") == 0 ? "residual" : name;
  t_ = Clock::now();  // the hook's own bookkeeping is not charged to the next segment
}

Status SegmentProfiler::profile(cpu::ThreadPool& pool, StateCache& state,
                                const Batch& seqs, std::vector<float>& logits) {
  model_.set_activation_hook([this](int64_t layer, const char* name, const float*, int64_t,
                                    int64_t) { on_tag(layer, name); });
  last_ = "start";
  t_ = Clock::now();
  Status s = model_.forward(pool, state, seqs, logits);
  const double dt = std::chrono::duration<double>(Clock::now() - t_).count();
  model_.set_activation_hook({});
  add(last_ + "→end", dt);
  ++forwards_;
  return s;
}

void SegmentProfiler::print(const char* title) const {
  if (forwards_ == 0 || total_s_ <= 0) return;
  const double per = 1e3 / static_cast<double>(forwards_);
  std::printf("profile: %s, mean of %lld forwards, %.3f ms each (hook overhead included)\n",
              title, static_cast<long long>(forwards_), total_s_ * per);
  // Each name holds one 3-byte arrow, hence the wider field for names than for the header.
  std::printf("  %-32s %9s %6s  %s\n", "segment (summed over layers)", "ms", "%", "ops");
  for (size_t i = 0; i < names_.size(); ++i) {
    std::printf("  %-34s %9.3f %5.1f%%  %s\n", names_[i].c_str(), seconds_[i] * per,
                100.0 * seconds_[i] / total_s_, describe(names_[i]));
  }
  std::printf("  attention: KDA layers %.3f ms (%.1f%%), MLA layers %.3f ms (%.1f%%)\n",
              kda_s_ * per, 100.0 * kda_s_ / total_s_, mla_s_ * per, 100.0 * mla_s_ / total_s_);
}

}  // namespace kiln::launcher
