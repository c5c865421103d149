// NcclCommunicator on one rank (MPI_COMM_SELF, device 0): every data-plane call on device buffers
// gives the identity result, in stream order; and init_world with Device::kCuda opens the GPU.
// Skipped when no GPU is visible. Multi-rank NCCL runs under mpirun in tests/mpi.
#if defined(KILN_HAVE_MPI)

#include "cluster/comm/nccl_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/comm/world.h"
#include "tests/common/mpi_session.h"
#include "tests/cuda/cuda_test_util.h"

namespace kiln {
namespace {

using test::ensure_mpi;

// Copies on the communicator's stream (cuda::copy_to_device / copy_to_host), so they are ordered
// with its NCCL calls.
cuda::DeviceBuffer upload(const std::vector<float>& host, cudaStream_t stream) {
  auto buffer = cuda::DeviceBuffer::allocate(
      static_cast<int64_t>(std::max<size_t>(host.size(), 1) * sizeof(float)), "test data");
  EXPECT_TRUE(buffer.ok()) << buffer.status().message();
  if (!buffer.ok()) return {};
  const Status s =
      cuda::copy_to_device(stream, buffer->data(), host.data(), host.size() * sizeof(float));
  EXPECT_TRUE(s.ok()) << s.to_string();
  return std::move(buffer).value();
}

std::vector<float> download(const cuda::DeviceBuffer& buffer, size_t n, cudaStream_t stream) {
  std::vector<float> host(n);
  const Status s = cuda::copy_to_host(stream, host.data(), buffer.data(), n * sizeof(float));
  EXPECT_TRUE(s.ok()) << s.to_string();
  return host;
}

std::vector<float> ramp(size_t n, float start) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + 0.25f * static_cast<float>(i);
  return v;
}

std::unique_ptr<NcclCommunicator> one_rank_nccl() {
  ensure_mpi();
  auto made = NcclCommunicator::create(MPI_COMM_SELF, *test::gpu_context());
  EXPECT_TRUE(made.ok()) << made.status().to_string();
  if (!made.ok()) return nullptr;
  return std::move(made).value();
}

TEST(NcclCommunicator, OneRankIdentity) {
  KILN_REQUIRE_GPU();
  auto nccl = one_rank_nccl();
  ASSERT_NE(nccl, nullptr);
  EXPECT_EQ(nccl->rank(), 0);
  EXPECT_EQ(nccl->size(), 1);
  EXPECT_TRUE(nccl->device_memory());
  EXPECT_EQ(nccl->device(), test::gpu_context()->device());
  const cudaStream_t stream = nccl->stream();
  EXPECT_EQ(stream, test::gpu_context()->stream());

  // all_reduce_sum over one rank leaves the data as it was (odd length, not a multiple of 4).
  const std::vector<float> input = ramp(1001, -3.0f);
  auto data = upload(input, stream);
  nccl->all_reduce_sum(data.as<float>(), 1001);
  EXPECT_EQ(download(data, 1001, stream), input);

  // all_gather: recv[1][n] is the send buffer.
  auto gathered = upload(std::vector<float>(1001, -1.0f), stream);
  nccl->all_gather(data.as<float>(), 1001, gathered.as<float>());
  EXPECT_EQ(download(gathered, 1001, stream), input);

  // all_gather_v with this rank's count.
  auto gathered_v = upload(std::vector<float>(77, -1.0f), stream);
  nccl->all_gather_v(data.as<float>(), 77, gathered_v.as<float>(), {77});
  EXPECT_EQ(download(gathered_v, 77, stream),
            std::vector<float>(input.begin(), input.begin() + 77));

  // broadcast of bytes from root 0 leaves them as they were.
  std::vector<float> bytes_in = ramp(13, 100.0f);
  auto bytes = upload(bytes_in, stream);
  nccl->broadcast(bytes.data(), 13 * sizeof(float), 0);
  EXPECT_EQ(download(bytes, 13, stream), bytes_in);

  // Zero-length calls are no-ops.
  nccl->all_reduce_sum(data.as<float>(), 0);
  nccl->all_gather(data.as<float>(), 0, gathered.as<float>());
  nccl->all_gather_v(data.as<float>(), 0, gathered_v.as<float>(), {0});
  nccl->broadcast(bytes.data(), 0, 0);
  nccl->barrier();
  EXPECT_EQ(download(data, 1001, stream), input);
  EXPECT_GT(nccl->busy_seconds(), 0.0);
}

TEST(NcclCommunicator, StreamOrderLetsCallsFollowEachOther) {
  KILN_REQUIRE_GPU();
  auto nccl = one_rank_nccl();
  ASSERT_NE(nccl, nullptr);
  const cudaStream_t stream = nccl->stream();
  // Several calls queued back to back, read once at the end: each sees the previous result.
  const std::vector<float> input = ramp(4096, 1.0f);
  auto a = upload(input, stream);
  auto b = upload(std::vector<float>(4096, 0.0f), stream);
  for (int round = 0; round < 20; ++round) {
    nccl->all_reduce_sum(a.as<float>(), 4096);
    nccl->all_gather(a.as<float>(), 4096, b.as<float>());
    nccl->all_gather_v(b.as<float>(), 4096, a.as<float>(), {4096});
  }
  EXPECT_EQ(download(a, 4096, stream), input);
}

TEST(CudaWorldOneRank, OpensTheGpu) {
  KILN_REQUIRE_GPU();
  ensure_mpi();
  const char* saved = std::getenv("KILN_RANK_GPUS");
  const std::string saved_value = saved != nullptr ? saved : "";
  unsetenv("KILN_RANK_GPUS");
  auto context = init_world(nullptr, nullptr, 1, 1, {Device::kCuda, -1});
  if (saved != nullptr) setenv("KILN_RANK_GPUS", saved_value.c_str(), 1);
  ASSERT_TRUE(context.ok()) << context.status().to_string();
  const WorldContext& c = **context;
  EXPECT_EQ(c.device(), Device::kCuda);
  ASSERT_NE(c.gpu(), nullptr);
  EXPECT_EQ(c.world().gpu, 0);  // local rank 0
  EXPECT_EQ(c.gpu()->device(), 0);
  // Groups of one rank and the control plane stay on MPI with host memory.
  EXPECT_FALSE(c.tp().device_memory());
  EXPECT_FALSE(c.pp().device_memory());
  EXPECT_FALSE(c.world_comm().device_memory());
  float x = 2.5f;
  c.tp().all_reduce_sum(&x, 1);
  EXPECT_EQ(x, 2.5f);
}

}  // namespace
}  // namespace kiln

#endif  // KILN_HAVE_MPI
