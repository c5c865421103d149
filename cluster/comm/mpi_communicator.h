// MpiCommunicator: the Communicator over one MPI communicator, for CPU ranks (and CUDA ranks that
// share a GPU). Every MPI return code is checked; a failure aborts the job with MPI's error string.
// Compiled only with KILN_HAVE_MPI (CMake option KILN_WITH_MPI); otherwise this header is empty.
#pragma once

#ifdef KILN_HAVE_MPI

#include <mpi.h>

#include <vector>

#include "shard/communicator.h"

namespace kiln {

// Prints file:line, the MPI call and MPI_Error_string(code), then aborts the job (KILN_CHECK path).
[[noreturn]] void mpi_call_failed(const char* file, int line, const char* call, int code);

}  // namespace kiln

// Checks the return code of an MPI call. The communicators kiln makes use MPI_ERRORS_RETURN, so
// errors reach this check instead of MPI's default handler.
#define KILN_MPI_CHECK(call)                                            \
  do {                                                                  \
    const int kiln_mpi_rc_ = (call);                                    \
    if (kiln_mpi_rc_ != MPI_SUCCESS) [[unlikely]]                       \
      ::kiln::mpi_call_failed(__FILE__, __LINE__, #call, kiln_mpi_rc_); \
  } while (0)

namespace kiln {

// Thread safety: one thread at a time per object, and MPI must have been initialised with a thread
// level that allows the calling thread (WorldContext asks for MPI_THREAD_SERIALIZED).
//
// all_reduce_sum does not use MPI_Allreduce, whose summation order is implementation-defined (it
// may differ between runs, algorithms and even ranks). It cuts the buffer into `size` chunks,
// sends chunk j of every rank to rank j (MPI_Alltoallv), which sums it in rank order, and shares
// the sums (MPI_Allgatherv): the same traffic as a ring all-reduce, results bit-identical on every
// rank and to LocalCommunicator. With two ranks each element takes one commutative addition, so
// MPI_Allreduce is used there (it is faster and still exact).
class MpiCommunicator final : public Communicator {
 public:
  // Wraps `comm` and sets MPI_ERRORS_RETURN on it. When `owned` (a communicator made by
  // MPI_Comm_split or MPI_Comm_dup) it is freed on destruction, which must precede MPI_Finalize.
  MpiCommunicator(MPI_Comm comm, bool owned);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  MPI_Comm comm() const { return comm_; }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(float* data, int64_t n) override;
  void all_gather(const float* send, int64_t n, float* recv) override;
  void all_gather_v(const float* send, int64_t n, float* recv,
                    const std::vector<int64_t>& counts) override;
  void broadcast(void* data, int64_t bytes, int root) override;
  // MPI_Ibcast completed by MPI_Test: spins ~50 µs, then sleeps 20 µs, 40 µs, ... up to 1 ms
  // between tests. Every rank of the group must use broadcast_idle for the message (MPI does not
  // match a nonblocking collective with a blocking one).
  void broadcast_idle(void* data, int64_t bytes, int root) override;
  void send(const void* data, int64_t bytes, int peer) override;  // MPI_Send
  void recv(void* data, int64_t bytes, int peer) override;        // MPI_Recv
  void barrier() override;
  double busy_seconds() const override { return busy_seconds_; }

 private:
  MPI_Comm comm_;
  bool owned_;
  int rank_ = 0;
  int size_ = 1;
  double busy_seconds_ = 0.0;
  // Reused across calls so the per-step path does not allocate once warm.
  std::vector<float> reduce_scratch_;  // [size][chunk of this rank]: the pieces to sum
  std::vector<int> counts_;            // [size] element counts for the v-collectives
  std::vector<int> displs_;            // [size] element offsets
  std::vector<int> recv_counts_;       // [size]
  std::vector<int> recv_displs_;       // [size]
};

}  // namespace kiln

#endif  // KILN_HAVE_MPI
