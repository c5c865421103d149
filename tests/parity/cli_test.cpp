// The kiln command line from the outside: `kiln eval` reproduces the golden logits through its
// stable flags, and bad arguments or files give a one-line error and a non-zero exit.
#include <cstdio>

#include <gtest/gtest.h>
#include <sys/wait.h>

#include "parity_util.h"

namespace kiln {
namespace {

using Result = testing::CommandResult;
using testing::run_kiln;

TEST(CliTest, EvalReproducesGoldenLogitsInBothModes) {
  const std::string model = testing::data_path("golden/kimi-micro-f32.gguf");
  const auto dir = testing::temp_dir("cli");
  for (const std::string mode : {"batch", "seq"}) {
    const std::string stem = "micro_f32_rand100_" + mode;
    const std::string out = (dir / (stem + ".bin")).string();
    const Result r = run_kiln("eval --model " + model + " --tokens-file " +
                              testing::data_path("golden/rand100_ids.txt") + " --mode " + mode +
                              " --threads 2 --dump-logits " + out);
    ASSERT_EQ(r.code, 0) << r.output;
    const std::vector<float> got = testing::read_f32(out);
    const std::vector<float> want =
        testing::read_f32(testing::data_path("golden/" + stem + ".bin"));
    const testing::Comparison c = testing::compare_logits(got, want, 640, 2e-4, 1e-3);
    EXPECT_LE(c.max_abs, 2e-4) << testing::describe(c, got, want, 640);
  }
}

// --exact-activations reaches the kernels: over q8_0 weights, one-token decode forwards (seq mode)
// change with it (int8 vs f32 activations) while a single prefill (batch mode) does not.
TEST(CliTest, ExactActivationsChangesQuantisedDecodeOnly) {
  const auto dir = testing::temp_dir("cli-exact");
  const Result made =
      run_kiln("make-model --preset micro --dtype q8_0 --format gguf --seed 3 --out " +
               (dir / "m").string());
  ASSERT_EQ(made.code, 0) << made.output;
  const std::string model = (dir / "m" / "model.gguf").string();
  for (const std::string mode : {"batch", "seq"}) {
    std::vector<float> logits[2];
    for (int exact = 0; exact < 2; ++exact) {
      const std::string out = (dir / (mode + std::to_string(exact) + ".bin")).string();
      const Result r =
          run_kiln("eval --model " + model + " --tokens-file " +
                   testing::data_path("golden/rand100_ids.txt") + " --mode " + mode +
                   " --threads 2 --dump-logits " + out + (exact ? " --exact-activations" : ""));
      ASSERT_EQ(r.code, 0) << r.output;
      logits[exact] = testing::read_f32(out);
    }
    ASSERT_EQ(logits[0].size(), logits[1].size());
    if (mode == "batch") {
      EXPECT_EQ(logits[0], logits[1]) << "a prefill keeps f32 activations either way";
    } else {
      EXPECT_NE(logits[0], logits[1]) << "decode over q8_0 should quantise activations by default";
    }
  }
}

TEST(CliTest, BadInputsGiveOneLineErrors) {
  const std::string model = testing::data_path("golden/kimi-micro-f32.gguf");
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {"eval --model /nonexistent.gguf --tokens 1,2", "/nonexistent.gguf"},
      {"eval --model " + model + " --tokens 1,x,3", "'x'"},
      {"eval --model " + model + " --tokens 1,99999", "99999"},
      {"eval --model " + model + " --tokens-file /nonexistent.txt", "/nonexistent.txt"},
      {"eval --model " + model, "--tokens"},
      {"eval --model " + model + " --tokens 1 --mode sideways", "--mode"},
      {"inspect --model " + testing::data_path("golden/README.md"), "README.md"},
      {"make-model --preset huge --out /tmp/x", "--preset"},
      {"generate --model " + model + " --prompt hi --temperature -1", "--temperature"},
      {"frobnicate", "frobnicate"},
      {"bench --model " + model + " --batch 0", "--batch"},
      {"bench --model " + model + " --context -1", "--context"},
      {"bench --model " + model + " --batch 2 --context 64", "--batch"},
  };
  for (const Case& c : cases) {
    const Result r = run_kiln(c.args);
    EXPECT_NE(r.code, 0) << c.args;
    EXPECT_LT(r.code, 128) << "crashed: " << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.args << " → " << r.output;
    EXPECT_NE(r.output.find("error"), std::string::npos) << c.args << " → " << r.output;
  }
}

// Counts the lines of `out` that contain `what`.
int count_lines_with(const std::string& out, const std::string& what) {
  int n = 0;
  for (size_t p = out.find(what); p != std::string::npos; p = out.find(what, p + 1)) ++n;
  return n;
}

TEST(CliTest, BenchBatchedDecodeReportsStepTrafficAndLimits) {
  const Result r = run_kiln("bench --model " + testing::data_path("golden/kimi-micro-f32.gguf") +
                            " --batch 4 --gen-tokens 2 --prompt-tokens 8 --runs 1 --threads 2");
  ASSERT_EQ(r.code, 0) << r.output;
  for (const char* field :
       {"probe: read bandwidth", "FMA peak", "batched prefill: 32 tokens", "GFLOP/s",
        "batched decode: 4 sequences x 2 steps", "tok/s aggregate", "ms/step",
        "weights read per step:", "distinct routed experts", "of probed bandwidth"}) {
    EXPECT_NE(r.output.find(field), std::string::npos) << field << "\n" << r.output;
  }
}

TEST(CliTest, BenchContextProfileReportsSegments) {
  const Result r = run_kiln("bench --model " + testing::data_path("golden/kimi-micro-f32.gguf") +
                            " --context 64 --gen-tokens 2 --runs 1 --threads 2 --profile");
  ASSERT_EQ(r.code, 0) << r.output;
  for (const char* field : {"context prefill: 64 tokens", "GFLOP/s", "decode at context 64:",
                            "ms/step", "of probed bandwidth", "attn_out→ffn_out (MoE)", "→kda.q",
                            "kda.beta→kda.core", "→mla.latent", "→end", "attention: KDA layers"}) {
    EXPECT_NE(r.output.find(field), std::string::npos) << field << "\n" << r.output;
  }
  // A prefill table and a decode-step table.
  EXPECT_EQ(count_lines_with(r.output, "profile: "), 2) << r.output;
}

TEST(CliTest, BenchOneSequenceReportsLimitsAndProfile) {
  const Result r = run_kiln("bench --model " + testing::data_path("golden/kimi-micro-f32.gguf") +
                            " --prompt-tokens 8 --gen-tokens 2 --runs 1 --threads 2 --profile");
  ASSERT_EQ(r.code, 0) << r.output;
  for (const char* field : {"prefill: 8 tokens", "of probed FMA peak", "decode:  2 tokens",
                            "MB/token", "of probed bandwidth", "decode step, 1 sequence"}) {
    EXPECT_NE(r.output.find(field), std::string::npos) << field << "\n" << r.output;
  }
}

TEST(CliTest, InspectShowsConfigAndStateSizes) {
  const Result r = run_kiln("inspect --model " + testing::data_path("golden/kimi-micro-f32.gguf"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("per-sequence state"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("MLA: 4 heads"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace kiln
