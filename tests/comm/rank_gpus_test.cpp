// The GPU a CUDA rank opens (DeviceChoice): KILN_RANK_GPUS parsing, the choice rule, and
// init_world's errors for cuda that need no GPU (a build without CUDA, no visible device, a
// malformed KILN_RANK_GPUS). The GPU paths themselves are in tests/cuda and tests/mpi.
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "cluster/comm/world.h"

#ifdef KILN_HAVE_MPI
#include <mpi.h>

#include "tests/common/mpi_session.h"
#endif
#ifdef KILN_HAVE_CUDA
#include "kernels/cuda/runtime.h"
#endif

namespace kiln {
namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ParseRankGpus, EntryOfTheWorldRank) {
  auto first = parse_rank_gpus("0,1,0,1", 0);
  ASSERT_TRUE(first.ok()) << first.status().to_string();
  EXPECT_EQ(*first, 0);
  auto last = parse_rank_gpus("0,1,0,1", 3);
  ASSERT_TRUE(last.ok()) << last.status().to_string();
  EXPECT_EQ(*last, 1);
  auto single = parse_rank_gpus("7", 0);
  ASSERT_TRUE(single.ok());
  EXPECT_EQ(*single, 7);
  auto wide = parse_rank_gpus("3,12", 1);
  ASSERT_TRUE(wide.ok());
  EXPECT_EQ(*wide, 12);
}

TEST(ParseRankGpus, MalformedEntryNamesTheVariableValueAndEntry) {
  for (const char* value : {"0,x", "0,,1", "0,1,", "-1", "1.5", "0, 1", "", "+2", "0;1"}) {
    auto gpu = parse_rank_gpus(value, 0);
    ASSERT_FALSE(gpu.ok()) << "'" << value << "' parsed";
    EXPECT_EQ(gpu.status().code(), StatusCode::kInvalidArgument);
    const std::string message = gpu.status().message();
    EXPECT_TRUE(contains(message, std::string("KILN_RANK_GPUS='") + value + "'")) << message;
    EXPECT_TRUE(contains(message, "is not a CUDA device number")) << message;
  }
  // Every entry is checked, also those after the rank's own.
  auto later = parse_rank_gpus("0,1,zz", 0);
  ASSERT_FALSE(later.ok());
  EXPECT_TRUE(contains(later.status().message(), "entry 2 ('zz')")) << later.status().message();
}

TEST(ParseRankGpus, TooShortNamesTheRank) {
  auto gpu = parse_rank_gpus("0,1", 2);
  ASSERT_FALSE(gpu.ok());
  EXPECT_EQ(gpu.status().code(), StatusCode::kInvalidArgument);
  const std::string message = gpu.status().message();
  EXPECT_TRUE(contains(message, "KILN_RANK_GPUS='0,1' lists 2 GPU(s)")) << message;
  EXPECT_TRUE(contains(message, "world rank 2")) << message;
}

TEST(ChooseRankGpu, ExplicitThenEnvironmentThenLocalRank) {
  // An explicit GPU wins over everything, even a malformed list.
  auto explicit_gpu = choose_rank_gpu(3, "x", 0, 0, 0);
  ASSERT_TRUE(explicit_gpu.ok());
  EXPECT_EQ(*explicit_gpu, 3);
  auto from_env = choose_rank_gpu(-1, "5,6", 1, 0, 8);
  ASSERT_TRUE(from_env.ok());
  EXPECT_EQ(*from_env, 6);
  auto bad_env = choose_rank_gpu(-1, "5,6", 2, 0, 8);
  ASSERT_FALSE(bad_env.ok());
  EXPECT_TRUE(contains(bad_env.status().message(), "KILN_RANK_GPUS")) << bad_env.status().message();
  // Unset or empty: the local rank modulo the visible devices.
  auto by_local = choose_rank_gpu(-1, nullptr, 9, 5, 4);
  ASSERT_TRUE(by_local.ok());
  EXPECT_EQ(*by_local, 1);
  auto empty_env = choose_rank_gpu(-1, "", 9, 2, 4);
  ASSERT_TRUE(empty_env.ok());
  EXPECT_EQ(*empty_env, 2);
  auto none = choose_rank_gpu(-1, nullptr, 4, 0, 0);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), StatusCode::kUnavailable);
  EXPECT_TRUE(contains(none.status().message(), "no CUDA device is visible to world rank 4"))
      << none.status().message();
}

#ifndef KILN_HAVE_CUDA
TEST(InitWorldCuda, BuildWithoutCudaSaysSo) {
  auto context = init_world(nullptr, nullptr, 1, 1, {Device::kCuda, -1});
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.status().message(), device_available(Device::kCuda).message());
}
#endif

#if defined(KILN_HAVE_CUDA) && defined(KILN_HAVE_MPI)
using test::ensure_mpi;

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    had_ = std::getenv(name) != nullptr;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(InitWorldCuda, MalformedRankGpusIsInvalidArgumentNamingTheRank) {
  ensure_mpi();
  ScopedEnv env("KILN_RANK_GPUS", "0,x");
  auto context = init_world(nullptr, nullptr, 1, 1, {Device::kCuda, -1});
  ASSERT_FALSE(context.ok());
  EXPECT_EQ(context.status().code(), StatusCode::kInvalidArgument);
  const std::string message = context.status().message();
  EXPECT_TRUE(contains(message, "rank 0 (host ")) << message;
  EXPECT_TRUE(contains(message, "KILN_RANK_GPUS='0,x'")) << message;
}

// Without a device a CUDA world is refused, naming why; with one it opens on it. Never skipped:
// each machine checks the side it can.
TEST(InitWorldCuda, OpensTheVisibleDeviceOrSaysThereIsNone) {
  ensure_mpi();
  ScopedEnv env("KILN_RANK_GPUS", nullptr);
  const int devices = cuda::device_count();
  {
    auto context = init_world(nullptr, nullptr, 1, 1, {Device::kCuda, -1});
    if (devices == 0) {
      ASSERT_FALSE(context.ok());
      EXPECT_EQ(context.status().code(), StatusCode::kUnavailable);
      EXPECT_TRUE(contains(context.status().message(), "no CUDA device is visible"))
          << context.status().message();
    } else {
      ASSERT_TRUE(context.ok()) << context.status().to_string();
      EXPECT_NE((*context)->gpu(), nullptr);
    }
  }
  // An explicit GPU that does not exist is refused by the device check.
  auto explicit_gpu = init_world(nullptr, nullptr, 1, 1, {Device::kCuda, devices + 3});
  ASSERT_FALSE(explicit_gpu.ok());
  EXPECT_EQ(explicit_gpu.status().code(), StatusCode::kUnavailable);
  // A CPU world in the same process still works.
  auto cpu = init_world(nullptr, nullptr, 1, 1);
  ASSERT_TRUE(cpu.ok()) << cpu.status().to_string();
  EXPECT_EQ((*cpu)->gpu(), nullptr);
  EXPECT_EQ((*cpu)->world().gpu, -1);
  EXPECT_FALSE((*cpu)->tp().device_memory());
}
#endif

}  // namespace
}  // namespace kiln
