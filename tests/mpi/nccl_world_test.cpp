// CUDA ranks under mpirun: init_world with Device::kCuda opens each rank's GPU and picks the TP
// group's communicator (NCCL when the ranks have distinct GPUs, MPI through host memory when they
// share one); the collectives and point-to-point calls then give the expected results through
// whichever was chosen, on device buffers when it takes device memory. With no visible GPU every
// rank exits with 77 before MPI starts, which ctest reports as skipped.
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/common/rank_failure_printer.h"

#include "cluster/comm/nccl_communicator.h"
#include "cluster/comm/world.h"
#include "kernels/cuda/runtime.h"

namespace kiln {
namespace {

constexpr int kSkipExitCode = 77;  // SKIP_RETURN_CODE in tests/mpi/CMakeLists.txt

int mpi_size() {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return size;
}

std::unique_ptr<WorldContext> cuda_world() {
  unsetenv("KILN_RANK_GPUS");  // the GPU is then local_rank % device count
  auto context = init_world(nullptr, nullptr, mpi_size(), 1, {Device::kCuda, -1});
  EXPECT_TRUE(context.ok()) << context.status().to_string();
  if (!context.ok()) return nullptr;
  return std::move(context).value();
}

// A float buffer in the memory `comm` takes: on the rank's GPU when comm.device_memory(), else
// on the host. Device copies run on the GPU context's stream, in order with the communicator.
class CommBuffer {
 public:
  CommBuffer(const Communicator& comm, const cuda::Context& gpu, const std::vector<float>& init)
      : device_(comm.device_memory()), stream_(gpu.stream()), n_(init.size()) {
    if (!device_) {
      host_ = init;
      return;
    }
    auto made = cuda::DeviceBuffer::allocate(static_cast<int64_t>((n_ + 1) * sizeof(float)),
                                             "test buffer");
    EXPECT_TRUE(made.ok()) << made.status().to_string();
    if (!made.ok()) return;
    buffer_ = std::move(made).value();
    const Status s = cuda::copy_to_device(stream_, buffer_.data(), init.data(), n_ * sizeof(float));
    EXPECT_TRUE(s.ok()) << s.to_string();
  }

  float* get() { return device_ ? buffer_.as<float>() : host_.data(); }

  // The contents once the stream has reached every call queued so far.
  std::vector<float> read() const {
    if (!device_) return host_;
    std::vector<float> out(n_);
    const Status s = cuda::copy_to_host(stream_, out.data(), buffer_.data(), n_ * sizeof(float));
    EXPECT_TRUE(s.ok()) << s.to_string();
    return out;
  }

