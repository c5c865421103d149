// The emulator refuses the launches that the smallest target architecture refuses (emu_exec.cpp,
// limits in emu_internal.h), with the error CUDA returns and without running anything: block
// dimensions and threads per block, threads beyond __launch_bounds__, grid dimensions, dynamic
// shared memory beyond 48 KiB − static without the opt-in, static + dynamic beyond the opt-in
// limit. Static shared memory is counted through the kernel's callees. And the chunked KDA kernel
// at the model's shape (K = V = 128, chunk 64) uses exactly its documented layout, under sm_80's
// limit.
#include <cstdio>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cuda/ops.h"
#include "tests/cuda/cuda_test_util.h"
#include "tools/cuda_emu/emu_internal.h"
#include "tools/cuda_emu/tests/limits_kernels.h"

namespace kiln_emu::test {
namespace {

using kiln::test::DeviceVec;
using kiln::test::to_device;
using kiln::test::to_host;

// Launches `launch` on a zeroed buffer of n ints; returns its error and what it wrote.
template <class Launch>
std::pair<cudaError_t, std::vector<int>> run_ints(int64_t n, Launch launch) {
  const DeviceVec<int> out = to_device(std::vector<int>(static_cast<size_t>(n), 0));
  const cudaError_t e = launch(out.get());
  return {e, to_host(out)};
}

int count_ones(const std::vector<int>& v) {
  int n = 0;
  for (int x : v) n += x == 1;
  return n;
}

TEST(CudaEmuLimits, ThreadsPerBlockAndLaunchBounds) {
  struct Case {
    bool bounded;
    dim3 block;
    cudaError_t want;
  };
  const Case cases[] = {
      {true, dim3(kBoundedThreads), cudaSuccess},
      {true, dim3(kBoundedThreads + 1), cudaErrorLaunchOutOfResources},
      {true, dim3(64, 2, 2), cudaErrorLaunchOutOfResources},  // 256 threads in all
      {false, dim3(1024), cudaSuccess},
      {false, dim3(1025), cudaErrorInvalidConfiguration},
      {false, dim3(32, 32, 2), cudaErrorInvalidConfiguration},  // 2048 threads
      {false, dim3(1, 1, 65), cudaErrorInvalidConfiguration},   // z ≤ 64
      {false, dim3(0), cudaErrorInvalidConfiguration},
  };
  for (const Case& c : cases) {
    const unsigned threads = c.block.x * c.block.y * c.block.z;
    const auto [e, out] = run_ints(2048, [&](int* p) {
      return c.bounded ? launch_bounded(dim3(1), c.block, p) : launch_plain(dim3(1), c.block, p);
    });
    const auto what = ::testing::Message() << (c.bounded ? "bounded" : "plain") << " block ("
                                           << c.block.x << "," << c.block.y << "," << c.block.z
                                           << ")";
    EXPECT_EQ(e, c.want) << what << ": " << cudaGetErrorName(e);
    EXPECT_EQ(count_ones(out), c.want == cudaSuccess ? static_cast<int>(threads) : 0) << what;
  }
}

TEST(CudaEmuLimits, GridDimensions) {
  auto [e, out] = run_ints(65535, [](int* p) { return launch_plain(dim3(1, 65535), dim3(1), p); });
  EXPECT_EQ(e, cudaSuccess);
  EXPECT_EQ(count_ones(out), 65535);
  for (const dim3 grid : {dim3(1, 65536), dim3(1, 1, 65536), dim3(0, 1)}) {
    std::tie(e, out) = run_ints(1, [&](int* p) { return launch_plain(grid, dim3(1), p); });
    EXPECT_EQ(e, cudaErrorInvalidConfiguration) << grid.x << "," << grid.y << "," << grid.z;
    EXPECT_EQ(count_ones(out), 0);
  }
}

// Launches a shared-memory kernel; returns its error and whether it ran (every output 1 + 32).
template <class Launch>
std::pair<cudaError_t, bool> run_shared(size_t dynamic, Launch launch) {
  const DeviceVec<float> out = to_device(std::vector<float>(kSharedThreads, 0.0f));
  const cudaError_t e = launch(dynamic, out.get());
  bool ran = true;
  for (float v : to_host(out)) ran = ran && v == 1.0f + kSharedThreads;
  return {e, ran};
}

TEST(CudaEmuLimits, StaticSharedIsCountedThroughCallees) {
  KernelUsage u;
  ASSERT_TRUE(kernel_usage("default_shared_kernel", &u));
  EXPECT_EQ(u.static_bytes, kStaticShared);
  const auto [e, ran] = run_shared(0, launch_default_shared);
  EXPECT_EQ(e, cudaSuccess);
  EXPECT_TRUE(ran);
}

TEST(CudaEmuLimits, DynamicSharedWithoutOptInIsWhat48KiBLeaves) {
  const size_t fits = kSharedDefault - kStaticShared;
  auto [e, ran] = run_shared(fits, launch_default_shared);
  EXPECT_EQ(e, cudaSuccess);
  EXPECT_TRUE(ran);
  std::tie(e, ran) = run_shared(fits + 16, launch_default_shared);
  EXPECT_EQ(e, cudaErrorInvalidValue);
  EXPECT_FALSE(ran);
}

TEST(CudaEmuLimits, OptInUpToTheTargetLimitStaticIncluded) {
  const size_t fits = kSharedOptin - kStaticShared;
  ASSERT_EQ(opt_in(static_cast<int>(fits)), cudaSuccess);
  auto [e, ran] = run_shared(fits, launch_optin_shared);
  EXPECT_EQ(e, cudaSuccess);
  EXPECT_TRUE(ran);
  std::tie(e, ran) = run_shared(fits + 16, launch_optin_shared);  // beyond the opt-in
  EXPECT_EQ(e, cudaErrorInvalidValue);
  EXPECT_FALSE(ran);
  // An opt-in that leaves no room for the static part: hardware refuses the attribute; the
  // emulator refuses every launch after it, however small.
  ASSERT_EQ(opt_in(kSharedOptin), cudaSuccess);
  std::tie(e, ran) = run_shared(16, launch_optin_shared);
  EXPECT_EQ(e, cudaErrorInvalidValue);
  EXPECT_FALSE(ran);
  EXPECT_EQ(opt_in(kSharedOptin + 1), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  ASSERT_EQ(opt_in(static_cast<int>(fits)), cudaSuccess);
}

TEST(CudaEmuLimits, KdaChunkedAtTheModelShapeFitsTheTarget) {
  KILN_REQUIRE_GPU();
  const int64_t H = 2, K = 128, V = 128, C = 64, T = 70;  // a full chunk and a short one
  // The kernel's documented layout (kda.cu, ChunkLayout): S [K][V], GB [C][K + 1], LX and AM
  // [C][C], Y [C][V], bet [C], gl [K], in floats.
  const int64_t want = (K * V + C * (K + 1) + 2 * C * C + C * V + C + K) * 4;
  const std::vector<kiln::cuda::Span> spans = {{0, 0, 0, static_cast<int32_t>(T)}};
  const auto q = to_device(std::vector<float>(T * H * K, 0.01f));
  const auto v = to_device(std::vector<float>(T * H * V, 0.5f));
  const auto g = to_device(std::vector<float>(T * H * K, -0.1f));
  const auto beta = to_device(std::vector<float>(T * H, 0.5f));
  const auto d_spans = to_device(spans);
  auto state = to_device(std::vector<float>(H * K * V, 0.0f));
  auto o = to_device(std::vector<float>(T * H * V, 0.0f));
  kiln::cuda::kda_chunked(*kiln::test::gpu_context(), q.get(), q.get(), v.get(), g.get(),
                          beta.get(), d_spans.get(), 1, T, H, K, V, C, state.get(), H * K * V,
                          o.get());
  kiln::test::gpu_context()->synchronize();
  KernelUsage u;
  ASSERT_TRUE(kernel_usage("kda_chunked_kernel", &u));
  EXPECT_EQ(u.last_total, static_cast<size_t>(want));
  EXPECT_LE(u.last_total, static_cast<size_t>(kSharedOptin));
  std::printf("kda_chunked_kernel K=V=%lld chunk %lld: %zu B of shared memory per block, sm_%d "
              "allows %d (%lld B to spare)\n", static_cast<long long>(K),
              static_cast<long long>(C), u.last_total, KILN_EMU_SM, kSharedOptin,
              static_cast<long long>(kSharedOptin) - static_cast<long long>(u.last_total));
}

}  // namespace
}  // namespace kiln_emu::test
