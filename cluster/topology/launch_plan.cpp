// The launch plan: topology + model config -> every problem, the placement table, and the
// mpirun command line (see launch_plan.h).
#include "cluster/topology/launch_plan.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <string_view>

#include <fmt/format.h>

#include "kernels/base/checked_math.h"

namespace kiln {

namespace {

std::string human_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double b = static_cast<double>(bytes);
  int u = 0;
  while (b >= 1024.0 && u < 6) b /= 1024.0, ++u;
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", b, units[u]);
}

// Layer-split rules that need the model: one entry per stage, each ≥ 1, summing to the layers.
void check_layer_split(const Topology& t, const ModelConfig& c, std::vector<std::string>& out) {
  const auto& split = t.parallel.layer_split;
  if (split.empty()) {
    if (t.parallel.pipeline > c.num_layers) {
      out.push_back(fmt::format("parallel.pipeline={} is more stages than the model's {} layers",
                                t.parallel.pipeline, c.num_layers));
    }
    return;
  }
  int64_t sum = 0;
  for (int64_t n : split) sum += n;
  if (sum != c.num_layers) {
    out.push_back(fmt::format("parallel.layer_split sums to {} layers but the model has {}", sum,
                              c.num_layers));
  }
}

// Memory of every rank, or, when no valid plan exists, a lower bound: an even share of the
// TP-1 weights plus the state a rank holds at TP 1 / tensor.
std::vector<RankMemory> estimate_memory(const Topology& t, const ModelConfig& c, DType dtype,
                                        const StatusOr<std::vector<RankPlan>>& plans) {
  std::vector<RankMemory> out;
  if (plans.ok()) {
    for (const RankPlan& p : *plans) out.push_back(estimate_rank_memory(c, p, dtype));
    return out;
  }
  auto whole = plan_rank(c, {1, 1, {}}, 0, dtype, {});
  if (!whole.ok()) return out;
  RankMemory m = estimate_rank_memory(c, *whole, dtype);
  const auto ranks = static_cast<uint64_t>(t.parallel.tensor) * t.parallel.pipeline;
  m.weight_bytes /= ranks;
  m.kda_state_bytes_per_sequence /= ranks;
  m.mla_bytes_per_token /= static_cast<uint64_t>(t.parallel.pipeline);
  out.push_back(m);
  return out;
}

std::string need_text(const Topology& t, const ModelConfig& c, const RankMemory& m) {
  const uint64_t kda = m.kda_state_bytes_per_sequence *
                       static_cast<uint64_t>(t.scheduler.max_sequences);
  const uint64_t mla = m.mla_bytes_per_token * static_cast<uint64_t>(cache_tokens_per_rank(t, c));
  return fmt::format("{} (weights {} + KDA state {} + MLA cache {})",
                     human_bytes(required_rank_bytes(t, c, m)), human_bytes(m.weight_bytes),
                     human_bytes(kda), human_bytes(mla));
}

// One problem per node whose declared memory_per_rank is below what its ranks need.
void check_memory(const Topology& t, const ModelConfig& c, const std::vector<RankMemory>& mem,
                  const std::vector<RankPlacement>* placement, bool exact,
                  std::vector<std::string>& out) {
  if (mem.empty()) return;
  for (const NodeSpec& node : effective_nodes(t)) {
    if (node.memory_bytes <= 0) continue;
    int worst = -1;
    uint64_t worst_bytes = 0;
    for (size_t r = 0; r < mem.size(); ++r) {
      if (placement != nullptr && (*placement)[r].host != node.host) continue;
      const uint64_t need = required_rank_bytes(t, c, mem[r]);
      if (worst < 0 || need > worst_bytes) worst = static_cast<int>(r), worst_bytes = need;
    }
    if (worst < 0 || worst_bytes <= static_cast<uint64_t>(node.memory_bytes)) continue;
    const std::string who = exact ? fmt::format("rank {}", worst) : std::string("each rank");
    out.push_back(fmt::format("node '{}': {} needs {}{} but memory_per_rank is {}", node.host,
                              who, exact ? "" : "at least ", need_text(t, c, mem[worst]),
                              human_bytes(static_cast<uint64_t>(node.memory_bytes))));
  }
}

}  // namespace

int64_t sequence_context(const Topology& t, const ModelConfig& c) {
  return t.cache.max_context > 0 ? std::min(t.cache.max_context, c.max_context) : c.max_context;
}

int64_t cache_tokens_per_rank(const Topology& t, const ModelConfig& c) {
  if (t.cache.max_pages > 0) {
    return checked_mul(t.cache.max_pages, t.cache.page_tokens).value_or(INT64_MAX);
  }
  return checked_mul(t.scheduler.max_sequences, sequence_context(t, c)).value_or(INT64_MAX);
}

int64_t served_context(const Topology& t, const ModelConfig& c) {
  const int64_t page = t.cache.page_tokens;
  const int64_t tokens = cache_tokens_per_rank(t, c);  // saturated: no rounding up past INT64_MAX
  const int64_t pages = std::max<int64_t>(1, tokens / page + (tokens % page != 0 ? 1 : 0));
  return std::min(sequence_context(t, c), checked_mul(pages, page).value_or(INT64_MAX));
}

