// The launch plan: a topology checked against the model it names (structure, world size,
// divisibility, layer split, memory per rank), the resulting rank placement table, and the
// Open MPI command that starts the job. Pure functions: opening the checkpoint, writing the
// hostfile and exec'ing mpirun are the launcher's job.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "cluster/topology/topology.h"
#include "kernels/base/dtype.h"
#include "shard/config.h"
#include "shard/partition.h"

namespace kiln {

// One rank of the placement table.
struct RankLayout {
  RankPlacement place;
  Range layers;
  RankMemory memory;
  uint64_t required_bytes = 0;  // weights + KDA state for every sequence + MLA cache
};

struct LaunchCheck {
  std::vector<std::string> problems;  // every problem found; empty = the job can start
  std::vector<RankLayout> ranks;      // rank order; empty when no valid placement exists
  bool ok() const { return problems.empty(); }
};

// Tokens one sequence may hold: cache.max_context capped at the model's max_context (0 = the
// model's).
int64_t sequence_context(const Topology& topology, const ModelConfig& config);
// Tokens of MLA latent cache one rank holds: cache.max_pages x page_tokens when set, else
// scheduler.max_sequences x sequence_context. Saturates at INT64_MAX.
int64_t cache_tokens_per_rank(const Topology& topology, const ModelConfig& config);
// Tokens one sequence may hold (prompt + output): the model's max_context, capped by
// cache.max_context when set and by the whole cache of a rank (cache_tokens_per_rank rounded up
// to whole pages), so a small cache never advertises the model's full context.
int64_t served_context(const Topology& topology, const ModelConfig& config);
// What one rank needs: weights + KDA state x max_sequences + MLA bytes/token x cache tokens.
// Checked arithmetic; saturates at UINT64_MAX.
uint64_t required_rank_bytes(const Topology& topology, const ModelConfig& config,
                             const RankMemory& memory);
// The keys and values that size one rank's cache, for messages:
// "cache.max_pages=N x cache.page_tokens=T" or "scheduler.max_sequences=S x cache.max_context=C".
std::string cache_size_keys(const Topology& topology, const ModelConfig& config);

// The weight dtype the ranks hold: model.dtype, or `stored` when it is "auto".
StatusOr<DType> weight_dtype(const Topology& topology, DType stored);

// Checks `topology` against the model. `config` is nullptr when the model could not be opened
// (add that reason to the problems yourself). Lists every problem, not just the first.
LaunchCheck check_launch(const Topology& topology, const ModelConfig* config, DType dtype);

// Scratch bytes one batch token takes in the CPU forward (hidden states, routed + shared expert
// rows, dense FFN rows, KDA and MLA projections): an estimate that plans
// scheduler.max_batch_tokens. Saturates at UINT64_MAX.
uint64_t activation_bytes_per_token(const ModelConfig& config);
// What the ranks placed on the host of world rank `rank` (the last rank when `rank` is beyond the
// table) need together — required_rank_bytes + activation_bytes_per_token x max_batch_tokens
// each — compared with `available` bytes of host memory: nullopt when it fits, else one problem
// naming the bytes needed and available and the keys that size the cache and the workspace.
std::optional<std::string> check_host_memory(const Topology& topology, const ModelConfig& config,
                                             const LaunchCheck& check, int rank,
                                             uint64_t available);

// The placement table, one line per rank, with a header line.
std::string format_placement(const std::vector<RankLayout>& ranks);

// What `kiln launch` hands to mpirun.
struct LaunchOptions {
  std::string mpirun = "mpirun";
  std::string kiln_binary;    // absolute path of the kiln executable, the same on every host
  std::string config_path;    // absolute path of the topology file, the same on every host
  std::string hostfile_path;  // where the hostfile text is written
  std::string command = "serve";            // kiln sub-command every rank runs
  std::vector<std::string> overrides;       // --set assignments, forwarded to every rank
  std::vector<std::string> rank_args;       // appended to the rank command
  std::vector<std::string> mpirun_args;     // extra mpirun options, before the program
  bool as_root = false;                     // adds --allow-run-as-root
};

// Open MPI hostfile: one "HOST slots=N" line per node, in placement order. With
// `--map-by slot` mpirun fills each host's slots in order before the next host, which is
// exactly place_ranks' rank -> (host, local rank) mapping.
std::string hostfile_text(const std::vector<RankPlacement>& placement);
// "g0,g1,..." the GPU of each world rank, in rank order; empty on cpu (all gpu = -1).
std::string rank_gpu_list(const std::vector<RankPlacement>& placement);

// mpirun [--allow-run-as-root] --hostfile H --map-by slot --bind-to none -np N
//        [-x KILN_RANK_GPUS=g0,g1,...] [mpirun_args...] KILN COMMAND --config FILE
//        [--set k=v ...] [rank_args...]
// KILN_RANK_GPUS lists the CUDA device of each world rank (rank r uses entry r); it is set only
// with backend cuda.
std::vector<std::string> mpirun_argv(const std::vector<RankPlacement>& placement,
                                     const LaunchOptions& options);

// argv as one line a POSIX shell reads back the same (single quotes where needed).
std::string shell_command_line(const std::vector<std::string>& argv);

}  // namespace kiln
