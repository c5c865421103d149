// The table of every topology key (internal to the topology files): for each dotted path, how to
// read it from a YAML node with type and range checks, how to re-check it on a struct built in
// code, and how to write it back. One entry per key keeps parsing, overrides, validation and the
// dump in step.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "cluster/topology/topology.h"

namespace kiln::topology_detail {

// One value being read: its dotted path, the node, where it was (1-based line, 0 = unknown) and
// the directory relative file paths resolve against (empty = the working directory).
struct ReadCtx {
  std::string path;
  YAML::Node node;
  int line = 0;
  std::string base_dir;
  std::vector<std::string>* errors = nullptr;

  // Records "path: message (line N)".
  void fail(const std::string& message) const;
  ReadCtx child(const std::string& sub_path, const YAML::Node& sub_node) const;
};

struct Field {
  std::string path;                                    // "section.key", or "key" at the top level
  std::function<void(Topology&, const ReadCtx&)> set;  // writes only on success
  std::function<void(const Topology&, std::vector<std::string>&)> check;
  std::function<void(const Topology&, YAML::Emitter&)> emit;  // the value only
};

// Every key, grouped by section, in the order dump_topology writes them.
const std::vector<Field>& topology_fields();
const Field* find_field(const std::string& path);
// True for "model", "parallel", ...: paths that hold keys rather than a value.
bool is_section(const std::string& path);
// " (did you mean 'x'?)" for a near miss among `candidates`, or "".
std::string suggestion(const std::string& key, const std::vector<std::string>& candidates);

// Calls fn(key, value, line) for each entry of a mapping, reporting a non-mapping value,
// non-scalar keys and duplicate keys (by dotted path) instead.
void for_each_key(const ReadCtx& ctx,
                  const std::function<void(const std::string&, const YAML::Node&, int)>& fn);

// Scalar readers: each reports "expected ..., got '...'" through ctx and returns false on failure.
bool read_int(const ReadCtx& ctx, int64_t& out);
bool read_double(const ReadCtx& ctx, double& out);
bool read_bool(const ReadCtx& ctx, bool& out);
// Strings must be valid UTF-8 without NUL.
bool read_string(const ReadCtx& ctx, std::string& out);
// An integer, or a string "<integer><unit>" with unit B, KB, MB, GB, TB (powers of 1000) or KiB,
// MiB, GiB, TiB (powers of 1024).
bool read_size(const ReadCtx& ctx, int64_t& out);

// The `nodes` key: a sequence of {host, slots, gpus, memory_per_rank}.
void read_nodes(const ReadCtx& ctx, std::vector<NodeSpec>& out);
void emit_nodes(const std::vector<NodeSpec>& nodes, YAML::Emitter& out);
// Per-node problems (host, slots, gpus) for a struct built in code or read from a file.
void check_nodes(const Topology& topology, std::vector<std::string>& problems);

int line_of(const YAML::Node& node);

}  // namespace kiln::topology_detail
