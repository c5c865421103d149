// Self-consistency of the engine on generated models: the HF directory and the GGUF written from
// the same weights give the same logits; prefill-then-decode equals one prefill at every split;
// a batch of sequences equals each sequence alone.
#include <map>

#include <gtest/gtest.h>

#include "cluster/make_model.h"
#include "shard/model.h"
#include "parity_util.h"

namespace kiln {
namespace {

std::vector<int32_t> test_ids(int64_t n, int64_t vocab, uint64_t seed) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) {
    seed = seed * 6364136223846793005ull + 1442695040888963407ull;
    ids.push_back(static_cast<int32_t>((seed >> 33) % static_cast<uint64_t>(vocab)));
  }
  return ids;
}

// Writes preset "tiny" with `dtype` (both layouts) once per dtype; eps 1e-6 so the HF convention
// for kv_a_layernorm (1e-6) and the GGUF one (rms_norm_eps) coincide.
std::string tiny_model_dir(DType dtype) {
  const std::string name = "tiny-" + std::string(dtype_name(dtype));
  const auto dir = testing::temp_dir(name);
  if (!std::filesystem::exists(dir / "model.gguf")) {
    auto cfg = preset_config("tiny");
    EXPECT_TRUE(cfg.ok());
    ModelConfig c = *cfg;
    c.rms_norm_eps = 1e-6f;
    MakeModelOptions o;
    o.seed = 5;
    o.dtype = dtype;
    o.out_dir = dir.string();
    auto s = make_model(c, o);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
  }
  return dir.string();
}

std::vector<float> batch_logits(KimiLinearModel& m, cpu::ThreadPool& pool,
                                const std::vector<int32_t>& ids) {
  StateCache state(m.config(), 1, static_cast<int64_t>(ids.size()));
  std::vector<float> logits;
  EXPECT_TRUE(m.forward(pool, state, {{0, ids, true}}, logits).ok());
  return logits;
}

struct FormatCase {
  DType dtype;
  double tol;  // max |Δlogit| between the two layouts
};

class CrossFormatTest : public ::testing::TestWithParam<FormatCase> {};

TEST_P(CrossFormatTest, HfAndGgufGiveTheSameLogits) {
  const FormatCase fc = GetParam();
  const std::string dir = tiny_model_dir(fc.dtype);
  auto hf = KimiLinearModel::load(dir + "/hf");
  auto gguf = KimiLinearModel::load(dir + "/model.gguf");
  ASSERT_TRUE(hf.ok()) << hf.status().to_string();
  ASSERT_TRUE(gguf.ok()) << gguf.status().to_string();
  EXPECT_EQ((*hf)->config().kv_a_norm_eps, (*gguf)->config().kv_a_norm_eps);
  cpu::ThreadPool pool(2);
  const int64_t vocab = (*hf)->config().vocab_size;
  const std::vector<int32_t> ids = test_ids(40, vocab, 3);
  const std::vector<float> a = batch_logits(**hf, pool, ids);
  const std::vector<float> b = batch_logits(**gguf, pool, ids);
  const testing::Comparison c = testing::compare_logits(a, b, vocab, fc.tol, 1e-2);
  std::printf("[parity] hf vs gguf (%s): max |dlogit| = %.3g\n",
              std::string(dtype_name(fc.dtype)).c_str(), c.max_abs);
  EXPECT_LE(c.max_abs, fc.tol) << testing::describe(c, a, b, vocab);
  EXPECT_EQ(c.argmax_mismatches, 0);
}

// Both layouts hold the same numbers (the HF twin of a q8_0 GGUF holds the dequantised values in
// f32), and the q8_0 kernels accumulate the dequantised weights in fp32 like the f32 ones, so
// only summation order may differ.
INSTANTIATE_TEST_SUITE_P(Dtypes, CrossFormatTest,
                         ::testing::Values(FormatCase{DType::kF32, 1e-5}, FormatCase{DType::kBF16, 1e-4},
                                           FormatCase{DType::kQ8_0, 1e-4}),
                         [](const ::testing::TestParamInfo<FormatCase>& p) { return std::string(dtype_name(p.param.dtype)); });

class SplitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = KimiLinearModel::load(tiny_model_dir(DType::kF32) + "/model.gguf");
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    model_ = std::move(m).value();
  }
  std::unique_ptr<KimiLinearModel> model_;
  cpu::ThreadPool pool_{2};
};

// Prefill of the first s tokens, then the rest one token per forward (s = 1 … all): every logit
// row equals the single prefill's (KDA state and conv windows, MLA latent cache hand-off).
TEST_F(SplitTest, PrefillThenDecodeEqualsOnePrefill) {
  const int64_t vocab = model_->config().vocab_size, n = 37;
  const std::vector<int32_t> ids = test_ids(n, vocab, 11);
  const std::vector<float> want = batch_logits(*model_, pool_, ids);
  for (int64_t s = 1; s <= n; s += (s < 20 ? 1 : 7)) {
    StateCache state(model_->config(), 1, n);
    std::vector<float> got, logits;
    std::vector<int32_t> head(ids.begin(), ids.begin() + s);
    ASSERT_TRUE(model_->forward(pool_, state, {{0, head, true}}, got).ok());
    for (int64_t t = s; t < n; ++t) {
      ASSERT_TRUE(model_->forward(pool_, state, {{0, {ids[t]}, false}}, logits).ok());
      got.insert(got.end(), logits.begin(), logits.end());
    }
    const testing::Comparison c = testing::compare_logits(got, want, vocab, 1e-4, 1e-3);
    EXPECT_LE(c.max_abs, 1e-4) << "split at " << s << ": " << testing::describe(c, got, want, vocab);
  }
}

