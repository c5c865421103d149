// Self-consistency of the engine on generated models: the HF directory and the GGUF written from
// the same weights give the same logits; prefill-then-decode equals one prefill at every split;
// a batch of sequences equals each sequence alone, and for f32/bf16 weights bit for bit whatever
// its batch-mates, slot and pages.
#include <cstring>
#include <map>

#include <gtest/gtest.h>

#include "cluster/make_model.h"
#include "parity_util.h"
#include "shard/model.h"

namespace kiln {
namespace {

using testing::random_ids;

// Writes `preset` with `dtype` (both layouts) once per pair; eps 1e-6 so the HF convention
// for kv_a_layernorm (1e-6) and the GGUF one (rms_norm_eps) coincide.
std::string model_dir(const std::string& preset, DType dtype) {
  const std::string name = preset + "-" + std::string(dtype_name(dtype));
  const auto dir = testing::temp_dir(name);
  if (!std::filesystem::exists(dir / "model.gguf")) {
    auto cfg = preset_config(preset);
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

std::string tiny_model_dir(DType dtype) { return model_dir("tiny", dtype); }

std::vector<float> batch_logits(KimiLinearModel& m, cpu::ThreadPool& pool,
                                const std::vector<int32_t>& ids) {
  auto state = m.new_state(1, static_cast<int64_t>(ids.size())).value();
  std::vector<float> logits;
  EXPECT_TRUE(m.forward(pool, *state, Batch::of({{0, ids, true}}), logits).ok());
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
  const std::vector<int32_t> ids = random_ids(40, vocab, 3);
  const std::vector<float> a = batch_logits(**hf, pool, ids);
  const std::vector<float> b = batch_logits(**gguf, pool, ids);
  const testing::Comparison c = testing::compare_logits(a, b, vocab, fc.tol, 1e-2);
  std::printf("[parity] hf vs gguf (%s): max |dlogit| = %.3g\n",
              std::string(dtype_name(fc.dtype)).c_str(), c.max_abs);
  EXPECT_LE(c.max_abs, fc.tol) << testing::describe(c, a, b, vocab);
  EXPECT_EQ(c.argmax_mismatches, 0);
}

// Both layouts hold the same numbers (the HF twin of a q8_0 or q4_k_m GGUF holds the reference-
// dequantised values of the same blocks in f32), and the quantised kernels accumulate the
// dequantised weights in fp32 like the f32 ones, so only summation order may differ. kQ4_K is
// make-model's Q4_K_M mix (q4_k, q6_k and q8_0 tensors in one file).
INSTANTIATE_TEST_SUITE_P(Dtypes, CrossFormatTest,
                         ::testing::Values(FormatCase{DType::kF32, 1e-5},
                                           FormatCase{DType::kBF16, 1e-4},
                                           FormatCase{DType::kQ8_0, 1e-4},
                                           FormatCase{DType::kQ4_K, 1e-4}),
                         [](const ::testing::TestParamInfo<FormatCase>& p) {
                           return std::string(dtype_name(p.param.dtype));
                         });

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
  const std::vector<int32_t> ids = random_ids(n, vocab, 11);
  const std::vector<float> want = batch_logits(*model_, pool_, ids);
  for (int64_t s = 1; s <= n; s += (s < 20 ? 1 : 7)) {
    auto state = model_->new_state(1, n).value();
    std::vector<float> got, logits;
    std::vector<int32_t> head(ids.begin(), ids.begin() + s);
    ASSERT_TRUE(model_->forward(pool_, *state, Batch::of({{0, head, true}}), got).ok());
    for (int64_t t = s; t < n; ++t) {
      ASSERT_TRUE(model_->forward(pool_, *state, Batch::of({{0, {ids[t]}, false}}), logits).ok());
      got.insert(got.end(), logits.begin(), logits.end());
    }
    const testing::Comparison c = testing::compare_logits(got, want, vocab, 1e-4, 1e-3);
    EXPECT_LE(c.max_abs, 1e-4) << "split at " << s << ": "
                               << testing::describe(c, got, want, vocab);
  }
}

// Prefill in two chunks of arbitrary sizes (chunked → chunked hand-off).
TEST_F(SplitTest, TwoChunkPrefillEqualsOnePrefill) {
  const int64_t vocab = model_->config().vocab_size, n = 70;
  const std::vector<int32_t> ids = random_ids(n, vocab, 12);
  const std::vector<float> want = batch_logits(*model_, pool_, ids);
  for (int64_t s : {2, 15, 16, 17, 33, 64, 69}) {
    auto state = model_->new_state(1, n).value();
    std::vector<float> a, b;
    const std::vector<int32_t> head(ids.begin(), ids.begin() + s), tail(ids.begin() + s, ids.end());
    ASSERT_TRUE(model_->forward(pool_, *state, Batch::of({{0, head, true}}), a).ok());
    ASSERT_TRUE(model_->forward(pool_, *state, Batch::of({{0, tail, true}}), b).ok());
    a.insert(a.end(), b.begin(), b.end());
    const testing::Comparison c = testing::compare_logits(a, want, vocab, 1e-4, 1e-3);
    EXPECT_LE(c.max_abs, 1e-4) << "split at " << s << ": " << testing::describe(c, a, want, vocab);
  }
}

// Sequences of different lengths in one forward (each in its own slot, one of them already
// mid-sequence) give the same logits as each run alone.
TEST_F(SplitTest, BatchOfSequencesEqualsEachAlone) {
  const int64_t vocab = model_->config().vocab_size;
  const std::vector<int32_t> a = random_ids(23, vocab, 1), b = random_ids(1, vocab, 2);
  const std::vector<int32_t> c_prefix = random_ids(9, vocab, 3), c_rest = random_ids(5, vocab, 4);
  auto state = model_->new_state(3, 64).value();
  std::vector<float> logits;
  ASSERT_TRUE(model_->forward(pool_, *state, Batch::of({{2, c_prefix, false}}), logits).ok());
  std::vector<float> batched;
  const Batch batch = Batch::of({{0, a, true}, {1, b, true}, {2, c_rest, true}});
  ASSERT_TRUE(model_->forward(pool_, *state, batch, batched).ok());

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
  auto state = StateCache::with_fixed_pages(model_->shard_config(), 1, 4, {}, 4);
  std::vector<float> logits;
  Status s = model_->forward(pool_, *state, Batch::of({{0, {1, 2, 3, 4, 5}, false}}), logits);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("context"), std::string::npos) << s.message();
  const int32_t bad = static_cast<int32_t>(model_->config().vocab_size);
  s = model_->forward(pool_, *state, Batch::of({{0, {bad}, false}}), logits);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("token id"), std::string::npos) << s.message();
}

// A paged slot holds what its pages hold: a sequence that does not fit is refused before any
// work (no slot of the batch advances), naming the slot, the tokens needed and those available.
TEST_F(SplitTest, PagedSlotMustHavePagesForItsTokens) {
  auto state = model_->new_paged_state(2, 4, 4).value();
  std::vector<float> logits;
  Status s = model_->forward(pool_, *state, Batch::of({{0, {1, 2}, false}}), logits);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "sequence in slot 0 needs 2 tokens of context, its pages hold 0");
  state->append_pages(0, {3});
  state->append_pages(1, {1, 0});
  ASSERT_TRUE(model_->forward(pool_, *state, Batch::of({{0, {1, 2, 3}, false}}), logits).ok());
  s = model_->forward(pool_, *state, Batch::of({{1, {4, 5}, false}, {0, {4, 5}, false}}), logits);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "sequence in slot 0 needs 5 tokens of context, its pages hold 4");
  EXPECT_EQ(state->length(0), 3);
  EXPECT_EQ(state->length(1), 0);
  state->append_pages(0, {2});
  ASSERT_TRUE(
      model_->forward(pool_, *state, Batch::of({{1, {4, 5}, false}, {0, {4, 5}, false}}), logits).ok());
  EXPECT_EQ(state->length(0), 5);
  EXPECT_EQ(state->length(1), 2);
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
  model_->set_activation_hook(
      [&](int64_t layer, const char* name, const float*, int64_t rows, int64_t cols) {
        seen[{layer, name}] = {rows, cols};
      });
  auto state = model_->new_state(1, 8).value();
  std::vector<float> logits;
  ASSERT_TRUE(model_->forward(pool_, *state, Batch::of({{0, {1, 2, 3, 4, 5}, false}}), logits).ok());
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

