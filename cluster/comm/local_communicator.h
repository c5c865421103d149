// LocalCommunicator: a group of ranks that are threads of one process, so multi-rank code (TP/PP
// parity) runs in plain ctest. Collectives exchange pointers through a shared group object and a
// reusable barrier; results are bit-identical to MpiCommunicator's. Not for production transport.
#pragma once

#include <memory>
#include <vector>

#include "cluster/comm/world.h"
#include "shard/communicator.h"

namespace kiln {

struct LocalGroup;  // shared by the ranks of one group; defined in local_communicator.cpp

// One rank's endpoint. Thread safety: each endpoint is driven by its own thread (one per rank);
// endpoints of different groups are independent and may be used concurrently. The group's shared
// state lives as long as any of its endpoints.
class LocalCommunicator final : public Communicator {
 public:
  LocalCommunicator(std::shared_ptr<LocalGroup> group, int rank);
  ~LocalCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override;
  void all_reduce_sum(float* data, int64_t n) override;
  void all_gather(const float* send, int64_t n, float* recv) override;
  void all_gather_v(const float* send, int64_t n, float* recv,
                    const std::vector<int64_t>& counts) override;
  void broadcast(void* data, int64_t bytes, int root) override;
  // send copies `data` into the (sender, receiver) queue and returns; recv waits for the next one.
  void send(const void* data, int64_t bytes, int peer) override;
  void recv(void* data, int64_t bytes, int peer) override;
  void barrier() override;
  double busy_seconds() const override { return busy_seconds_; }

 private:
  // Shared by all_gather (counts == nullptr: n from every rank) and all_gather_v (counts[size]).
  void gather(const float* send, int64_t n, float* recv, const int64_t* counts);

  std::shared_ptr<LocalGroup> group_;
  int rank_;
  double busy_seconds_ = 0.0;
};

// The n endpoints of one new group; element r is rank r. n >= 1.
std::vector<std::unique_ptr<Communicator>> make_local_group(int n);

// One rank of an in-process tensor × pipeline world: its World value, its TP group endpoint (the
// ranks of its stage) and its PP endpoint (the ranks with its tp_rank, one per stage, rank within
// it = pp_stage).
struct LocalRank {
  World world;
  std::unique_ptr<Communicator> tp;
  std::unique_ptr<Communicator> pp;
};

// All tensor × pipeline ranks, indexed by world rank = pp_stage * tensor + tp_rank.
std::vector<LocalRank> make_local_world(int tensor, int pipeline);

}  // namespace kiln
