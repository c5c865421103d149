// The `nodes` key of a topology: reading the list of hosts (host, slots, gpus, memory_per_rank),
// per-node checks (names, slot counts, GPU ids, backend fit) and writing the list back as YAML.
#include <algorithm>
#include <cctype>
#include <set>

#include <fmt/format.h>

#include "cluster/topology/topology_schema.h"

namespace kiln::topology_detail {
namespace {

constexpr int64_t kMaxSlots = 4096;
constexpr int64_t kMaxGpuId = 1023;

void read_gpus(const ReadCtx& ctx, std::vector<int>& out) {
  if (!ctx.node.IsSequence()) {
    ctx.fail("expected a sequence of GPU ids, e.g. [0, 1]");
    return;
  }
  std::vector<int> gpus;
  for (size_t i = 0; i < ctx.node.size(); ++i) {
    ReadCtx item = ctx.child(fmt::format("{}[{}]", ctx.path, i), ctx.node[i]);
    int64_t id = 0;
    if (!read_int(item, id)) return;
    if (id < 0 || id > kMaxGpuId) {
      item.fail(fmt::format("GPU id must be between 0 and {}, got {}", kMaxGpuId, id));
      return;
    }
    gpus.push_back(static_cast<int>(id));
  }
  out = std::move(gpus);
}

// Reads one entry; returns false when it had a problem (already reported).
bool read_node(const ReadCtx& ctx, NodeSpec& node) {
  size_t errors_before = ctx.errors->size();
  bool has_host = false;
  for_each_key(ctx, [&](const std::string& key, const YAML::Node& value, int line) {
    ReadCtx c = ctx.child(ctx.path + "." + key, value);
    if (c.line == 0) c.line = line;
    int64_t v = 0;
    if (key == "host") {
      has_host = read_string(c, node.host);
    } else if (key == "slots") {
      if (!read_int(c, v)) return;
      if (v < 1 || v > kMaxSlots) {
        c.fail(fmt::format("must be between 1 and {}, got {}", kMaxSlots, v));
        return;
      }
      node.slots = static_cast<int>(v);
    } else if (key == "gpus") {
      read_gpus(c, node.gpus);
    } else if (key == "memory_per_rank") {
      if (read_size(c, v)) node.memory_bytes = v;
    } else {
      static const std::vector<std::string> kKeys = {"host", "slots", "gpus", "memory_per_rank"};
      ctx.errors->push_back(
          fmt::format("unknown key '{}.{}' (line {}){}; a node has host, "
                      "slots, gpus, memory_per_rank",
                      ctx.path, key, line, suggestion(key, kKeys)));
    }
  });
  if (ctx.node.IsMap() && !has_host && ctx.errors->size() == errors_before) {
    ctx.fail("missing 'host'");
  }
  return ctx.errors->size() == errors_before;
}

bool valid_host_name(const std::string& host) {
  return !host.empty() && std::none_of(host.begin(), host.end(), [](unsigned char ch) {
    return std::isspace(ch) || std::iscntrl(ch) || ch == '#' || ch == ',';
  });
}

}  // namespace

void read_nodes(const ReadCtx& ctx, std::vector<NodeSpec>& out) {
  if (!ctx.node.IsDefined() || ctx.node.IsNull()) {
    out.clear();  // no list: the implicit localhost node
    return;
  }
  if (!ctx.node.IsSequence()) {
    ctx.fail("expected a sequence of nodes, e.g. [{host: a, slots: 2}]");
    return;
  }
  std::vector<NodeSpec> nodes(ctx.node.size());
  bool ok = true;
  for (size_t i = 0; i < ctx.node.size(); ++i) {
    ReadCtx item = ctx.child(fmt::format("nodes[{}]", i), ctx.node[i]);
    if (!ctx.node[i].IsMap()) {
      item.fail("expected a mapping with host and slots or gpus");
      ok = false;
      continue;
    }
    ok = read_node(item, nodes[i]) && ok;
  }
  if (ok) out = std::move(nodes);
}

void emit_nodes(const std::vector<NodeSpec>& nodes, YAML::Emitter& out) {
  if (nodes.empty()) out << YAML::Flow;  // "[]", which reads back as the implicit node
  out << YAML::BeginSeq;
  for (const NodeSpec& n : nodes) {
    out << YAML::BeginMap;
    out << YAML::Key << "host" << YAML::Value << YAML::DoubleQuoted << n.host;
    // Zero and empty are the defaults; writing them would not read back (slots: 0 is rejected).
    if (n.slots != 0) out << YAML::Key << "slots" << YAML::Value << n.slots;
    if (!n.gpus.empty()) out << YAML::Key << "gpus" << YAML::Value << YAML::Flow << n.gpus;
    if (n.memory_bytes != 0) {
      out << YAML::Key << "memory_per_rank" << YAML::Value << n.memory_bytes;
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
}

void check_nodes(const Topology& t, std::vector<std::string>& problems) {
  std::set<std::string> hosts;
  for (size_t i = 0; i < t.nodes.size(); ++i) {
    const NodeSpec& n = t.nodes[i];
    std::string name = fmt::format("nodes[{}] (host '{}')", i, n.host);
    if (!valid_host_name(n.host)) {
      problems.push_back(
          fmt::format("nodes[{}]: host must be a non-empty name without spaces, "
                      "',' or '#', got '{}'",
                      i, n.host));
    }
    std::string lower = n.host;
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
    if (!n.host.empty() && !hosts.insert(lower).second) {
      problems.push_back(
          fmt::format("{}: duplicate host; list each host once with all its slots", name));
    }
    if (n.slots < 0 || n.slots > kMaxSlots) {
      problems.push_back(
          fmt::format("{}: slots must be between 1 and {}, got {}", name, kMaxSlots, n.slots));
    }
    std::set<int> ids;
    for (int g : n.gpus) {
      if (g < 0 || g > kMaxGpuId) {
        problems.push_back(
            fmt::format("{}: GPU id must be between 0 and {}, got {}", name, kMaxGpuId, g));
      } else if (!ids.insert(g).second) {
        problems.push_back(fmt::format("{}: GPU id {} listed twice", name, g));
      }
    }
    if (t.backend == "cuda" && n.gpus.empty()) {
      problems.push_back(fmt::format("{}: backend cuda needs 'gpus' (one rank per GPU id)", name));
    } else if (t.backend == "cuda" && n.slots != 0 && n.slots != static_cast<int>(n.gpus.size())) {
      problems.push_back(
          fmt::format("{}: slots {} does not match {} GPU ids; with backend cuda "
                      "each GPU runs one rank",
                      name, n.slots, n.gpus.size()));
    } else if (t.backend != "cuda" && n.slots == 0 && n.gpus.empty()) {
      problems.push_back(fmt::format("{}: needs slots (ranks on this host)", name));
    }
  }
}

}  // namespace kiln::topology_detail