namespace kiln {
namespace {

// One forward's rows for the sequence in `slot` (rows of the batch come per sequence in order:
// all its tokens or one).
std::vector<float> rows_of(const Batch& seqs, const std::vector<float>& logits, int64_t slot,
                           int64_t vocab) {
  int64_t row = 0;
  for (const BatchSpan& s : seqs.spans) {
    const int64_t n = s.all_logits ? s.n : 1;
    if (s.slot == slot) {
      return {logits.begin() + row * vocab, logits.begin() + (row + n) * vocab};
    }
    row += n;
  }
  ADD_FAILURE() << "slot " << slot << " not in the batch";
  return {};
}

struct InvarianceCase {
  const char* preset;
  DType dtype;
};

void PrintTo(const InvarianceCase& c, std::ostream* os) {
  *os << c.preset << " " << dtype_name(c.dtype);
}

class BatchInvarianceTest : public ::testing::TestWithParam<InvarianceCase> {};

// Sequence A alone on one thread (a 21-token prefill, then 5 single-token decodes) and A among
// sequences B and C on three threads (prefilling and decoding around it, A in another slot, its
// pages scattered and out of order, batches of 1 to 30 rows): A's logits are the same bits. Each
// output row's arithmetic must not depend on the other rows (GEMM tiles, expert grouping,
// element-wise tails) nor on how the work is split between threads.
TEST_P(BatchInvarianceTest, SequenceLogitsDoNotDependOnTheBatch) {
  const InvarianceCase ic = GetParam();
  auto m = KimiLinearModel::load(model_dir(ic.preset, ic.dtype) + "/model.gguf");
  ASSERT_TRUE(m.ok()) << m.status().to_string();
  KimiLinearModel& model = **m;
  cpu::ThreadPool one(1), pool(3);
  const int64_t vocab = model.config().vocab_size;
  const std::vector<int32_t> a = random_ids(21, vocab, 21), a_next = random_ids(5, vocab, 22);
  const std::vector<int32_t> b = random_ids(9, vocab, 23), b_more = random_ids(6, vocab, 24);
  const std::vector<int32_t> c = random_ids(14, vocab, 25), d = random_ids(3, vocab, 26);
  const int32_t B = 0, C = 1, A = 2;  // slots in the batched run

  std::vector<float> alone, logits;
  {
    auto state = model.new_paged_state(3, 40, 4).value();
    state->append_pages(0, {0, 1, 2, 3, 4, 5, 6});
    ASSERT_TRUE(model.forward(one, *state, Batch::of({{0, a, true}}), alone).ok());
    for (int32_t t : a_next) {
      ASSERT_TRUE(model.forward(one, *state, Batch::of({{0, {t}, false}}), logits).ok());
      alone.insert(alone.end(), logits.begin(), logits.end());
    }
  }
  auto state = model.new_paged_state(3, 40, 4).value();
  state->append_pages(A, {31, 2, 17, 9, 38, 5, 22});
  state->append_pages(B, {1, 0, 33, 12, 28});
  state->append_pages(C, {7, 3, 26, 14, 19});
  const std::vector<Batch> steps = {
      Batch::of({{B, b, false}, {A, a, true}}),
      Batch::of({{A, {a_next[0]}, false}, {C, c, true}}),
      Batch::of({{C, {d[0]}, false}, {B, {d[1]}, false}, {A, {a_next[1]}, false}}),
      Batch::of({{B, b_more, true}, {A, {a_next[2]}, false}, {C, {d[2]}, false}}),
      Batch::of({{A, {a_next[3]}, false}}),
      Batch::of({{C, {d[1]}, false}, {A, {a_next[4]}, false}, {B, {d[0]}, false}}),
  };
  std::vector<float> batched;
  for (const auto& step : steps) {
    ASSERT_TRUE(model.forward(pool, *state, step, logits).ok());
    const std::vector<float> rows = rows_of(step, logits, A, vocab);
    batched.insert(batched.end(), rows.begin(), rows.end());
  }
  ASSERT_EQ(batched.size(), alone.size());
  const testing::Comparison cmp = testing::compare_logits(batched, alone, vocab, 0.0, 1e-3);
  std::printf("[parity] batch invariance %s %s: max |dlogit| = %.3g\n", ic.preset,
              std::string(dtype_name(ic.dtype)).c_str(), cmp.max_abs);
  EXPECT_EQ(std::memcmp(batched.data(), alone.data(), alone.size() * sizeof(float)), 0)
      << testing::describe(cmp, batched, alone, vocab);
  // Equal bits would also hold for NaN rows on both sides; no other check sees these logits.
  EXPECT_EQ(cmp.non_finite, 0) << testing::describe(cmp, batched, alone, vocab);
}

INSTANTIATE_TEST_SUITE_P(
    Models, BatchInvarianceTest,
    ::testing::Values(InvarianceCase{"micro", DType::kF32}, InvarianceCase{"micro", DType::kBF16},
                      InvarianceCase{"micro", DType::kF16}, InvarianceCase{"tiny", DType::kF32},
                      InvarianceCase{"tiny", DType::kBF16}, InvarianceCase{"tiny", DType::kQ8_0},
                      InvarianceCase{"tiny", DType::kQ4_K}),
    [](const ::testing::TestParamInfo<InvarianceCase>& p) {
      return std::string(p.param.preset) + "_" + std::string(dtype_name(p.param.dtype));
    });

}  // namespace
}  // namespace kiln

