// MpiCommunicator: Communicator calls mapped onto MPI collectives and MPI_Send/MPI_Recv, with the
// ordered (deterministic) all-reduce described in the header and a broadcast that waits asleep.
// Byte transfers over 1 GiB go in pieces because MPI counts are int.
#ifdef KILN_HAVE_MPI

#include "cluster/comm/mpi_communicator.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <thread>

#include <fmt/format.h>

#include "kernels/base/check.h"

namespace kiln {
namespace {

constexpr int kTag = 7;                          // point-to-point messages of this interface
constexpr int64_t kMaxPiece = int64_t{1} << 30;  // bytes per MPI call for large byte transfers

int to_count(int64_t n, const char* what) {
  KILN_CHECK_MSG(n >= 0 && n <= INT_MAX,
                 fmt::format("{}: {} elements do not fit an MPI count", what, n));
  return static_cast<int>(n);
}

// Completes `request` without keeping the core busy for long: MPI_Test in a loop for kSpin (a
// message that is on its way arrives at full speed), then between tests sleeps that double from
// kFirstSleep up to kMaxSleep (an idle wait costs about one wake-up per millisecond).
void wait_idle(MPI_Request& request) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kSpin = std::chrono::microseconds(50);
  constexpr auto kFirstSleep = std::chrono::microseconds(20);
  constexpr auto kMaxSleep = std::chrono::microseconds(1000);
  int done = 0;
  const Clock::time_point spin_end = Clock::now() + kSpin;
  do {
    KILN_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
  } while (!done && Clock::now() < spin_end);
  for (auto sleep = kFirstSleep; !done; sleep = std::min(sleep * 2, kMaxSleep)) {
    std::this_thread::sleep_for(sleep);
    KILN_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE));
  }
}

}  // namespace

void mpi_call_failed(const char* file, int line, const char* call, int code) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) {
    std::snprintf(text, sizeof(text), "unknown MPI error");
  }
  check_failed(file, line, call, fmt::format("MPI error {}: {}", code, text));
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, bool owned) : comm_(comm), owned_(owned) {
  KILN_CHECK(comm_ != MPI_COMM_NULL);
  KILN_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  KILN_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  KILN_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  counts_.resize(size_);
  displs_.resize(size_);
  recv_counts_.resize(size_);
  recv_displs_.resize(size_);
}

MpiCommunicator::~MpiCommunicator() {
  if (owned_) KILN_MPI_CHECK(MPI_Comm_free(&comm_));
}

void MpiCommunicator::all_reduce_sum(float* data, int64_t n) {
  ScopedBusyTimer timer(busy_seconds_);
  if (size_ == 1) return;
  const int count = to_count(n, "all_reduce_sum");
  if (size_ == 2) {
    // One addition per element, and a + b == b + a exactly (NaN payloads aside): MPI_Allreduce
    // gives the rank-order sum bit for bit, in one call instead of two.
    KILN_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, data, count, MPI_FLOAT, MPI_SUM, comm_));
    return;
  }
  // Chunk j = [n*j/size, n*(j+1)/size), as in LocalCommunicator.
  for (int j = 0; j < size_; ++j) {
    displs_[j] = static_cast<int>(n * j / size_);
    counts_[j] = static_cast<int>(n * (j + 1) / size_) - displs_[j];
  }
  const int mine = counts_[rank_];
  for (int r = 0; r < size_; ++r) {
    recv_counts_[r] = mine;
    recv_displs_[r] = r * mine;
  }
  const size_t pieces = static_cast<size_t>(mine) * size_;
  if (reduce_scratch_.size() < pieces) reduce_scratch_.resize(pieces);
  KILN_MPI_CHECK(MPI_Alltoallv(data, counts_.data(), displs_.data(), MPI_FLOAT,
                               reduce_scratch_.data(), recv_counts_.data(), recv_displs_.data(),
                               MPI_FLOAT, comm_));
  float* out = data + displs_[rank_];
  for (int i = 0; i < mine; ++i) {
    float acc = reduce_scratch_[i];
    for (int r = 1; r < size_; ++r) acc += reduce_scratch_[static_cast<size_t>(r) * mine + i];
    out[i] = acc;
  }
  KILN_MPI_CHECK(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts_.data(),
                                displs_.data(), MPI_FLOAT, comm_));
}

