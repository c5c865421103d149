// Communicator: the data-plane collectives one rank uses inside one group (a TP group, a PP
// chain, the whole world). Layers call only this interface; the implementations (MPI, Local
// threads, NCCL) live in cluster/. This header must not depend on MPI or CUDA.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

namespace kiln {

// Contract shared by every implementation:
// * Each object is one rank's endpoint of one group and is used by one thread at a time.
// * Every rank of the group calls the same collectives in the same order with matching sizes.
// * A failure of the transport is a bug or a dead peer: it is fatal (KILN_CHECK → abort handler →
//   MPI_Abort), so no peer is left waiting. Nothing here returns an error.
// * Buffers are owned by the caller; they are not retained once the call is complete (it has
//   returned; for a device communicator, its stream has passed the call).
// * Host or device memory: see device_memory(). A device communicator (NCCL) enqueues the data-
//   plane calls on the rank's CUDA stream and may return before the transfer is done; stream order
//   then replaces "returns once the data may be reused": later work on that stream sees the
//   result, and the caller keeps the buffers alive (and unmodified by other streams) until the
//   stream has reached the call.
// * all_reduce_sum: every rank gets bit-identical results. The host implementations (MPI, Local)
//   sum in rank order (rank 0 + rank 1 + ...) element by element, so the result also does not
//   depend on timing or on the implementation; NCCL's sums are identical on every rank but not in
//   rank order (its ring/tree order depends on the group's size and topology).
class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;  // rank within this group, in [0, size)
  virtual int size() const = 0;
  // True when the data-plane calls (all_reduce_sum, all_gather, all_gather_v, broadcast, send,
  // recv) take device pointers and are enqueued on the rank's CUDA stream (see the contract
  // above); false when they take host pointers and complete before returning. broadcast_idle
  // belongs to the control plane, which stays on MPI with host memory: a device communicator
  // does not provide it (a call is a fatal bug).
  virtual bool device_memory() const { return false; }

  // data[n] ← Σ_r data_r[n], in place.
  virtual void all_reduce_sum(float* data, int64_t n) = 0;
  // recv[size][n] ← send_r[n] for each rank r, in rank order. send and recv must not overlap.
  virtual void all_gather(const float* send, int64_t n, float* recv) = 0;
  // recv[Σ counts] ← the counts[r] floats of each rank r, concatenated in rank order; n must equal
  // counts[rank()] and counts must be the same on every rank.
  virtual void all_gather_v(const float* send, int64_t n, float* recv,
                            const std::vector<int64_t>& counts) = 0;
  // data[bytes] on every rank ← data[bytes] of `root`.
  virtual void broadcast(void* data, int64_t bytes, int root) = 0;
  // broadcast for a message that may be long in coming (an idle server's next step): a waiting
  // rank does not keep a core busy (it polls with growing sleeps of at most 1 ms). Host memory.
  virtual void broadcast_idle(void* data, int64_t bytes, int root) { broadcast(data, bytes, root); }
  // Point to point: returns once `data` may be reused. Messages between one (sender, receiver) pair
  // are received in the order they were sent; recv's `bytes` must equal the matching send's.
  virtual void send(const void* data, int64_t bytes, int peer) = 0;
  virtual void recv(void* data, int64_t bytes, int peer) = 0;
  // Returns once every rank of the group has called barrier (a device communicator also waits
  // for its stream's work queued before the call).
  virtual void barrier() = 0;

  // Wall seconds spent inside the calls above (waiting included) since construction; read from the
  // thread that uses this communicator.
  virtual double busy_seconds() const = 0;
};

// Adds the wall time of its scope to `total` (seconds); implementations wrap each call with one.
class ScopedBusyTimer {
 public:
  explicit ScopedBusyTimer(double& total) : total_(total), start_(Clock::now()) {}
  ~ScopedBusyTimer() { total_ += std::chrono::duration<double>(Clock::now() - start_).count(); }
  ScopedBusyTimer(const ScopedBusyTimer&) = delete;
  ScopedBusyTimer& operator=(const ScopedBusyTimer&) = delete;

 private:
  using Clock = std::chrono::steady_clock;
  double& total_;
  Clock::time_point start_;
};

}  // namespace kiln
