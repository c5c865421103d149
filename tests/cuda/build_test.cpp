// The CUDA build itself: this suite exists only when CMake enabled the CUDA backend, so these
// checks fail CI on a machine with nvcc if the backend was silently left out of the build.
#include <gtest/gtest.h>

#include "kernels/base/device.h"
#include "kernels/cuda/runtime.h"

namespace kiln {
namespace {

TEST(CudaBuild, BackendIsCompiledIn) {
  EXPECT_TRUE(built_with_cuda());
  EXPECT_TRUE(device_available(Device::kCuda).ok());
}

TEST(CudaBuild, RuntimeIsLinkedAndAnswers) {
  // Without a GPU the runtime still loads and reports no device instead of crashing.
  const int n = cuda::device_count();
  EXPECT_GE(n, 0);
  const Status s = cuda::check_device(n);  // one past the last device never exists
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("CUDA device"), std::string::npos) << s.message();
}

// Where a device exists the context opens (a failure such as cuBLAS not starting fails here
// with its message); where none exists the error says so. Never skipped.
TEST(CudaBuild, ContextOpensOrNamesTheMissingDevice) {
  auto ctx = cuda::Context::create(0);
  if (cuda::device_count() > 0) {
    ASSERT_TRUE(ctx.ok()) << ctx.status().to_string();
    EXPECT_EQ((*ctx)->device(), 0);
    return;
  }
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.status().message().find("no CUDA device is visible"), std::string::npos)
      << ctx.status().message();
}

}  // namespace
}  // namespace kiln