 private:
  bool device_;
  cudaStream_t stream_;
  size_t n_;
  std::vector<float> host_;
  cuda::DeviceBuffer buffer_;
};

TEST(CudaWorld, NcclForDistinctGpusMpiWhenShared) {
  auto context = cuda_world();
  ASSERT_NE(context, nullptr);
  const World& w = context->world();
  const int devices = cuda::device_count();
  ASSERT_NE(context->gpu(), nullptr);
  EXPECT_EQ(context->device(), Device::kCuda);
  EXPECT_EQ(w.gpu, w.local_rank % devices);
  EXPECT_EQ(context->gpu()->device(), w.gpu);
  // One host: ranks 0..n-1 take GPUs 0..n-1, distinct exactly when there are enough GPUs.
  const bool distinct = w.local_size <= devices;
  EXPECT_EQ(context->tp().device_memory(), distinct) << devices << " GPU(s)";
  EXPECT_EQ(dynamic_cast<NcclCommunicator*>(&context->tp()) != nullptr, distinct);
  EXPECT_FALSE(context->world_comm().device_memory());  // the control plane stays on MPI
  EXPECT_FALSE(context->pp().device_memory());          // pipeline 1: a group of one rank
  std::printf("rank %d: GPU %d of %d, TP communicator: %s\n", w.rank, w.gpu, devices,
              context->tp().device_memory() ? "NCCL" : "MPI");
}

TEST(CudaWorld, CollectivesThroughTheChosenCommunicator) {
  auto context = cuda_world();
  ASSERT_NE(context, nullptr);
  Communicator& tp = context->tp();
  const cuda::Context& gpu = *context->gpu();
  const int rank = tp.rank();
  const int size = tp.size();

  // all_reduce_sum of small integers: exact in any summation order.
  constexpr int64_t kN = 1000;
  std::vector<float> mine(kN);
  for (int64_t i = 0; i < kN; ++i) mine[i] = static_cast<float>((rank + 1) * (i % 7));
  CommBuffer reduced(tp, gpu, mine);
  tp.all_reduce_sum(reduced.get(), kN);
  // Queued straight after, read once: stream order makes the gather see the reduced values.
  CommBuffer gathered(tp, gpu, std::vector<float>(kN * size, -1.0f));
  tp.all_gather(reduced.get(), kN, gathered.get());
  const std::vector<float> sums = reduced.read();
  const std::vector<float> all = gathered.read();
  const float ranks_sum = static_cast<float>(size * (size + 1) / 2);
  for (int64_t i = 0; i < kN; ++i) {
    ASSERT_EQ(sums[i], ranks_sum * static_cast<float>(i % 7)) << "element " << i;
    for (int r = 0; r < size; ++r) ASSERT_EQ(all[r * kN + i], sums[i]) << "rank " << r;
  }

  // all_gather_v with uneven counts, rank 1's empty.
  std::vector<int64_t> counts(size);
  int64_t total = 0;
  for (int r = 0; r < size; ++r) {
    counts[r] = (r == 1) ? 0 : 5 + 3 * r;
    total += counts[r];
  }
  std::vector<float> part(counts[rank]);
  for (size_t i = 0; i < part.size(); ++i) part[i] = static_cast<float>(100 * rank + i);
  CommBuffer send(tp, gpu, part);
  CommBuffer joined(tp, gpu, std::vector<float>(total, -1.0f));
  tp.all_gather_v(send.get(), counts[rank], joined.get(), counts);
  const std::vector<float> got = joined.read();
  int64_t offset = 0;
  for (int r = 0; r < size; ++r) {
    for (int64_t i = 0; i < counts[r]; ++i) {
      ASSERT_EQ(got[offset + i], static_cast<float>(100 * r + i)) << "rank " << r << " i " << i;
    }
    offset += counts[r];
  }

  // broadcast of bytes from the last rank.
  CommBuffer message(tp, gpu, std::vector<float>(9, rank == size - 1 ? 42.0f : 0.0f));
  tp.broadcast(message.get(), 9 * sizeof(float), size - 1);
  EXPECT_EQ(message.read(), std::vector<float>(9, 42.0f));

  // Point to point along the chain 0 → 1 → ...: two messages per pair arrive in order, and each
  // rank forwards what it received plus its rank.
  CommBuffer first(tp, gpu, std::vector<float>(256, 0.0f));
  CommBuffer second(tp, gpu, std::vector<float>(3, 0.0f));
  if (rank > 0) {
    tp.recv(first.get(), 256 * sizeof(float), rank - 1);
    tp.recv(second.get(), 3 * sizeof(float), rank - 1);
  }
  if (rank + 1 < size) {
    std::vector<float> a = first.read();
    std::vector<float> b = second.read();
    for (float& v : a) v += static_cast<float>(rank);
    for (float& v : b) v -= static_cast<float>(rank);
    CommBuffer out_a(tp, gpu, a);
    CommBuffer out_b(tp, gpu, b);
    tp.send(out_a.get(), 256 * sizeof(float), rank + 1);
    tp.send(out_b.get(), 3 * sizeof(float), rank + 1);
    out_b.read();  // the stream has passed the sends: the buffers may go
  }
  const float expected = static_cast<float>(rank * (rank - 1) / 2);  // 0 + 1 + ... + rank-1
  EXPECT_EQ(first.read(), std::vector<float>(256, expected));
  EXPECT_EQ(second.read(), std::vector<float>(3, -expected));

  tp.barrier();
  context->world_comm().barrier();
  EXPECT_GT(tp.busy_seconds(), 0.0);
}

using test::RankFailurePrinter;

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) {
  // Decided before MPI starts, so every rank of the (one-host) job skips alike.
  if (kiln::cuda::device_count() == 0) {
    std::printf("SKIPPED: %s\n", kiln::cuda::check_device(0).message().c_str());
    return kiln::kSkipExitCode;
  }
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) return 2;
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  ::testing::InitGoogleTest(&argc, argv);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new kiln::RankFailurePrinter(rank));
  }
  const int result = RUN_ALL_TESTS();
  MPI_Finalize();
  return result;
}
