// The model as one rank of the job this process belongs to: joins the MPI world (a one-rank
// world when not started by mpirun), plans this rank's share for tensor × pipeline, loads it, and
// makes every rank agree that loading succeeded (a rank that failed ends the job, named, on all
// ranks: no hang in a collective).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cluster/comm/world.h"
#include "shard/model.h"

namespace kiln {

struct RankModel {
  std::unique_ptr<WorldContext> world;
  std::unique_ptr<KimiLinearModel> model;
  bool is_root() const { return world->world().rank == 0; }
};

// tensor = 0 means "the job's ranks divided by pipeline". Returns an error (identical on every
// rank) for layout problems; a load failure on any rank ends the job through agree_or_abort.
// layer_split: layers per stage (empty = stages balanced by weight bytes).
// on_joined, when set, runs on every rank once the world exists and before loading (the server
// starts its gateway there); its error counts as that rank's load failure.
// on_progress, when set, is called on rank 0 (from a helper thread for other ranks' reports)
// with (rank, bytes loaded, bytes of that rank's share) while the ranks load.
// device: where the ranks compute, passed to init_world (kCuda opens each rank's GPU and picks
// the group communicators; see DeviceChoice).
using RankProgress = std::function<void(int rank, int64_t done, int64_t total)>;
StatusOr<RankModel> load_rank_model(const std::string& path, int tensor, int pipeline,
                                    const std::vector<int64_t>& layer_split = {},
                                    const std::function<Status(const World&)>& on_joined = {},
                                    const RankProgress& on_progress = {}, DeviceChoice device = {});

}  // namespace kiln
