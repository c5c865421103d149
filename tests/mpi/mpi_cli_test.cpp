// kiln under a real mpirun: eval and generate with TP 2, TP 4 and TP 2 × PP 2 give the same
// logits (≤ 1e-5) and greedy tokens as one rank and still match the llama.cpp golden file; a
// load failure ends the whole job non-zero, naming the rank. This program runs outside mpirun
// and starts the jobs itself.
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/common/compare.h"
#include "tests/common/run_command.h"

namespace {

using Result = kiln::test_util::CommandResult;

// Runs `cmd` through the shell; output is stdout plus stderr, or stdout only.
Result run(const std::string& cmd, bool with_stderr = true) {
  return kiln::test_util::run_command(cmd + (with_stderr ? " 2>&1" : " 2>/dev/null"));
}

// The environment of every job started here: root allowed (CI runs as root), shared memory and
// self as transports, and no leak report from Open MPI's own start-up in sanitised builds.
class MpiEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    for (const auto& [key, value] :
         {std::pair{"OMPI_ALLOW_RUN_AS_ROOT", "1"}, std::pair{"OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"},
          std::pair{"OMPI_MCA_btl", "self,vader"}, std::pair{"OMPI_MCA_pml", "ob1"},
          std::pair{"OMPI_MCA_btl_vader_single_copy_mechanism", "none"},
          std::pair{"ASAN_OPTIONS", "detect_leaks=0"}}) {
      ::setenv(key, value, 1);
    }
  }
};
const auto* const kMpiEnvironment = ::testing::AddGlobalTestEnvironment(new MpiEnvironment);

std::string mpirun(int np) {
  return std::string(KILN_MPIEXEC) + " --allow-run-as-root --oversubscribe -np " +
         std::to_string(np) + " " + KILN_BINARY;
}

std::string data(const std::string& rel) { return std::string(KILN_TEST_DATA_DIR) + "/" + rel; }

std::vector<float> read_f32(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<float> v;
  float x;
  while (f.read(reinterpret_cast<char*>(&x), 4)) v.push_back(x);
  return v;
}

// NaN-proof (tests/common/compare.h): NaN when either side holds a NaN, +inf for an infinity
// against a finite value or for different sizes.
double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size()) return INFINITY;
  return kiln::testing::max_abs_diff(a.data(), b.data(), static_cast<int64_t>(a.size())).value;
}

std::filesystem::path scratch() {
  static const auto dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("kiln-mpi-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

struct Layout {
  int np;
  int pipeline;
};

TEST(MpiCliTest, EvalMatchesOneRankAndGolden) {
  const std::string model = data("golden/kimi-micro-f32.gguf");
  const std::string ids = data("golden/rand100_ids.txt");
  for (const std::string mode : {"batch", "seq"}) {
    const std::string one = (scratch() / ("np1-" + mode + ".bin")).string();
    Result r = run(mpirun(1) + " eval --threads 1 --model " + model + " --tokens-file " + ids +
                   " --mode " + mode + " --dump-logits " + one);
    ASSERT_EQ(r.code, 0) << r.output;
    const std::vector<float> base = read_f32(one);
    const std::vector<float> golden = read_f32(data("golden/micro_f32_rand100_" + mode + ".bin"));
    for (const Layout l : {Layout{2, 1}, Layout{4, 1}, Layout{4, 2}}) {
      const std::string out = (scratch() / ("np" + std::to_string(l.np) + "-pp" +
                                            std::to_string(l.pipeline) + "-" + mode + ".bin")).string();
      r = run(mpirun(l.np) + " eval --threads 1 --model " + model + " --tokens-file " + ids +
              " --mode " + mode + " --pipeline " + std::to_string(l.pipeline) + " --dump-logits " + out);
      ASSERT_EQ(r.code, 0) << r.output;
      const std::vector<float> got = read_f32(out);
      const double vs_one = max_abs_diff(got, base), vs_golden = max_abs_diff(got, golden);
      std::printf("[mpi] np=%d pipeline=%d %s: max |dlogit| vs one rank %.3g, vs llama.cpp %.3g\n",
                  l.np, l.pipeline, mode.c_str(), vs_one, vs_golden);
      EXPECT_LE(vs_one, 1e-5);
      EXPECT_LE(vs_golden, 2e-4);
    }
  }
}

TEST(MpiCliTest, GreedyGenerationIsTheSameOnEveryLayout) {
  const auto dir = scratch() / "micro";
  Result r = run(std::string(KILN_BINARY) + " make-model --preset micro --dtype f32 --seed 4 " +
                 "--format gguf --out " + dir.string());
  ASSERT_EQ(r.code, 0) << r.output;
  const std::string args = " generate --threads 1 --model " + (dir / "model.gguf").string() +
                           " --prompt 'The river bends' --temperature 0 --max-tokens 24";
  const Result one = run(mpirun(1) + args, false);
  ASSERT_EQ(one.code, 0) << one.output;
  ASSERT_FALSE(one.output.empty());
  for (const Layout l : {Layout{2, 1}, Layout{4, 1}, Layout{4, 2}}) {
    r = run(mpirun(l.np) + args + " --pipeline " + std::to_string(l.pipeline), false);
    ASSERT_EQ(r.code, 0) << r.output;
    EXPECT_EQ(r.output, one.output) << "np=" << l.np << " pipeline=" << l.pipeline;
  }
}

TEST(MpiCliTest, LoadFailureEndsTheJobNamingTheRank) {
  const Result r = run(mpirun(2) + " eval --model /nonexistent/model.gguf --tokens 1,2");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_LT(r.seconds, 20.0);
  EXPECT_NE(r.output.find("rank 1 (host"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/model.gguf"), std::string::npos) << r.output;
}

TEST(MpiCliTest, LayoutThatDoesNotDivideIsRejected) {
  const Result r = run(mpirun(3) + " eval --model " + data("golden/kimi-micro-f32.gguf") +
                       " --tokens 1,2");
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("tensor=3 does not divide 4 KDA heads"), std::string::npos) << r.output;
}

}  // namespace
