// kiln check-config, kiln launch and --config on eval from the outside: placement and every
// problem printed, the dry-run mpirun command, a real two-rank launch matching one rank, and the
// merged configuration with --set applied.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include <gtest/gtest.h>

#include "parity_util.h"

namespace kiln {
namespace {

using Result = testing::CommandResult;
using testing::run_kiln;

// A topology file on the golden micro GGUF: `tensor` x 1 ranks on `slots` localhost slots.
std::string write_config(const std::string& name, int tensor, int slots,
                         const std::string& memory) {
  const std::string path = (testing::temp_dir("launch") / name).string();
  std::ofstream out(path);
  out << "model:\n  path: " << testing::data_path("golden/kimi-micro-f32.gguf") << "\n"
      << "backend: cpu\nthreads: 1\nparallel:\n  tensor: " << tensor << "\n  pipeline: 1\n"
      << "nodes:\n  - host: localhost\n    slots: " << slots << "\n    memory_per_rank: " << memory
      << "\n";
  return path;
}

bool has(const Result& r, const std::string& s) { return r.output.find(s) != std::string::npos; }

TEST(LaunchCliTest, CheckConfigPrintsPlacementOfAGoodConfig) {
  const Result r = run_kiln("check-config " + write_config("good.yaml", 2, 2, "1GiB"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r, "placement (2 ranks")) << r.output;
  EXPECT_TRUE(has(r, "weight_bytes")) << r.output;
  EXPECT_TRUE(has(r, ": OK")) << r.output;
}

TEST(LaunchCliTest, CheckConfigListsEveryProblem) {
  const Result r = run_kiln("check-config " + write_config("bad.yaml", 3, 2, "1KB"));
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_LT(r.code, 128) << r.output;
  EXPECT_TRUE(has(r, "3 problem(s)")) << r.output;
  EXPECT_TRUE(has(r, "does not divide 4 KDA heads")) << r.output;
  EXPECT_TRUE(has(r, "world size")) << r.output;
  EXPECT_TRUE(has(r, "memory_per_rank is 1000 B")) << r.output;
}

TEST(LaunchCliTest, CheckConfigNamesAMissingModel) {
  const std::string path = write_config("missing.yaml", 1, 1, "0");
  const Result r = run_kiln("check-config " + path + " --set model.path=/nonexistent.gguf");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(has(r, "model.path")) << r.output;
  EXPECT_TRUE(has(r, "/nonexistent.gguf")) << r.output;
}

TEST(LaunchCliTest, DryRunPrintsHostfileAndMpirunCommand) {
  const std::string path = write_config("dry.yaml", 2, 2, "0");
  const Result r = run_kiln("launch " + path + " --dry-run --command eval -- --oversubscribe -- "
                            "--tokens 1,2");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r, "localhost slots=2\n")) << r.output;
  EXPECT_TRUE(has(r, "--map-by slot --bind-to none -np 2 --oversubscribe ")) << r.output;
  EXPECT_TRUE(has(r, " eval --config " + path + " --tokens 1,2\n")) << r.output;
}

TEST(LaunchCliTest, TwoRankLaunchMatchesOneRankEval) {
  const std::string tokens = "--tokens 3,1,4,1,5,9,2,6";
  const Result one = run_kiln("eval --model " + testing::data_path("golden/kimi-micro-f32.gguf") +
                              " --threads 1 " + tokens);
  ASSERT_EQ(one.code, 0) << one.output;
  const size_t at = one.output.find("argmax");
  ASSERT_NE(at, std::string::npos) << one.output;
  const std::string argmax = one.output.substr(at, one.output.find('\n', at) - at);
  const std::string env = ::geteuid() == 0
                              ? "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
                              : "";
  const Result two = run_kiln("launch " + write_config("run.yaml", 2, 2, "0") +
                                  " --command eval -- --oversubscribe -- " + tokens,
                              env);
  ASSERT_EQ(two.code, 0) << two.output;
  EXPECT_TRUE(has(two, argmax + "\n")) << argmax << "\n" << two.output;
}

TEST(LaunchCliTest, PrintConfigShowsTheMergedConfig) {
  const Result r = run_kiln("eval --config " + write_config("print.yaml", 1, 1, "0") +
                            " --set server.port=9123 --threads 3 --print-config");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(has(r, "port: 9123")) << r.output;
  EXPECT_TRUE(has(r, "threads: 3")) << r.output;
  EXPECT_TRUE(has(r, "kimi-micro-f32.gguf")) << r.output;
}

TEST(LaunchCliTest, ConfigRunsEvalAndGenerate) {
  const std::string path = write_config("run1.yaml", 1, 1, "0");
  const Result e = run_kiln("eval --config " + path + " --tokens 1,2,3");
  EXPECT_EQ(e.code, 0) << e.output;
  EXPECT_TRUE(has(e, "argmax")) << e.output;
  const Result g = run_kiln("generate --config " + path + " --prompt hi --max-tokens 2");
  EXPECT_EQ(g.code, 0) << g.output;
}

TEST(LaunchCliTest, BadSetKeyIsOneLineError) {
  const std::string path = write_config("badset.yaml", 1, 1, "0");
  for (const std::string cmd : {"eval --tokens 1 --config", "launch --dry-run", "check-config"}) {
    const std::string args = cmd + " " + path + " --set parallel.tensr=2";
    const Result r = run_kiln(args);
    EXPECT_EQ(r.code, 1) << args << "\n" << r.output;
    EXPECT_TRUE(has(r, "kiln: error: ")) << r.output;
    EXPECT_TRUE(has(r, "'parallel.tensr'")) << r.output;
    EXPECT_EQ(r.output.find('\n'), r.output.size() - 1) << r.output;
  }
}

}  // namespace
}  // namespace kiln