void MpiCommunicator::all_gather(const float* send, int64_t n, float* recv) {
  ScopedBusyTimer timer(busy_seconds_);
  to_count(n * size_, "all_gather");
  const int count = static_cast<int>(n);
  KILN_MPI_CHECK(MPI_Allgather(send, count, MPI_FLOAT, recv, count, MPI_FLOAT, comm_));
}

void MpiCommunicator::all_gather_v(const float* send, int64_t n, float* recv,
                                   const std::vector<int64_t>& counts) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(static_cast<int>(counts.size()) == size_);
  KILN_CHECK(counts[rank_] == n);
  int64_t offset = 0;
  for (int r = 0; r < size_; ++r) {
    counts_[r] = to_count(counts[r], "all_gather_v");
    displs_[r] = to_count(offset, "all_gather_v");
    offset += counts[r];
  }
  KILN_MPI_CHECK(MPI_Allgatherv(send, counts_[rank_], MPI_FLOAT, recv, counts_.data(),
                                displs_.data(), MPI_FLOAT, comm_));
}

void MpiCommunicator::broadcast(void* data, int64_t bytes, int root) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(root >= 0 && root < size_ && bytes >= 0);
  auto* p = static_cast<char*>(data);
  for (int64_t done = 0; done < bytes; done += kMaxPiece) {
    const int piece = static_cast<int>(std::min(kMaxPiece, bytes - done));
    KILN_MPI_CHECK(MPI_Bcast(p + done, piece, MPI_BYTE, root, comm_));
  }
}

void MpiCommunicator::broadcast_idle(void* data, int64_t bytes, int root) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(root >= 0 && root < size_ && bytes >= 0);
  auto* p = static_cast<char*>(data);
  for (int64_t done = 0; done < bytes; done += kMaxPiece) {
    const int piece = static_cast<int>(std::min(kMaxPiece, bytes - done));
    MPI_Request request = MPI_REQUEST_NULL;
    KILN_MPI_CHECK(MPI_Ibcast(p + done, piece, MPI_BYTE, root, comm_, &request));
    wait_idle(request);
  }
}

void MpiCommunicator::send(const void* data, int64_t bytes, int peer) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(peer >= 0 && peer < size_ && peer != rank_ && bytes >= 0);
  const auto* p = static_cast<const char*>(data);
  int64_t done = 0;
  do {  // a zero-byte message is still one message
    const int piece = static_cast<int>(std::min(kMaxPiece, bytes - done));
    KILN_MPI_CHECK(MPI_Send(p + done, piece, MPI_BYTE, peer, kTag, comm_));
    done += piece;
  } while (done < bytes);
}

void MpiCommunicator::recv(void* data, int64_t bytes, int peer) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(peer >= 0 && peer < size_ && peer != rank_ && bytes >= 0);
  auto* p = static_cast<char*>(data);
  int64_t done = 0;
  do {
    const int piece = static_cast<int>(std::min(kMaxPiece, bytes - done));
    MPI_Status status;
    KILN_MPI_CHECK(MPI_Recv(p + done, piece, MPI_BYTE, peer, kTag, comm_, &status));
    int received = 0;
    KILN_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &received));
    KILN_CHECK_MSG(
        received == piece,
        fmt::format("recv of {} bytes from rank {} matched a send of {}", piece, peer, received));
    done += piece;
  } while (done < bytes);
}

void MpiCommunicator::barrier() {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_MPI_CHECK(MPI_Barrier(comm_));
}

}  // namespace kiln

#endif  // KILN_HAVE_MPI
