// NcclCommunicator: the Communicator over NCCL for CUDA ranks with one GPU each. It takes device
// pointers and enqueues every data-plane call on the rank's stream (device_memory() is true).
// Built only with CUDA and MPI (KILN_HAVE_CUDA and KILN_HAVE_MPI): MPI bootstraps it; otherwise
// this header is empty. The control plane (step plans, broadcast_idle) stays on MPI.
#pragma once

#if defined(KILN_HAVE_CUDA) && defined(KILN_HAVE_MPI)

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <memory>
#include <string>
#include <vector>

#include "kernels/base/status.h"
#include "kernels/cuda/runtime.h"
#include "shard/communicator.h"

namespace kiln {

// Prints file:line, the NCCL call, ncclGetErrorString(code) and NCCL's last error message (`comm`
// may be null), then aborts the job (KILN_CHECK path).
[[noreturn]] void nccl_call_failed(const char* file, int line, const char* call, int code,
                                   ncclComm_t comm);

}  // namespace kiln

// Checks an ncclResult_t of a call made on `comm` (null for calls without a communicator); any
// result other than ncclSuccess is fatal.
#define KILN_NCCL_CHECK(comm, call)                                                       \
  do {                                                                                    \
    const ncclResult_t kiln_nccl_rc_ = (call);                                            \
    if (kiln_nccl_rc_ != ncclSuccess) [[unlikely]]                                        \
      ::kiln::nccl_call_failed(__FILE__, __LINE__, #call, static_cast<int>(kiln_nccl_rc_), \
                               (comm));                                                   \
  } while (0)

namespace kiln {

// One rank's endpoint of an NCCL communicator, bound to one cuda::Context (device and stream).
// * Data-plane calls take device pointers on that device and return once the work is enqueued on
//   the context's stream; see Communicator's contract. busy_seconds counts the host time spent in
//   the calls (enqueueing, and the wait in barrier), not the device time.
// * all_reduce_sum is ncclAllReduce: identical on every rank, not summed in rank order.
// * barrier is a one-float all-reduce followed by a wait for the stream; while waiting it checks
//   ncclCommGetAsyncError, so a failed peer ends the job instead of hanging it.
// * broadcast_idle is not provided (the control plane uses MPI): calling it is a fatal bug.
// * Thread safety: one thread at a time; the context must outlive this object.
class NcclCommunicator final : public Communicator {
 public:
  // Collective over every rank of `group` (an MPI communicator whose ranks are this NCCL group,
  // in the same order). Group rank 0 makes the NCCL unique id and broadcasts it over `group`; each
  // rank then joins with ncclCommInitRank on `context`'s device. Each rank must use a different
  // GPU (NCCL refuses two ranks on one device). Unavailable on failure, naming the world rank,
  // group rank, device and NCCL's error. A failure found before ncclCommInitRank (no device, no
  // unique id) is agreed over `group`, so every rank returns an error; if ncclCommInitRank itself
  // fails on some ranks only, the others may be left inside it, and the caller must end the job
  // (init_world does).
  static StatusOr<std::unique_ptr<NcclCommunicator>> create(MPI_Comm group,
                                                            const cuda::Context& context);
  // ncclCommDestroy after the stream's work is done; ncclCommAbort instead when NCCL reported an
  // asynchronous error.
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool device_memory() const override { return true; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }

  void all_reduce_sum(float* data, int64_t n) override;                 // ncclAllReduce, in place
  void all_gather(const float* send, int64_t n, float* recv) override;  // ncclAllGather
  // One ncclBroadcast per rank with a non-zero count, into its offset, fused in one NCCL group.
  void all_gather_v(const float* send, int64_t n, float* recv,
                    const std::vector<int64_t>& counts) override;
  void broadcast(void* data, int64_t bytes, int root) override;  // ncclBroadcast of bytes
  void broadcast_idle(void* data, int64_t bytes, int root) override;  // fatal: not provided
  void send(const void* data, int64_t bytes, int peer) override;      // ncclSend of bytes
  void recv(void* data, int64_t bytes, int peer) override;            // ncclRecv of bytes
  void barrier() override;
  double busy_seconds() const override { return busy_seconds_; }

 private:
  NcclCommunicator() = default;
  // Blocks until the stream is idle, checking NCCL's asynchronous error between polls. Returns
  // what went wrong (a CUDA error, NCCL's asynchronous error), empty when the stream finished.
  std::string wait_stream();

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  int device_ = -1;
  int rank_ = 0;
  int size_ = 1;
  double busy_seconds_ = 0.0;
  cuda::DeviceBuffer barrier_token_;  // [1] float the barrier all-reduces
};

}  // namespace kiln

#endif  // KILN_HAVE_CUDA && KILN_HAVE_MPI