uint64_t required_rank_bytes(const Topology& t, const ModelConfig& c, const RankMemory& m) {
  const auto seqs = static_cast<uint64_t>(t.scheduler.max_sequences);
  const auto tokens = static_cast<uint64_t>(std::max<int64_t>(0, cache_tokens_per_rank(t, c)));
  const std::optional<uint64_t> kda = checked_mul(m.kda_state_bytes_per_sequence, seqs);
  const std::optional<uint64_t> mla = checked_mul(m.mla_bytes_per_token, tokens);
  std::optional<uint64_t> sum = kda && mla ? checked_add(*kda, *mla) : std::nullopt;
  if (sum) sum = checked_add(*sum, m.weight_bytes);
  return sum.value_or(UINT64_MAX);
}

uint64_t activation_bytes_per_token(const ModelConfig& c) {
  const auto u = [](int64_t v) { return static_cast<uint64_t>(std::max<int64_t>(v, 0)); };
  const uint64_t d = u(c.hidden_size);
  // Each term is a product of at most three config values; saturate rather than wrap.
  const auto mul = [](uint64_t a, uint64_t b) { return checked_mul(a, b).value_or(UINT64_MAX); };
  const auto add = [](uint64_t a, uint64_t b) { return checked_add(a, b).value_or(UINT64_MAX); };
  uint64_t floats = mul(3, d);                                                  // h, x, delta
  floats = add(floats, mul(add(u(c.experts_per_token), u(c.num_shared_experts)),
                           add(mul(2, d), mul(2, u(c.moe_intermediate_size)))));  // expert rows
  floats = add(floats, mul(2, u(c.intermediate_size)));                          // dense gate, up
  floats = add(floats, mul(6, u(c.kda_proj_dim())));                             // q k v g beta o
  floats = add(floats, mul(mul(2, u(c.mla_num_heads)),
                           add(u(c.mla_qk_head_dim()), u(c.v_head_dim))));       // q, attention out
  return mul(floats, sizeof(float));
}

std::string cache_size_keys(const Topology& t, const ModelConfig& c) {
  if (t.cache.max_pages > 0) {
    return fmt::format("cache.max_pages={} x cache.page_tokens={}", t.cache.max_pages,
                       t.cache.page_tokens);
  }
  const std::string context =
      t.cache.max_context > 0 && t.cache.max_context <= c.max_context
          ? fmt::format("cache.max_context={}", t.cache.max_context)
          : fmt::format("the model's context of {} tokens (cache.max_context={})", c.max_context,
                        t.cache.max_context);
  return fmt::format("scheduler.max_sequences={} x {}", t.scheduler.max_sequences, context);
}

std::optional<std::string> check_host_memory(const Topology& t, const ModelConfig& c,
                                             const LaunchCheck& check, int rank,
                                             uint64_t available) {
  if (check.ranks.empty()) return std::nullopt;
  const size_t mine = std::min(static_cast<size_t>(std::max(rank, 0)), check.ranks.size() - 1);
  const std::string& host = check.ranks[mine].place.host;
  const uint64_t workspace =
      checked_mul(activation_bytes_per_token(c), static_cast<uint64_t>(t.scheduler.max_batch_tokens))
          .value_or(UINT64_MAX);
  uint64_t need = 0;
  int n = 0;
  for (const RankLayout& r : check.ranks) {
    if (r.place.host != host) continue;
    need = checked_add(need, checked_add(r.required_bytes, workspace).value_or(UINT64_MAX))
               .value_or(UINT64_MAX);
    ++n;
  }
  if (need <= available) return std::nullopt;
  const RankLayout& r = check.ranks[mine];
  return fmt::format(
      "{} rank(s) on this host need {} (per rank: weights {} + KDA state for "
      "scheduler.max_sequences={} + MLA cache for {} = {}, + workspace for "
      "scheduler.max_batch_tokens={} = {}) but {} of memory is available; lower "
      "scheduler.max_sequences, cache.max_context, cache.max_pages or scheduler.max_batch_tokens",
      n, human_bytes(need), human_bytes(r.memory.weight_bytes), t.scheduler.max_sequences,
      cache_size_keys(t, c), human_bytes(r.required_bytes), t.scheduler.max_batch_tokens,
      human_bytes(workspace), human_bytes(available));
}

StatusOr<DType> weight_dtype(const Topology& t, DType stored) {
  static const std::map<std::string, DType> kNames = {
      {"f32", DType::kF32}, {"f16", DType::kF16}, {"bf16", DType::kBF16}, {"q8_0", DType::kQ8_0}};
  if (t.model.dtype == "auto") return stored;
  auto it = kNames.find(t.model.dtype);
  if (it == kNames.end()) return invalid_argument("model.dtype: unknown dtype '{}'", t.model.dtype);
  return it->second;
}

