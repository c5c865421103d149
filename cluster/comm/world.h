// World: who this rank is, an immutable value passed explicitly (no globals). WorldContext: the
// process's MPI bootstrap, which owns the world, TP and PP communicators, the rank's GPU context
// (CUDA ranks) and the abort handler. Built without MPI (KILN_WITH_MPI=OFF) only a one-rank world
// exists. This header includes no MPI or CUDA header.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "kernels/base/device.h"
#include "kernels/base/status.h"
#include "shard/communicator.h"

namespace kiln::cuda {
class Context;
}  // namespace kiln::cuda

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
  int gpu = -1;  // this rank's CUDA device; -1 on cpu
};

// Where the ranks compute. kCuda: each rank opens one GPU, the first of
// * `gpu` when >= 0;
// * else entry [world rank] of the KILN_RANK_GPUS environment variable when it is set and not
//   empty ("0,1,0,1": rank r uses entry r; `kiln launch` sets it from the topology);
// * else local_rank % (the number of visible devices).
struct DeviceChoice {
  Device device = Device::kCpu;
  int gpu = -1;
};

// The CUDA device of `world_rank` from a KILN_RANK_GPUS value: comma-separated integers >= 0, one
// per world rank. InvalidArgument naming the variable and its value when an entry is not such a
// number (every entry is checked) or the list has no entry for `world_rank`.
StatusOr<int> parse_rank_gpus(std::string_view value, int world_rank);

// DeviceChoice's rule as a pure function: `requested` (DeviceChoice::gpu), `rank_gpus` (the
// KILN_RANK_GPUS value, null or empty when unset), the rank's numbers and the visible device
// count. Unavailable when the rule falls through to the device count and it is 0.
StatusOr<int> choose_rank_gpu(int requested, const char* rank_gpus, int world_rank, int local_rank,
                              int device_count);

// One per process, made by init_world, alive while the rank uses its communicators.
// * MPI: if MPI is not initialised yet, init_world initialises it (MPI_Init_thread asking for
//   MPI_THREAD_SERIALIZED, so the engine thread need not be the main thread) and the destructor
//   finalises it; if the caller initialised MPI, it stays the caller's to finalise. A process not
//   started by mpirun is an Open MPI singleton: a world of one rank.
// * While alive, KILN_CHECK failures print "rank R (host H)" and call MPI_Abort(MPI_COMM_WORLD, 1).
// * Thread safety: the communicators follow Communicator's one-thread-at-a-time contract; all MPI
//   calls of the process must be serialised by the caller.
// * CUDA ranks (DeviceChoice kCuda): the context owns the rank's cuda::Context (device, stream,
//   cuBLAS handle). The TP and PP groups use NCCL (Communicator::device_memory() is true: device
//   pointers, enqueued on gpu()->stream()) when every rank of the group has its own GPU (distinct
//   host and PCI bus id); a group whose ranks share a GPU (NCCL refuses two ranks on one device)
//   keeps MPI behind host staging (cluster/comm/staging_communicator.h), so it too takes device
//   pointers. A group of one rank is always MPI. world_comm() is always
//   MPI: it carries the control plane (step plans, agree_or_abort).
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
  Device device() const { return device_; }
  // The rank's GPU context on cuda (device world().gpu, made current for the thread that called
  // init_world; another thread calls bind() first); null on cpu.
  cuda::Context* gpu() const { return gpu_.get(); }

 private:
  // Deletes the GPU context where cuda::Context is a complete type (world.cpp).
  struct GpuDeleter {
    void operator()(cuda::Context* context) const;
  };
  friend StatusOr<std::unique_ptr<WorldContext>> init_world(int* argc, char*** argv, int tensor,
                                                            int pipeline, DeviceChoice device);
  WorldContext() = default;

  World world_;
  bool owns_mpi_ = false;  // MPI_Finalize in the destructor
  Device device_ = Device::kCpu;
  // Destroyed in reverse order: the communicators (NCCL ones use the GPU's stream) before the GPU
  // context, all before MPI_Finalize.
  std::unique_ptr<cuda::Context, GpuDeleter> gpu_;
  std::unique_ptr<Communicator> world_comm_;
  std::unique_ptr<Communicator> tp_;
  std::unique_ptr<Communicator> pp_;
};

// Joins the job (MPI world) and builds the TP and PP groups. tensor = 0 means "the job's ranks
// divided by pipeline". InvalidArgument, naming the numbers,
// when tensor or pipeline < 1 or tensor × pipeline != the number of ranks; every rank then returns
// the same error. argc/argv may be null.
// device kCuda opens the rank's GPU (DeviceChoice) and chooses each group's communicator (see
// WorldContext). A failure on any rank (a malformed KILN_RANK_GPUS, no such device, NCCL
// refusing to start) makes every rank return the same error, "rank R (host H): ...", naming the
// lowest failing rank; a rank whose peers do not answer within a minute (stuck inside NCCL's own
// bootstrap) ends the job instead. A build without CUDA returns device_available(kCuda)'s error.
StatusOr<std::unique_ptr<WorldContext>> init_world(int* argc, char*** argv, int tensor,
                                                   int pipeline, DeviceChoice device = {});

// Collective over all ranks (call it on every rank, e.g. after loading the shard): returns when
// every rank's status is OK. Otherwise rank 0 prints "rank R (host H): <message>" for each failing
// rank (messages cut at 511 bytes) and the job ends with exit code 1 through MPI_Abort; it never
// returns and never waits for a rank that did not fail.
void agree_or_abort(const WorldContext& context, const Status& local_status);

// Any thread, at any time (also while another thread of this rank is inside an MPI call): prints
// "kiln: rank R (host H): aborting the job: <message>" and ends the whole job (MPI_Abort, exit
// code 1; without MPI, or before MPI is up, std::exit(1)). For a failure seen by one rank that the
// others cannot see, e.g. rank 0 gone silent.
[[noreturn]] void abort_world(const std::string& message);

}  // namespace kiln
