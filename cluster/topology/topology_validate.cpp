// Structural validation of a topology (no model needed): every key's range, world size against the
// nodes' slots, layer split, scheduler and cache consistency, and rank placement with TP groups
// kept inside a node. Checks that need the model (heads, layers, memory) live with the model code.
#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "cluster/topology/topology.h"
#include "cluster/topology/topology_schema.h"

namespace kiln {
namespace {

constexpr int64_t kMaxWorld = 4096;

int node_capacity(const NodeSpec& n) {
  return n.slots != 0 ? n.slots : static_cast<int>(n.gpus.size());
}

std::string slots_summary(const std::vector<NodeSpec>& nodes) {
  std::string s;
  for (const NodeSpec& n : nodes) {
    s += fmt::format("{}{} on '{}'", s.empty() ? "" : ", ", node_capacity(n), n.host);
  }
  return s;
}

// Ranks fill the nodes in order. A TP group must lie inside one node, or be made of whole nodes
// (tensor larger than a node): a group that starts or ends mid-node would put one all-reduce
// across the network for no gain.
std::vector<RankPlacement> compute_placement(const Topology& t,
                                             std::vector<std::string>& problems) {
  std::vector<NodeSpec> nodes = effective_nodes(t);
  const int tensor = t.parallel.tensor;
  const int world = tensor * t.parallel.pipeline;
  int64_t total = 0;
  for (const NodeSpec& n : nodes) total += node_capacity(n);
  if (total != world) {
    problems.push_back(fmt::format(
        "world size tensor x pipeline = {} x {} = {} ranks, but the nodes provide {} slots ({})",
        tensor, t.parallel.pipeline, world, total, slots_summary(nodes)));
    return {};
  }
  std::vector<RankPlacement> out;
  std::vector<size_t> node_of;  // node index of each rank
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (int local = 0; local < node_capacity(nodes[i]); ++local) {
      int r = static_cast<int>(out.size());
      int gpu = t.backend == "cuda" ? nodes[i].gpus[static_cast<size_t>(local)] : -1;
      out.push_back({r, r % tensor, r / tensor, nodes[i].host, local, gpu});
      node_of.push_back(i);
    }
  }
  for (int stage = 0; stage < t.parallel.pipeline; ++stage) {
    const RankPlacement& first = out[static_cast<size_t>(stage * tensor)];
    const RankPlacement& last = out[static_cast<size_t>(stage * tensor + tensor - 1)];
    size_t a = node_of[static_cast<size_t>(first.rank)];
    size_t b = node_of[static_cast<size_t>(last.rank)];
    bool whole_nodes = first.local_rank == 0 && last.local_rank == node_capacity(nodes[b]) - 1;
    if (a != b && !whole_nodes) {
      problems.push_back(fmt::format(
          "the TP group of stage {} (ranks {}-{}) straddles nodes '{}' and '{}'; give each node a "
          "multiple of tensor={} slots, or whole nodes to each TP group",
          stage, first.rank, last.rank, nodes[a].host, nodes[b].host, tensor));
    }
  }
  return out;
}

void check_scheduler_and_cache(const Topology& t, std::vector<std::string>& p) {
  const auto& s = t.scheduler;
  const auto& c = t.cache;
  if (s.prefill_chunk > s.max_batch_tokens) {
    p.push_back(fmt::format("scheduler.prefill_chunk {} exceeds scheduler.max_batch_tokens {}",
                            s.prefill_chunk, s.max_batch_tokens));
  }
  if (s.max_sequences > s.max_batch_tokens) {
    p.push_back(
        fmt::format("scheduler.max_sequences {} exceeds scheduler.max_batch_tokens {}: "
                    "each running sequence decodes one token per step",
                    s.max_sequences, s.max_batch_tokens));
  }
  if (c.page_tokens < 1 || (c.page_tokens & (c.page_tokens - 1)) != 0) {
    p.push_back(fmt::format("cache.page_tokens must be a power of two, got {}", c.page_tokens));
  }
  if (c.max_pages > 0 && c.max_context > 0 && c.page_tokens > 0 &&
      c.max_pages < (c.max_context + c.page_tokens - 1) / c.page_tokens) {
    p.push_back(
        fmt::format("cache.max_pages {} x cache.page_tokens {} cannot hold one sequence "
                    "of cache.max_context {} tokens",
                    c.max_pages, c.page_tokens, c.max_context));
  }
  if (t.server.max_tokens > 0 && c.max_context > 0 && t.server.max_tokens > c.max_context) {
    p.push_back(fmt::format("server.max_tokens {} exceeds cache.max_context {}",
                            t.server.max_tokens, c.max_context));
  }
}

}  // namespace

std::vector<NodeSpec> effective_nodes(const Topology& t) {
  if (!t.nodes.empty()) return t.nodes;
  NodeSpec local;
  local.host = "localhost";
  local.slots = t.parallel.tensor * t.parallel.pipeline;
  if (t.backend == "cuda") {
    local.gpus.resize(static_cast<size_t>(std::max(local.slots, 0)));
    std::iota(local.gpus.begin(), local.gpus.end(), 0);
  }
  return {local};
}

std::vector<std::string> validate_topology(const Topology& t) {
  std::vector<std::string> p;
  for (const topology_detail::Field& f : topology_detail::topology_fields()) f.check(t, p);
  check_scheduler_and_cache(t, p);
  const auto& par = t.parallel;
  if (!par.layer_split.empty() && par.layer_split.size() != static_cast<size_t>(par.pipeline)) {
    p.push_back(
        fmt::format("parallel.layer_split has {} entries but parallel.pipeline is {}; "
                    "give one layer count per stage",
                    par.layer_split.size(), par.pipeline));
  }
  int64_t world = int64_t{par.tensor} * par.pipeline;
  if (par.tensor < 1 || par.pipeline < 1 || world > kMaxWorld) {
    if (world > kMaxWorld) {
      p.push_back(fmt::format("tensor x pipeline = {} ranks exceeds {}", world, kMaxWorld));
    }
    return p;
  }
  // Placement needs well-formed nodes; their problems are already listed.
  std::vector<std::string> node_problems;
  topology_detail::check_nodes(t, node_problems);
  if (node_problems.empty() && (t.backend == "cpu" || t.backend == "cuda")) {
    compute_placement(t, p);
  }
  return p;
}

StatusOr<std::vector<RankPlacement>> place_ranks(const Topology& topology) {
  std::vector<std::string> problems = validate_topology(topology);
  if (problems.empty()) {
    std::vector<RankPlacement> placement = compute_placement(topology, problems);
    if (problems.empty()) return placement;
  }
  std::string text;
  for (const std::string& p : problems) text += (text.empty() ? "" : "\n") + p;
  return invalid_argument("{}", text);
}

}  // namespace kiln
