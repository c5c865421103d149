// Tensor × pipeline parallelism in one process: every rank is a thread with its own model shard,
// state and pool, joined by LocalCommunicator groups. Rank 0's logits must equal the single-rank
// result (f32, max |Δ| ≤ 1e-5) for batch prefill, decode steps and several sequences at once.
// The reference is the one-rank run (no communicator, every layer in one shard), itself checked
// against llama.cpp's logits in golden_test.cpp; so every layout compared with it has more than
// one rank (a 1 × 1 layout would compare the reference with itself), and ParallelGoldenTest
// checks a 2 × 2 split against the llama.cpp golden directly.
#include <thread>

#include <gtest/gtest.h>

#include "cluster/local_communicator.h"
#include "cluster/make_model.h"
#include "shard/model.h"
#include "parity_util.h"

namespace kiln {
namespace {

using testing::random_ids;

using Step = Batch;

// Prefill two sequences (one with all logits), decode both twice, then a second prefill chunk.
std::vector<Step> script(int64_t vocab) {
  return {Batch::of({{0, random_ids(23, vocab, 1), true}, {1, random_ids(7, vocab, 2), false}}),
          Batch::of({{0, random_ids(1, vocab, 3), false}, {1, random_ids(1, vocab, 4), false}}),
          Batch::of({{1, random_ids(1, vocab, 5), false}, {0, random_ids(1, vocab, 6), false}}),
          Batch::of({{0, random_ids(5, vocab, 7), true}})};
}

// Runs the script on tensor × pipeline thread-ranks; returns global rank 0's logits per step.
std::vector<std::vector<float>> run(const std::string& path, int tensor, int pipeline,
                                    const std::vector<int64_t>& layer_split = {}) {
  const int world = tensor * pipeline;
  std::vector<std::vector<std::unique_ptr<Communicator>>> tp(static_cast<size_t>(pipeline));
  std::vector<std::vector<std::unique_ptr<Communicator>>> pp(static_cast<size_t>(tensor));
  for (int s = 0; s < pipeline; ++s) tp[s] = make_local_group(tensor);
  for (int t = 0; t < tensor; ++t) pp[t] = make_local_group(pipeline);
  std::vector<std::vector<float>> out;
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      auto ck = Checkpoint::open(path);
      if (!ck.ok()) return void(errors[rank] = ck.status().to_string());
      auto plan = plan_rank((*ck)->config(), {tensor, pipeline, layer_split}, rank, DType::kF32, {});
      if (!plan.ok()) return void(errors[rank] = plan.status().to_string());
      if (!layer_split.empty()) {
        EXPECT_EQ(plan->layers.size(), layer_split[plan->pp_stage]);
      }
      const int s = plan->pp_stage, t = plan->tp_rank;
      auto model = KimiLinearModel::load(path, {*plan, tp[s][t].get(), pp[t][s].get(), {}});
      if (!model.ok()) return void(errors[rank] = model.status().to_string());
      cpu::ThreadPool pool(1);
      auto state = (*model)->new_state(2, 64).value();
      for (const Step& step : script((*model)->config().vocab_size)) {
        std::vector<float> logits;
        const Status st = (*model)->forward(pool, *state, step, logits);
        if (!st.ok()) return void(errors[rank] = st.to_string());
        if (rank == 0) out.push_back(logits);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[r], "") << "rank " << r;
  return out;
}

class ParallelTest : public ::testing::TestWithParam<std::tuple<std::string, int, int>> {};

std::string generated_model(const std::string& preset);
void compare_steps(const std::vector<std::vector<float>>& got,
                   const std::vector<std::vector<float>>& want, int64_t vocab,
                   const std::string& what);

TEST_P(ParallelTest, MatchesSingleRank) {
  const auto [preset, tensor, pipeline] = GetParam();
  ASSERT_GT(tensor * pipeline, 1) << "a one-rank layout is the reference itself";
  const std::string path = generated_model(preset);
  const std::vector<std::vector<float>> want = run(path, 1, 1);
  const std::vector<std::vector<float>> got = run(path, tensor, pipeline);
  compare_steps(got, want, preset == "micro" ? 640 : 1024,
                preset + " tp=" + std::to_string(tensor) + " pp=" + std::to_string(pipeline));
}

// An explicit, unbalanced layer split (1 + 7 layers) gives the same logits.
TEST(ParallelSplitTest, ExplicitLayerSplit) {
  const std::string path = generated_model("micro");
  compare_steps(run(path, 2, 2, {1, 7}), run(path, 1, 1), 640, "micro tp=2 split 1+7");
}

std::string generated_model(const std::string& preset) {
  const auto dir = testing::temp_dir("parallel-" + preset);
  const std::string path = (dir / "model.gguf").string();
  if (!std::filesystem::exists(path)) {
    auto cfg = preset_config(preset);
    EXPECT_TRUE(cfg.ok());
    MakeModelOptions o;
    o.seed = 3;
    o.dtype = DType::kF32;
    o.out_dir = dir.string();
    o.write_hf = false;
    EXPECT_TRUE(make_model(*cfg, o).ok());
  }
  return path;
}

void compare_steps(const std::vector<std::vector<float>>& got,
                   const std::vector<std::vector<float>>& want, int64_t vocab,
                   const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  testing::WorstError worst;
  for (size_t i = 0; i < want.size(); ++i) {
    const testing::Comparison c = testing::compare_logits(got[i], want[i], vocab, 1e-5, 1e-4);
    worst.add(c.max_abs, static_cast<int64_t>(i));
    EXPECT_LE(c.max_abs, 1e-5) << "step " << i << ": " << testing::describe(c, got[i], want[i], vocab);
    EXPECT_EQ(c.argmax_mismatches, 0) << "step " << i;
  }
  std::printf("[parity] %s vs one rank: max |dlogit| = %.3g\n", what.c_str(), worst.value);
}

// Every tensor × pipeline layout of 1, 2, 4 × 1, 2, 3 but 1 × 1 (the reference).
std::vector<std::tuple<std::string, int, int>> layouts() {
  std::vector<std::tuple<std::string, int, int>> out;
  for (const char* preset : {"micro", "tiny"}) {
    for (int tensor : {1, 2, 4}) {
      for (int pipeline : {1, 2, 3}) {
        if (tensor * pipeline > 1) out.emplace_back(preset, tensor, pipeline);
      }
    }
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, ParallelTest, ::testing::ValuesIn(layouts()),
    [](const ::testing::TestParamInfo<std::tuple<std::string, int, int>>& p) {
      return std::get<0>(p.param) + "_tp" + std::to_string(std::get<1>(p.param)) + "_pp" +
             std::to_string(std::get<2>(p.param));
    });

// The llama.cpp golden model split 2 × 2 still reproduces the golden logits.
TEST(ParallelGoldenTest, Tp2Pp2MatchesLlamaCpp) {
  const std::string model = testing::data_path("golden/kimi-micro-f32.gguf");
  const std::string stem = testing::data_path("golden/micro_f32_rand100_batch.bin");
  const std::vector<int32_t> tokens = testing::read_ids_line(stem + ".txt", "tokens");
  const std::vector<float> want = testing::read_f32(stem);
  const int world = 4;
  std::vector<std::vector<std::unique_ptr<Communicator>>> tp(2), pp(2);
  for (int i = 0; i < 2; ++i) tp[i] = make_local_group(2), pp[i] = make_local_group(2);
  std::vector<float> got;
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      auto ck = Checkpoint::open(model);
      ASSERT_TRUE(ck.ok());
      auto plan = plan_rank((*ck)->config(), {2, 2, {}}, rank, DType::kF32, {});
      ASSERT_TRUE(plan.ok()) << plan.status().to_string();
      auto m = KimiLinearModel::load(model, {*plan, tp[plan->pp_stage][plan->tp_rank].get(),
                                             pp[plan->tp_rank][plan->pp_stage].get(), {}});
      ASSERT_TRUE(m.ok()) << m.status().to_string();
      cpu::ThreadPool pool(1);
      auto state = (*m)->new_state(1, 128).value();
      std::vector<float> logits;
      ASSERT_TRUE((*m)->forward(pool, *state, Batch::of({{0, tokens, true}}), logits).ok());
      if (rank == 0) got = logits;
    });
  }
  for (std::thread& th : threads) th.join();
  const testing::Comparison c = testing::compare_logits(got, want, 640, 2e-4, 1e-3);
  EXPECT_LE(c.max_abs, 2e-4) << testing::describe(c, got, want, 640);
  EXPECT_EQ(c.argmax_mismatches, 0);
}

}  // namespace
}  // namespace kiln
