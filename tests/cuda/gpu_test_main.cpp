// main() of the GPU test programs (kiln_cuda_tests, kiln_cuda_emu_tests): runs the tests and
// turns a skip into an exit status that cannot hide a failure. ctest reads the status
// (SKIP_RETURN_CODE in tests/CMakeLists.txt), and so does scripts/gpu-check.sh:
//   0   every test that ran passed and none skipped;
//   77  none failed and every skip was KILN_REQUIRE_GPU's "no CUDA device" (cuda_test_util.h);
//   1   a test failed, or a test skipped on a machine with a CUDA device, or for another reason.
#include <cstdio>

#include <gtest/gtest.h>

#include "kernels/cuda/runtime.h"
#include "tests/common/skip_exit.h"
#include "tests/cuda/cuda_test_util.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (RUN_ALL_TESTS() != 0) return 1;
  const int skipped = ::testing::UnitTest::GetInstance()->skipped_test_count();
  if (skipped == 0) return 0;
  const int devices = kiln::cuda::device_count();
  if (devices > 0) {
    std::fprintf(stderr,
                 "kiln GPU tests: %d test(s) skipped on a machine with %d CUDA device(s); a GPU "
                 "test must run where a GPU exists\n",
                 skipped, devices);
    return 1;
  }
  if (kiln::test::no_device_skips() != skipped) {
    std::fprintf(stderr,
                 "kiln GPU tests: %d test(s) skipped, %d of them for want of a CUDA device; a "
                 "GPU test may skip only for that reason\n",
                 skipped, kiln::test::no_device_skips());
    return 1;
  }
  std::printf("kiln GPU tests: %d test(s) skipped: no CUDA device is visible\n", skipped);
  return kiln::test::kSkipExitCode;
}