LaunchCheck check_launch(const Topology& t, const ModelConfig* c, DType dtype) {
  LaunchCheck check;
  check.problems = validate_topology(t);
  const bool structure_ok = check.problems.empty();
  std::vector<RankPlacement> placement;
  if (structure_ok) {
    auto placed = place_ranks(t);
    if (placed.ok()) placement = std::move(*placed);
    else check.problems.push_back(placed.status().message());
  }
  if (c == nullptr) return check;
  auto tp_only = plan_all(*c, {t.parallel.tensor, 1, {}}, dtype, {});
  if (!tp_only.ok()) check.problems.push_back(tp_only.status().message());
  const size_t before_split = check.problems.size();
  check_layer_split(t, *c, check.problems);
  StatusOr<std::vector<RankPlan>> plans = invalid_argument("layout not valid");
  if (tp_only.ok() && check.problems.size() == before_split) {
    plans = plan_all(*c, {t.parallel.tensor, t.parallel.pipeline, t.parallel.layer_split}, dtype,
                     {});
    if (!plans.ok()) check.problems.push_back(plans.status().message());
  }
  const std::vector<RankMemory> mem = estimate_memory(t, *c, dtype, plans);
  const bool exact = plans.ok() && !placement.empty();
  check_memory(t, *c, mem, exact ? &placement : nullptr, exact, check.problems);
  if (!exact) return check;
  for (size_t r = 0; r < placement.size(); ++r) {
    check.ranks.push_back({placement[r], (*plans)[r].layers, mem[r],
                           required_rank_bytes(t, *c, mem[r])});
  }
  return check;
}

std::string format_placement(const std::vector<RankLayout>& ranks) {
  constexpr std::string_view kRow =
      "{:>5} {:<20} {:>5} {:>4} {:>3} {:>5} {:>9} {:>14} {:>13} {:>10} {:>14}\n";
  std::string out = fmt::format(fmt::runtime(kRow), "rank", "host", "local", "gpu", "tp", "stage", "layers",
                                "weight_bytes", "kda_state/seq", "mla/token", "need_bytes");
  for (const RankLayout& r : ranks) {
    const std::string gpu = r.place.gpu < 0 ? "-" : std::to_string(r.place.gpu);
    const std::string layers = fmt::format("{}-{}", r.layers.begin, r.layers.end - 1);
    out += fmt::format(fmt::runtime(kRow), r.place.rank, r.place.host, r.place.local_rank, gpu, r.place.tp_rank,
                       r.place.pp_stage, layers, r.memory.weight_bytes,
                       r.memory.kda_state_bytes_per_sequence, r.memory.mla_bytes_per_token,
                       r.required_bytes);
  }
  return out;
}

std::string hostfile_text(const std::vector<RankPlacement>& placement) {
  std::vector<std::pair<std::string, int>> hosts;
  for (const RankPlacement& p : placement) {
    if (hosts.empty() || hosts.back().first != p.host) hosts.emplace_back(p.host, 0);
    ++hosts.back().second;
  }
  std::string out;
  for (const auto& [host, slots] : hosts) out += fmt::format("{} slots={}\n", host, slots);
  return out;
}

std::string rank_gpu_list(const std::vector<RankPlacement>& placement) {
  std::string out;
  for (const RankPlacement& p : placement) {
    if (p.gpu < 0) return "";
    if (!out.empty()) out += ',';
    out += std::to_string(p.gpu);
  }
  return out;
}

std::vector<std::string> mpirun_argv(const std::vector<RankPlacement>& placement,
                                     const LaunchOptions& o) {
  std::vector<std::string> argv = {o.mpirun};
  if (o.as_root) argv.push_back("--allow-run-as-root");
  for (const char* a : {"--hostfile", o.hostfile_path.c_str(), "--map-by", "slot", "--bind-to",
                        "none", "-np"}) {
    argv.emplace_back(a);
  }
  argv.push_back(std::to_string(placement.size()));
  const std::string gpus = rank_gpu_list(placement);
  if (!gpus.empty()) argv.insert(argv.end(), {"-x", "KILN_RANK_GPUS=" + gpus});
  argv.insert(argv.end(), o.mpirun_args.begin(), o.mpirun_args.end());
  argv.insert(argv.end(), {o.kiln_binary, o.command, "--config", o.config_path});
  for (const std::string& s : o.overrides) argv.insert(argv.end(), {"--set", s});
  argv.insert(argv.end(), o.rank_args.begin(), o.rank_args.end());
  return argv;
}

std::string shell_command_line(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    if (!out.empty()) out += ' ';
    const bool plain = !a.empty() && std::all_of(a.begin(), a.end(), [](char ch) {
      return std::isalnum(static_cast<unsigned char>(ch)) != 0 ||
             std::string_view("-_./=:,+@%").find(ch) != std::string_view::npos;
    });
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char ch : a) {
      if (ch == '\'') out += "'\\''";
      else out += ch;
    }
    out += '\'';
  }
  return out;
}

}  // namespace kiln
