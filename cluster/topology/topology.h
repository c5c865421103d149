// Topology: the YAML file that says how one kiln job is laid out (model, backend, TP x PP, nodes,
// server, scheduler, cache), parsed strictly into plain structs, overridable by "dotted.key=value"
// flags, printable back as YAML, structurally validated, and mapped to a rank placement.
// Checks that need the model (head divisibility, layer count, memory) live with the model code.
// Every key is documented in configs/README.md. No function here throws.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/base/status.h"

namespace kiln {

// One host of the job. It runs `slots` ranks (cpu), or one rank per listed GPU (cuda).
struct NodeSpec {
  std::string host;
  int slots = 0;             // ranks on this host; 0 = gpus.size()
  std::vector<int> gpus;     // CUDA device ids, one rank each, in local-rank order; unused on cpu
  int64_t memory_bytes = 0;  // memory each rank on this host may use (bytes); 0 = not declared
  bool operator==(const NodeSpec&) const = default;
};

struct Topology {
  struct Model {
    std::string path;            // checkpoint directory or .gguf file; absolute after parsing
    std::string dtype = "auto";  // "auto" (as stored) or f32 | f16 | bf16 | q8_0
    std::string name;            // id reported by /v1/models; empty = last path component
    bool operator==(const Model&) const = default;
  } model;
  std::string backend = "cpu";  // cpu | cuda
  struct Parallel {
    int tensor = 1;
    int pipeline = 1;
    std::vector<int64_t> layer_split;  // layers per stage, in stage order; empty = balanced
    bool operator==(const Parallel&) const = default;
  } parallel;
  std::vector<NodeSpec> nodes;  // empty = one implicit localhost node (see effective_nodes)
  struct Server {
    std::string host = "127.0.0.1";
    int port = 8080;
    std::string api_key_file;  // one key per line; empty = no authentication
    bool metrics_require_key = false;
    std::vector<std::string> cors_allow_origins;
    int64_t max_body_bytes = 4 << 20;
    int64_t max_header_bytes = 64 << 10;
    double read_timeout_s = 30;
    double write_timeout_s = 30;
    int max_connections = 256;
    int max_n = 16;
    int max_top_logprobs = 20;
    int max_stop_strings = 4;
    int max_stop_length = 256;
    int64_t max_tokens = 0;  // largest accepted max_tokens; 0 = up to the context limit
    bool operator==(const Server&) const = default;
  } server;
  struct Scheduler {
    int64_t max_batch_tokens = 2048;  // tokens in one engine step (decode + prefill chunks)
    int64_t max_sequences = 16;       // running sequences = KDA state slots
    int64_t prefill_chunk = 512;      // prompt tokens one sequence contributes per step
    int64_t max_queue = 64;           // waiting requests before 429
    double drain_timeout_s = 30;      // grace for in-flight requests after SIGTERM
    double step_timeout_s = 30;       // a step slower than this means a rank is hung
    bool operator==(const Scheduler&) const = default;
  } scheduler;
  struct Cache {
    int64_t page_tokens = 16;  // tokens per MLA latent cache page; a power of two
    int64_t max_context = 0;   // tokens per sequence; 0 = the model's limit
    int64_t max_pages = 0;     // MLA cache pages per rank; 0 = sized from max_sequences x context
    bool operator==(const Cache&) const = default;
  } cache;
  int threads = 0;  // CPU threads per rank; 0 = the host's cores shared among its ranks
  bool operator==(const Topology&) const = default;
};

// Parses and validates (validate_topology) YAML text. `source_name` is the file path: it prefixes
// every message and relative paths in the file resolve against its directory. All problems found
// are reported, one per line.
StatusOr<Topology> parse_topology(const std::string& yaml_text, const std::string& source_name);
StatusOr<Topology> load_topology(const std::string& path);

// Applies one "dotted.key=value" assignment (e.g. "parallel.tensor=2", "server.port=9000",
// "parallel.layer_split=[13,14]", "nodes=[{host: a, slots: 2}]"). The value is read as YAML and
// checked like the same key in a file; unknown keys are rejected by path. Cross-field rules are
// not checked: run validate_topology (or use apply_overrides) once all assignments are applied.
Status apply_override(Topology& topology, const std::string& assignment);
// Applies every assignment, then validates; reports all problems.
Status apply_overrides(Topology& topology, const std::vector<std::string>& assignments);

// The effective configuration as YAML, every key written out; parse_topology reads it back equal.
std::string dump_topology(const Topology& topology);

// Structural checks that need no model; returns every problem (empty = valid).
std::vector<std::string> validate_topology(const Topology& topology);

// `nodes`, or the implicit single node: localhost with tensor x pipeline slots (cuda: gpus
// 0..N-1).
std::vector<NodeSpec> effective_nodes(const Topology& topology);

// Where rank r runs. rank = pp_stage * tensor + tp_rank; ranks fill nodes in order, local ranks
// in order; gpu = the node's gpus[local_rank] on cuda, -1 on cpu.
struct RankPlacement {
  int rank = 0;
  int tp_rank = 0;
  int pp_stage = 0;
  std::string host;
  int local_rank = 0;
  int gpu = -1;
  bool operator==(const RankPlacement&) const = default;
};
// Fails with every validate_topology problem when the topology is not valid.
StatusOr<std::vector<RankPlacement>> place_ranks(const Topology& topology);

}  // namespace kiln
