// World: who this rank is, an immutable value passed explicitly (no globals). WorldContext: the
// process's MPI bootstrap, which owns the world, TP and PP communicators and the abort handler.
// Built without MPI (KILN_WITH_MPI=OFF) only a one-rank world exists.
#pragma once

#include <memory>
#include <string>

#include "kernels/base/status.h"
#include "shard/communicator.h"

namespace kiln {

// rank = pp_stage * tp_size + tp_rank; size = tp_size * pp_size. local_* count the ranks on this
// host (MPI_COMM_TYPE_SHARED), e.g. for choosing a GPU.
struct World {
  int rank = 0;
  int size = 1;
  int tp_rank = 0;
  int tp_size = 1;
  int pp_stage = 0;
  int pp_size = 1;
  int local_rank = 0;
  int local_size = 1;
  std::string host;
};

// One per process, made by init_world, alive while the rank uses its communicators.
// * MPI: if MPI is not initialised yet, init_world initialises it (MPI_Init_thread asking for
//   MPI_THREAD_SERIALIZED, so the engine thread need not be the main thread) and the destructor
//   finalises it; if the caller initialised MPI, it stays the caller's to finalise. A process not
//   started by mpirun is an Open MPI singleton: a world of one rank.
// * While alive, KILN_CHECK failures print "rank R (host H)" and call MPI_Abort(MPI_COMM_WORLD, 1).
// * Thread safety: the communicators follow Communicator's one-thread-at-a-time contract; all MPI
//   calls of the process must be serialised by the caller.
class WorldContext {
 public:
  ~WorldContext();
  WorldContext(const WorldContext&) = delete;
  WorldContext& operator=(const WorldContext&) = delete;

  const World& world() const { return world_; }
  Communicator& world_comm() const { return *world_comm_; }  // all ranks; rank = world rank
  Communicator& tp() const { return *tp_; }  // this stage's TP group; rank = tp_rank
  // The ranks with this tp_rank, one per stage; rank = pp_stage, so stage s sends to s + 1.
  Communicator& pp() const { return *pp_; }

 private:
  friend StatusOr<std::unique_ptr<WorldContext>> init_world(int* argc, char*** argv, int tensor,
                                                            int pipeline);
  WorldContext() = default;

  World world_;
  bool owns_mpi_ = false;  // MPI_Finalize in the destructor
  std::unique_ptr<Communicator> world_comm_;
  std::unique_ptr<Communicator> tp_;
  std::unique_ptr<Communicator> pp_;
};

// Joins the job (MPI world) and builds the TP and PP groups. tensor = 0 means "the job's ranks
// divided by pipeline". InvalidArgument, naming the numbers,
// when tensor or pipeline < 1 or tensor × pipeline != the number of ranks; every rank then returns
// the same error. argc/argv may be null.
StatusOr<std::unique_ptr<WorldContext>> init_world(int* argc, char*** argv, int tensor,
                                                   int pipeline);

// Collective over all ranks (call it on every rank, e.g. after loading the shard): returns when
// every rank's status is OK. Otherwise rank 0 prints "rank R (host H): <message>" for each failing
// rank (messages cut at 511 bytes) and the job ends with exit code 1 through MPI_Abort; it never
// returns and never waits for a rank that did not fail.
void agree_or_abort(const WorldContext& context, const Status& local_status);

}  // namespace kiln