// Prefill in two chunks of arbitrary sizes (chunked → chunked hand-off).
TEST_F(SplitTest, TwoChunkPrefillEqualsOnePrefill) {
  const int64_t vocab = model_->config().vocab_size, n = 70;
  const std::vector<int32_t> ids = test_ids(n, vocab, 12);
  const std::vector<float> want = batch_logits(*model_, pool_, ids);
  for (int64_t s : {2, 15, 16, 17, 33, 64, 69}) {
    StateCache state(model_->config(), 1, n);
    std::vector<float> a, b;
    ASSERT_TRUE(model_->forward(pool_, state, {{0, {ids.begin(), ids.begin() + s}, true}}, a).ok());
    ASSERT_TRUE(model_->forward(pool_, state, {{0, {ids.begin() + s, ids.end()}, true}}, b).ok());
    a.insert(a.end(), b.begin(), b.end());
    const testing::Comparison c = testing::compare_logits(a, want, vocab, 1e-4, 1e-3);
    EXPECT_LE(c.max_abs, 1e-4) << "split at " << s << ": " << testing::describe(c, a, want, vocab);
  }
}

// Sequences of different lengths in one forward (each in its own slot, one of them already
// mid-sequence) give the same logits as each run alone.
TEST_F(SplitTest, BatchOfSequencesEqualsEachAlone) {
  const int64_t vocab = model_->config().vocab_size;
  const std::vector<int32_t> a = test_ids(23, vocab, 1), b = test_ids(1, vocab, 2);
  const std::vector<int32_t> c_prefix = test_ids(9, vocab, 3), c_rest = test_ids(5, vocab, 4);
  StateCache state(model_->config(), 3, 64);
  std::vector<float> logits;
  ASSERT_TRUE(model_->forward(pool_, state, {{2, c_prefix, false}}, logits).ok());
  std::vector<float> batched;
  ASSERT_TRUE(model_->forward(pool_, state, {{0, a, true}, {1, b, true}, {2, c_rest, true}}, batched).ok());

  std::vector<float> want = batch_logits(*model_, pool_, a);
  const std::vector<float> wb = batch_logits(*model_, pool_, b);
  want.insert(want.end(), wb.begin(), wb.end());
  std::vector<int32_t> c_all = c_prefix;
  c_all.insert(c_all.end(), c_rest.begin(), c_rest.end());
  const std::vector<float> wc = batch_logits(*model_, pool_, c_all);
  want.insert(want.end(), wc.end() - static_cast<int64_t>(c_rest.size()) * vocab, wc.end());
  const testing::Comparison cmp = testing::compare_logits(batched, want, vocab, 1e-4, 1e-3);
  EXPECT_LE(cmp.max_abs, 1e-4) << testing::describe(cmp, batched, want, vocab);
}

TEST_F(SplitTest, RejectsBadTokensAndContextOverflow) {
  StateCache state(model_->config(), 1, 4);
  std::vector<float> logits;
  Status s = model_->forward(pool_, state, {{0, {1, 2, 3, 4, 5}, false}}, logits);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("context"), std::string::npos) << s.message();
  s = model_->forward(pool_, state, {{0, {static_cast<int32_t>(model_->config().vocab_size)}, false}}, logits);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("token id"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// The activation hook sees every layer's tagged activations, with the right layer numbers and
// shapes, and the last residual row is what the final norm and lm_head consume.
TEST_F(SplitTest, ActivationHookTagsEveryLayer) {
  const ModelConfig& c = model_->config();
  std::map<std::pair<int64_t, std::string>, std::pair<int64_t, int64_t>> seen;
  model_->set_activation_hook([&](int64_t layer, const char* name, const float*, int64_t rows,
                                  int64_t cols) { seen[{layer, name}] = {rows, cols}; });
  StateCache state(c, 1, 8);
  std::vector<float> logits;
  ASSERT_TRUE(model_->forward(pool_, state, {{0, {1, 2, 3, 4, 5}, false}}, logits).ok());
  model_->set_activation_hook(nullptr);
  EXPECT_TRUE(seen.count({0, "embedding"}));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    for (const char* name : {"attn_out", "ffn_out", "residual"}) {
      ASSERT_TRUE(seen.count({i, name})) << "layer " << i << " " << name;
      const auto shape = seen[{i, name}];
      EXPECT_EQ(shape, std::make_pair(int64_t{5}, c.hidden_size));
    }
    const char* core = c.is_kda(i) ? "kda.core" : "mla.heads";
    EXPECT_TRUE(seen.count({i, core})) << "layer " << i << " " << core;
  }
}

}  // namespace
}  // namespace kiln
