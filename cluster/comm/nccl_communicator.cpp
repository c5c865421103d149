// NcclCommunicator: bootstrap over MPI (unique id broadcast, agreed preparation), Communicator
// calls mapped onto NCCL collectives and point-to-point calls on the rank's stream, and a barrier
// that watches NCCL's asynchronous error while it waits.
#if defined(KILN_HAVE_CUDA) && defined(KILN_HAVE_MPI)

#include "cluster/comm/nccl_communicator.h"

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <fmt/format.h>

#include "cluster/comm/mpi_communicator.h"
#include "kernels/base/check.h"

namespace kiln {
namespace {

std::string nccl_error_text(ncclResult_t code, ncclComm_t comm) {
  const char* last = ncclGetLastError(comm);  // NCCL's detail for the failure, possibly empty
  std::string text = fmt::format("NCCL error {}: {}", static_cast<int>(code),
                                 ncclGetErrorString(code));
  if (last != nullptr && last[0] != '\0') text += fmt::format(" ({})", last);
  return text;
}

Status unavailable(std::string message) {
  return Status(StatusCode::kUnavailable, std::move(message));
}

}  // namespace

void nccl_call_failed(const char* file, int line, const char* call, int code, ncclComm_t comm) {
  check_failed(file, line, call, nccl_error_text(static_cast<ncclResult_t>(code), comm));
}

StatusOr<std::unique_ptr<NcclCommunicator>> NcclCommunicator::create(
    MPI_Comm group, const cuda::Context& context) {
  int world_rank = 0;
  int rank = 0;
  int size = 0;
  KILN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  KILN_MPI_CHECK(MPI_Comm_rank(group, &rank));
  KILN_MPI_CHECK(MPI_Comm_size(group, &size));
  const int device = context.device();
  const std::string where = fmt::format("world rank {} (NCCL group rank {} of {}, CUDA device {})",
                                        world_rank, rank, size, device);
  std::unique_ptr<NcclCommunicator> c(new NcclCommunicator());
  c->stream_ = context.stream();
  c->device_ = device;
  c->rank_ = rank;
  c->size_ = size;

  // Local preparation; a failure here is agreed over the group before anyone enters
  // ncclCommInitRank, which would otherwise wait for the missing rank.
  Status local;
  ncclUniqueId id{};
  if (const cudaError_t e = cudaSetDevice(device); e != cudaSuccess) {
    local = unavailable(fmt::format("{}: cudaSetDevice: {}", where, cudaGetErrorString(e)));
  }
  if (local.ok()) {
    auto token = cuda::DeviceBuffer::allocate(sizeof(float), "NCCL barrier token");
    if (token.ok()) {
      c->barrier_token_ = std::move(token).value();
      local = cuda::zero_device(c->stream_, c->barrier_token_.data(), sizeof(float))
                  .with_context(where);
    } else {
      local = token.status().with_context(where);
    }
  }
  if (local.ok() && rank == 0) {
    if (const ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      local = unavailable(
          fmt::format("{}: ncclGetUniqueId: {}", where, nccl_error_text(r, nullptr)));
    }
  }
  int mine = local.ok() ? size : rank;
  int first_failed = size;
  KILN_MPI_CHECK(MPI_Allreduce(&mine, &first_failed, 1, MPI_INT, MPI_MIN, group));
  if (first_failed < size) {
    if (!local.ok()) return local;
    return unavailable(fmt::format(
        "{}: NCCL group rank {} could not prepare its device or the NCCL id (see its message)",
        where, first_failed));
  }
  KILN_MPI_CHECK(MPI_Bcast(&id, static_cast<int>(sizeof(id)), MPI_BYTE, 0, group));

  const ncclResult_t r = ncclCommInitRank(&c->comm_, size, id, rank);
  if (r != ncclSuccess) {
    const std::string text = nccl_error_text(r, c->comm_);
    if (c->comm_ != nullptr) {  // a communicator left in an error state is released by abort
      if (const ncclResult_t a = ncclCommAbort(c->comm_); a != ncclSuccess) {
        std::fprintf(stderr, "kiln: %s: ncclCommAbort after a failed init: %s\n", where.c_str(),
                     nccl_error_text(a, nullptr).c_str());
      }
      c->comm_ = nullptr;
    }
    return unavailable(fmt::format("{}: ncclCommInitRank: {}", where, text));
  }
  return c;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ == nullptr) return;
  // Destroy waits for the communicator's queued work; after an asynchronous error (a failed peer)
  // that work may never finish, so the communicator is aborted instead.
  std::string problem;
  ncclResult_t async = ncclSuccess;
  if (const ncclResult_t r = ncclCommGetAsyncError(comm_, &async); r != ncclSuccess) {
    problem = "ncclCommGetAsyncError: " + nccl_error_text(r, comm_);
  } else if (async != ncclSuccess) {
    problem = "asynchronous " + nccl_error_text(async, comm_);
  }
  if (problem.empty()) problem = wait_stream();
  const bool abort = !problem.empty();
  const ncclResult_t r = abort ? ncclCommAbort(comm_) : ncclCommDestroy(comm_);
  if (abort) {
    std::fprintf(stderr, "kiln: NCCL communicator on device %d aborted: %s\n", device_,
                 problem.c_str());
  }
  if (r != ncclSuccess) {
    std::fprintf(stderr, "kiln: %s of the NCCL communicator on device %d failed: %s\n",
                 abort ? "ncclCommAbort" : "ncclCommDestroy", device_,
                 nccl_error_text(r, nullptr).c_str());
  }
  comm_ = nullptr;
}