namespace kiln {
namespace {

// Decode steps over quantised weights take the integer path (activations quantised to int8);
// ThreadPool::set_exact_activations(true) keeps f32 activations. After the same 12-token prompt,
// one decode step each way: the first layer's projections (the normalised embedding times
// q/k/v, through conv and norms) must differ (the switch works) by no more than int8 rounding
// explains: per-256 blocks of values with amax/rms ≈ 3 give NMSE ≈ (3/127)²/12 ≈ 5e-5 (per-32
// blocks less); the bound is 1e-3. Later layers are not bounded: in these random models a tiny
// change can flip a near-tied expert choice and move the logits far (tiny q4_k_m: NMSE ≈ 0.2).
TEST(Int8Decode, DecodeStepsQuantizeActivationsUnlessExact) {
  for (DType dt : {DType::kQ8_0, DType::kQ4_K}) {
    auto m = KimiLinearModel::load(tiny_model_dir(dt) + "/model.gguf");
    ASSERT_TRUE(m.ok()) << m.status().to_string();
    const int64_t vocab = (*m)->config().vocab_size;
    const std::vector<int32_t> prompt = random_ids(12, vocab, 31);
    std::map<std::string, std::vector<float>> first_layer[2];
    std::vector<float> logits[2];
    for (bool exact : {false, true}) {
      cpu::ThreadPool pool(2);
      pool.set_exact_activations(exact);
      auto state = (*m)->new_state(1, 16).value();
      ASSERT_TRUE((*m)->forward(pool, *state, Batch::of({{0, prompt, false}}), logits[exact]).ok());
      (*m)->set_activation_hook(
          [&](int64_t layer, const char* name, const float* d, int64_t rows, int64_t cols) {
            if (layer == 0) first_layer[exact][name].assign(d, d + rows * cols);
          });
      ASSERT_TRUE((*m)->forward(pool, *state, Batch::of({{0, {prompt[0]}, false}}), logits[exact]).ok());
      (*m)->set_activation_hook(nullptr);
    }
    for (const char* name : {"kda.q", "kda.k", "kda.v"}) {
      const std::vector<float>& a = first_layer[0][name];
      const std::vector<float>& want = first_layer[1][name];
      ASSERT_EQ(a.size(), want.size()) << name;
      ASSERT_FALSE(a.empty()) << name;
      double err = 0.0, ref = 0.0;
      for (size_t i = 0; i < a.size(); ++i) {
        err += (double(a[i]) - want[i]) * (double(a[i]) - want[i]);
        ref += double(want[i]) * want[i];
      }
      std::printf("[parity] int8 vs f32 activations, tiny %s decode, layer 0 %s: nmse = %.3g\n",
                  std::string(dtype_name(dt)).c_str(), name, err / ref);
      EXPECT_GT(err, 0.0) << dtype_name(dt) << " " << name << ": activations were not quantised";
      EXPECT_LE(err / ref, 1e-3) << dtype_name(dt) << " " << name;
    }
    EXPECT_NE(logits[0], logits[1]) << dtype_name(dt);
  }
}

}  // namespace
}  // namespace kiln
