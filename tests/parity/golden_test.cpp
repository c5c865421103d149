// Parity with llama.cpp: kiln's logits for the micro GGUF match every golden file (batch = the
// chunked prefill path, seq = the recurrent decode path), and greedy continuations match.
#include <gtest/gtest.h>

#include "kernels/cpu/sampling.h"
#include "shard/model.h"
#include "parity_util.h"

namespace kiln {
namespace {

using testing::compare_logits;
using testing::data_path;

class GoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = KimiLinearModel::load(data_path("golden/kimi-micro-f32.gguf"));
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(m).value().release();
    pool_ = new cpu::ThreadPool(2);
  }
  static void TearDownTestSuite() {
    delete model_;
    delete pool_;
  }

  // Logits for ids, in one forward (batch) or one token per forward (seq).
  static std::vector<float> run(const std::vector<int32_t>& ids, bool batch) {
    auto state = model_->new_state(1, static_cast<int64_t>(ids.size()) + 64).value();
    std::vector<float> all, logits;
    if (batch) {
      EXPECT_TRUE(model_->forward(*pool_, *state, Batch::of({{0, ids, true}}), all).ok());
      return all;
    }
    for (int32_t id : ids) {
      EXPECT_TRUE(model_->forward(*pool_, *state, Batch::of({{0, {id}, false}}), logits).ok());
      all.insert(all.end(), logits.begin(), logits.end());
    }
    return all;
  }

  static void check_file(const std::string& stem, bool batch) {
    const std::string bin = data_path("golden/" + stem + ".bin");
    const std::vector<int32_t> ids = testing::read_ids_line(bin + ".txt", "tokens");
    const std::vector<float> want = testing::read_f32(bin);
    const int64_t vocab = model_->config().vocab_size;
    ASSERT_EQ(want.size(), ids.size() * vocab);
    const std::vector<float> got = run(ids, batch);
    const testing::Comparison c = compare_logits(got, want, vocab, 2e-4, 1e-3);
    std::printf("[parity] %s: max |dlogit| = %.3g over %zu tokens\n", stem.c_str(), c.max_abs, ids.size());
    EXPECT_LE(c.max_abs, 2e-4) << stem << ": " << testing::describe(c, got, want, vocab);
    EXPECT_EQ(c.argmax_mismatches, 0) << stem << ": " << testing::describe(c, got, want, vocab);
  }

  static KimiLinearModel* model_;
  static cpu::ThreadPool* pool_;
};

KimiLinearModel* GoldenTest::model_ = nullptr;
cpu::ThreadPool* GoldenTest::pool_ = nullptr;

TEST_F(GoldenTest, Ids1To32Batch) { check_file("micro_f32_ids1-32_batch", true); }
TEST_F(GoldenTest, Ids1To32Seq) { check_file("micro_f32_ids1-32_seq", false); }
TEST_F(GoldenTest, Rand100Batch) { check_file("micro_f32_rand100_batch", true); }
TEST_F(GoldenTest, Rand100Seq) { check_file("micro_f32_rand100_seq", false); }
TEST_F(GoldenTest, PromptFoxBatch) { check_file("micro_f32_prompt_fox_batch", true); }

// Greedy continuation: argmax of the prompt's last logits, then each token fed back alone. Every
// row must be finite: these steps have no golden logits, and an argmax skips a NaN.
TEST_F(GoldenTest, GreedyContinuationsMatch) {
  for (const std::string stem : {"micro_f32_ids1-32_batch", "micro_f32_prompt_fox_batch"}) {
    const std::string txt = data_path("golden/" + stem + ".bin.txt");
    const std::vector<int32_t> prompt = testing::read_ids_line(txt, "tokens");
    const std::vector<int32_t> want = testing::read_ids_line(txt, "greedy");
    const int64_t vocab = model_->config().vocab_size;
    auto state = model_->new_state(1, static_cast<int64_t>(prompt.size() + want.size()) + 1).value();
    std::vector<float> logits;
    ASSERT_TRUE(model_->forward(*pool_, *state, Batch::of({{0, prompt, false}}), logits).ok());
    std::vector<int32_t> got;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_TRUE(testing::all_finite(logits.data(), vocab))
          << stem << ": non-finite logits at greedy step " << i;
      got.push_back(cpu::argmax(logits.data(), vocab));
      ASSERT_TRUE(model_->forward(*pool_, *state, Batch::of({{0, {got.back()}, false}}), logits).ok());
    }
    EXPECT_EQ(got, want) << stem;
  }
}

}  // namespace
}  // namespace kiln
