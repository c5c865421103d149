// Asking for the CUDA backend where it cannot run is a clear error, never a crash: a build
// without CUDA says so, and a CUDA build on a machine without a GPU says no device is visible.
// On a GPU machine the same requests must succeed (checked here too; the gpu-labelled suite
// covers the numbers).
#include <gtest/gtest.h>

#include "kernels/base/device.h"
#include "shard/model.h"
#include "parity_util.h"
#ifdef KILN_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace kiln {
namespace {

using testing::data_path;
using testing::run_kiln;

bool gpu_visible() {
#ifdef KILN_HAVE_CUDA
  return cuda::device_count() > 0;
#else
  return false;
#endif
}

// The part of the error that tells why CUDA is unavailable here.
std::string expected_reason() {
  return built_with_cuda() ? "no CUDA device is visible" : "built without CUDA";
}

TEST(DeviceChoice, LoadingOnCudaFailsOnlyWithoutOne) {
  ParallelContext p;
  p.device = Device::kCuda;
  auto m = KimiLinearModel::load(data_path("golden/kimi-micro-f32.gguf"), p);
  if (gpu_visible()) {
    EXPECT_TRUE(m.ok()) << m.status().to_string();
    return;
  }
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find(expected_reason()), std::string::npos)
      << m.status().message();
}

TEST(DeviceChoice, CommandsNameTheMissingBackend) {
  const std::string model = data_path("golden/kimi-micro-f32.gguf");
  for (const std::string& args :
       {"generate --backend cuda --model " + model + " --prompt hi --max-tokens 2",
        "bench --backend cuda --runs 1 --gen-tokens 2 --prompt-tokens 4 --model " + model}) {
    const testing::CommandResult r = run_kiln(args);
    if (gpu_visible()) {  // where CUDA can run, the commands run
      EXPECT_EQ(r.code, 0) << args << "\n" << r.output;
      continue;
    }
    EXPECT_EQ(r.code, 1) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(expected_reason()), std::string::npos) << args << "\n" << r.output;
  }
  const testing::CommandResult bad = run_kiln("generate --backend tpu --model " + model);
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.output.find("--backend"), std::string::npos) << bad.output;
}

// check-config plans placement without opening a device: a CUDA build accepts a cuda topology
// with or without a GPU; a CPU build names the missing backend.
TEST(DeviceChoice, CheckConfigReportsACudaTopologyOnACpuBuild) {
  const std::string config = data_path("../../configs/local-cpu.yaml");
  const testing::CommandResult r =
      run_kiln("check-config " + config + " --set backend=cuda --set model.path=" +
               data_path("golden/kimi-micro-f32.gguf"));
  if (built_with_cuda()) {
    EXPECT_EQ(r.code, 0) << r.output;
    EXPECT_NE(r.output.find("local-cpu.yaml: OK"), std::string::npos) << r.output;
    return;
  }
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("built without CUDA"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace kiln