std::string NcclCommunicator::wait_stream() {
  constexpr int kSpinPolls = 1000;  // then sleep between polls: a long wait does not hold a core
  for (int polls = 0;; ++polls) {
    const cudaError_t e = cudaStreamQuery(stream_);
    if (e == cudaSuccess) return {};
    if (e != cudaErrorNotReady) {
      return fmt::format("cudaStreamQuery: {} ({})", cudaGetErrorName(e), cudaGetErrorString(e));
    }
    ncclResult_t async = ncclSuccess;
    if (const ncclResult_t r = ncclCommGetAsyncError(comm_, &async); r != ncclSuccess) {
      return "ncclCommGetAsyncError: " + nccl_error_text(r, comm_);
    }
    if (async != ncclSuccess && async != ncclInProgress) {
      return "asynchronous " + nccl_error_text(async, comm_);
    }
    if (polls < kSpinPolls) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

void NcclCommunicator::all_reduce_sum(float* data, int64_t n) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(n >= 0);
  if (n == 0) return;  // n is the same on every rank, so every rank skips
  KILN_NCCL_CHECK(comm_, ncclAllReduce(data, data, static_cast<size_t>(n), ncclFloat, ncclSum,
                                       comm_, stream_));
}

void NcclCommunicator::all_gather(const float* send, int64_t n, float* recv) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(n >= 0);
  if (n == 0) return;
  KILN_NCCL_CHECK(comm_,
                  ncclAllGather(send, recv, static_cast<size_t>(n), ncclFloat, comm_, stream_));
}

void NcclCommunicator::all_gather_v(const float* send, int64_t n, float* recv,
                                    const std::vector<int64_t>& counts) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(static_cast<int>(counts.size()) == size_);
  KILN_CHECK(counts[rank_] == n);
  for (const int64_t count : counts) KILN_CHECK(count >= 0);
  // counts are the same on every rank, so every rank enqueues the same broadcasts in the same
  // order; the root's own slice is copied from `send` into its place in `recv`.
  KILN_NCCL_CHECK(comm_, ncclGroupStart());
  int64_t offset = 0;
  for (int r = 0; r < size_; ++r) {
    if (counts[r] > 0) {
      KILN_NCCL_CHECK(comm_, ncclBroadcast(r == rank_ ? send : recv + offset, recv + offset,
                                           static_cast<size_t>(counts[r]), ncclFloat, r, comm_,
                                           stream_));
    }
    offset += counts[r];
  }
  KILN_NCCL_CHECK(comm_, ncclGroupEnd());
}

void NcclCommunicator::broadcast(void* data, int64_t bytes, int root) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(root >= 0 && root < size_ && bytes >= 0);
  if (bytes == 0) return;
  KILN_NCCL_CHECK(comm_, ncclBroadcast(data, data, static_cast<size_t>(bytes), ncclChar, root,
                                       comm_, stream_));
}

void NcclCommunicator::broadcast_idle(void* /*data*/, int64_t /*bytes*/, int /*root*/) {
  check_failed(__FILE__, __LINE__, "NcclCommunicator::broadcast_idle",
               "broadcast_idle belongs to the control plane, which uses the MPI world "
               "communicator with host memory; NCCL communicators do not provide it");
}

void NcclCommunicator::send(const void* data, int64_t bytes, int peer) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(peer >= 0 && peer < size_ && peer != rank_ && bytes >= 0);
  if (bytes == 0) return;  // the matching recv has bytes == 0 too and skips as well
  KILN_NCCL_CHECK(comm_,
                  ncclSend(data, static_cast<size_t>(bytes), ncclChar, peer, comm_, stream_));
}

void NcclCommunicator::recv(void* data, int64_t bytes, int peer) {
  ScopedBusyTimer timer(busy_seconds_);
  KILN_CHECK(peer >= 0 && peer < size_ && peer != rank_ && bytes >= 0);
  if (bytes == 0) return;
  KILN_NCCL_CHECK(comm_,
                  ncclRecv(data, static_cast<size_t>(bytes), ncclChar, peer, comm_, stream_));
}

void NcclCommunicator::barrier() {
  ScopedBusyTimer timer(busy_seconds_);
  auto* token = barrier_token_.as<float>();
  KILN_NCCL_CHECK(comm_, ncclAllReduce(token, token, 1, ncclFloat, ncclSum, comm_, stream_));
  const std::string problem = wait_stream();
  KILN_CHECK_MSG(problem.empty(), fmt::format("NCCL barrier on device {}: {}", device_, problem));
}

}  // namespace kiln

#endif  // KILN_HAVE_CUDA && KILN_HAVE_MPI
