// The whole model on the GPU against the CPU path and llama.cpp's golden logits: prefill (the
// cuBLAS path, more than 16 rows) and decode (the GEMV path), prefill-then-decode against one
// prefill, batches against sequences run alone, paged caches with scattered pages, and greedy
// continuations.
//
// Tolerances. Every path keeps the activations in fp32 (the cuBLAS path splits them into two
// 16-bit halves for f16/bf16 weights and dequantises quantised weights to f32), and quantised
// weights decode exactly, so only the summation order differs from the CPU: logits agree to 1e-4
// for every dtype (the CPU path itself agrees with llama.cpp to 2e-4).
#include <cmath>
#include <filesystem>
#include <memory>

#include <gtest/gtest.h>

#include "cluster/make_model.h"
#include "kernels/cpu/sampling.h"
#include "shard/model.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/parity/parity_util.h"

namespace kiln {
namespace {

using testing::compare_logits;
using testing::data_path;
using testing::random_ids;

// A make-model GGUF of `preset` in `dtype`, written once per process.
std::string made_model(const std::string& preset, DType dtype) {
  const auto dir = testing::temp_dir("cuda-" + preset + "-" + std::string(dtype_name(dtype)));
  if (!std::filesystem::exists(dir / "model.gguf")) {
    auto cfg = preset_config(preset);
    EXPECT_TRUE(cfg.ok());
    MakeModelOptions o;
    o.seed = 7;
    o.dtype = dtype;
    o.out_dir = dir.string();
    o.write_hf = false;
    auto s = make_model(*cfg, o);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
  }
  return (dir / "model.gguf").string();
}

std::unique_ptr<KimiLinearModel> load(const std::string& path, Device device) {
  ParallelContext p;
  p.device = device;
  p.gpu = device == Device::kCuda ? test::gpu_context() : nullptr;
  auto m = KimiLinearModel::load(path, p);
  EXPECT_TRUE(m.ok()) << m.status().to_string();
  return m.ok() ? std::move(m).value() : nullptr;
}

// Logits for every token of ids in one forward (batch) or one token per forward (seq).
std::vector<float> run(KimiLinearModel& m, const std::vector<int32_t>& ids, bool batch) {
  cpu::ThreadPool pool(2);
  pool.set_exact_activations(true);  // the GPU keeps f32 activations
  auto state = m.new_state(1, static_cast<int64_t>(ids.size()) + 8);
  EXPECT_TRUE(state.ok()) << state.status().to_string();
  std::vector<float> all, logits;
  if (batch) {
    EXPECT_TRUE(m.forward(pool, **state, Batch::of({{0, ids, true}}), all).ok());
    return all;
  }
  for (int32_t id : ids) {
    EXPECT_TRUE(m.forward(pool, **state, Batch::of({{0, {id}, false}}), logits).ok());
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

double nmse(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return den > 0 ? num / den : num;
}

TEST(GpuModel, MicroMatchesLlamaCppGolden) {
  KILN_REQUIRE_GPU();
  auto gpu = load(data_path("golden/kimi-micro-f32.gguf"), Device::kCuda);
  ASSERT_NE(gpu, nullptr);
  const int64_t vocab = gpu->config().vocab_size;
  for (const char* stem : {"micro_f32_ids1-32_batch", "micro_f32_ids1-32_seq",
                           "micro_f32_rand100_batch", "micro_f32_rand100_seq",
                           "micro_f32_prompt_fox_batch"}) {
    const std::string bin = data_path(std::string("golden/") + stem + ".bin");
    const std::vector<int32_t> ids = testing::read_ids_line(bin + ".txt", "tokens");
    const std::vector<float> want = testing::read_f32(bin);
    const bool batch = std::string(stem).find("_batch") != std::string::npos;
    const std::vector<float> got = run(*gpu, ids, batch);
    const testing::Comparison c = compare_logits(got, want, vocab, 2e-4, 1e-3);
    std::printf("[gpu parity] %s: max |dlogit| = %.3g over %zu tokens\n", stem, c.max_abs,
                ids.size());
    EXPECT_LE(c.max_abs, 2e-4) << stem << ": " << testing::describe(c, got, want, vocab);
    EXPECT_EQ(c.argmax_mismatches, 0) << stem;
  }
}

struct DtypeCase {
  const char* preset;
  DType dtype;
};

void PrintTo(const DtypeCase& c, std::ostream* os) {
  *os << c.preset << " " << dtype_name(c.dtype);
}

class GpuVsCpu : public ::testing::TestWithParam<DtypeCase> {};

TEST_P(GpuVsCpu, PrefillAndDecodeLogits) {
  KILN_REQUIRE_GPU();
  const DtypeCase p = GetParam();
  const std::string path = made_model(p.preset, p.dtype);
  auto cpu_model = load(path, Device::kCpu);
  auto gpu_model = load(path, Device::kCuda);
  ASSERT_NE(cpu_model, nullptr);
  ASSERT_NE(gpu_model, nullptr);
  const int64_t vocab = cpu_model->config().vocab_size;
  const std::vector<int32_t> ids = random_ids(40, vocab, 11);
  // Prefill: 40 rows, the cuBLAS path.
  const std::vector<float> want = run(*cpu_model, ids, true);
  const std::vector<float> got = run(*gpu_model, ids, true);
  const testing::Comparison c = compare_logits(got, want, vocab, 1e-4, 0.05);
  std::printf("[gpu vs cpu] %s %s prefill: max |dlogit| %.3g, nmse %.3g\n", p.preset,
              std::string(dtype_name(p.dtype)).c_str(), c.max_abs, nmse(got, want));
  EXPECT_LE(c.max_abs, 1e-4) << testing::describe(c, got, want, vocab);
  EXPECT_LE(nmse(got, want), 1e-9);
  EXPECT_EQ(c.argmax_mismatches, 0);
  // Decode: one row per forward, the GEMV path (f32 activations for every dtype).
  const std::vector<int32_t> few(ids.begin(), ids.begin() + 12);
  const std::vector<float> want_seq = run(*cpu_model, few, false);
  const std::vector<float> got_seq = run(*gpu_model, few, false);
  const testing::Comparison d = compare_logits(got_seq, want_seq, vocab, 1e-4, 0.05);
  std::printf("[gpu vs cpu] %s %s decode: max |dlogit| %.3g\n", p.preset,
              std::string(dtype_name(p.dtype)).c_str(), d.max_abs);
  EXPECT_LE(d.max_abs, 1e-4) << testing::describe(d, got_seq, want_seq, vocab);
  EXPECT_EQ(d.argmax_mismatches, 0);
}

INSTANTIATE_TEST_SUITE_P(Presets, GpuVsCpu,
                         ::testing::Values(DtypeCase{"micro", DType::kF32},
                                           DtypeCase{"tiny", DType::kF32},
                                           DtypeCase{"tiny", DType::kBF16},
                                           DtypeCase{"tiny", DType::kF16},
                                           DtypeCase{"tiny", DType::kQ8_0},
                                           DtypeCase{"tiny", DType::kQ4_K}),
                         [](const ::testing::TestParamInfo<DtypeCase>& param_info) {
                           return std::string(param_info.param.preset) + "_" +
                                  std::string(dtype_name(param_info.param.dtype));
                         });

// Prefill of the first s tokens then one token per forward equals one prefill of all of them.
TEST(GpuModel, PrefillThenDecodeEqualsOnePrefill) {
  KILN_REQUIRE_GPU();
  auto m = load(made_model("tiny", DType::kF32), Device::kCuda);
  ASSERT_NE(m, nullptr);
  const int64_t vocab = m->config().vocab_size;
  const std::vector<int32_t> ids = random_ids(37, vocab, 3);
  const std::vector<float> all = run(*m, ids, true);
  cpu::ThreadPool pool(1);
  pool.set_exact_activations(true);  // the GPU keeps f32 activations
  for (int64_t split : {1, 16, 17, 36}) {
    auto state = m->new_state(1, 40);
    ASSERT_TRUE(state.ok());
    std::vector<float> logits;
    const std::vector<int32_t> head(ids.begin(), ids.begin() + split);
    ASSERT_TRUE(m->forward(pool, **state, Batch::of({{0, head, false}}), logits).ok());
    for (int64_t t = split; t < static_cast<int64_t>(ids.size()); ++t) {
      ASSERT_TRUE(m->forward(pool, **state, Batch::of({{0, {ids[t]}, false}}), logits).ok());
    }
    const std::vector<float> want(all.end() - vocab, all.end());
    const testing::Comparison c = compare_logits(logits, want, vocab, 1e-4, 1e-3);
    EXPECT_LE(c.max_abs, 1e-4) << "split " << split;
  }
}

// Three sequences of different lengths in one forward (one decode span, two prefill spans, in
// scattered pages of a paged cache) give what each gives alone in a fixed cache.
TEST(GpuModel, BatchedSequencesInScatteredPagesMatchAlone) {
  KILN_REQUIRE_GPU();
  auto m = load(made_model("tiny", DType::kF32), Device::kCuda);
  ASSERT_NE(m, nullptr);
  const int64_t vocab = m->config().vocab_size;
  const std::vector<std::vector<int32_t>> prompts = {
      random_ids(9, vocab, 21), random_ids(1, vocab, 22), random_ids(30, vocab, 23)};
  cpu::ThreadPool pool(1);
  pool.set_exact_activations(true);  // the GPU keeps f32 activations
  auto paged = m->new_paged_state(3, 40, 4);
  ASSERT_TRUE(paged.ok());
  // Slot s takes pages s, s+3, s+6, ...: every sequence's pages interleave with the others'.
  for (int64_t s = 0; s < 3; ++s) {
    std::vector<int32_t> pages;
    for (int32_t p = static_cast<int32_t>(s); p < 40; p += 3) pages.push_back(p);
    (*paged)->append_pages(s, pages);
  }
  Batch seqs;
  for (int64_t s = 0; s < 3; ++s) seqs.add(static_cast<int32_t>(s), prompts[s], true);
  std::vector<float> batched;
  ASSERT_TRUE(m->forward(pool, **paged, seqs, batched).ok());
  size_t off = 0;
  for (int64_t s = 0; s < 3; ++s) {
    const std::vector<float> alone = run(*m, prompts[s], true);
    const std::vector<float> part(batched.begin() + static_cast<int64_t>(off),
                                  batched.begin() + static_cast<int64_t>(off + alone.size()));
    off += alone.size();
    const testing::Comparison c = compare_logits(part, alone, vocab, 1e-4, 1e-3);
    EXPECT_LE(c.max_abs, 1e-4) << "sequence " << s;
  }
  EXPECT_EQ(off, batched.size());
}

// 24 greedy tokens after a prompt: the same on both devices (f32 micro).
TEST(GpuModel, GreedyContinuationMatchesCpu) {
  KILN_REQUIRE_GPU();
  const std::string path = data_path("golden/kimi-micro-f32.gguf");
  auto cpu_model = load(path, Device::kCpu);
  auto gpu_model = load(path, Device::kCuda);
  ASSERT_NE(gpu_model, nullptr);
  const int64_t vocab = cpu_model->config().vocab_size;
  auto greedy = [&](KimiLinearModel& m) {
    cpu::ThreadPool pool(2);
    pool.set_exact_activations(true);  // the GPU keeps f32 activations
    auto state = m.new_state(1, 64);
    EXPECT_TRUE(state.ok());
    std::vector<float> logits;
    std::vector<int32_t> out;
    EXPECT_TRUE(m.forward(pool, **state, Batch::of({{0, random_ids(20, vocab, 5), false}}), logits).ok());
    for (int i = 0; i < 24; ++i) {
      // An argmax skips a NaN: a non-finite row must fail here, not pick a token.
      EXPECT_TRUE(testing::all_finite(logits.data(), vocab)) << "greedy step " << i;
      out.push_back(cpu::argmax(logits.data(), vocab));
      EXPECT_TRUE(m.forward(pool, **state, Batch::of({{0, {out.back()}, false}}), logits).ok());
    }
    return out;
  };
  EXPECT_EQ(greedy(*gpu_model), greedy(*cpu_model));
}

// A CPU-side cache handed to a GPU model is an error naming both devices, not a crash.
TEST(GpuModel, StateOnTheWrongDeviceIsAnError) {
  KILN_REQUIRE_GPU();
  auto m = load(data_path("golden/kimi-micro-f32.gguf"), Device::kCuda);
  ASSERT_NE(m, nullptr);
  auto host_state = StateCache::with_fixed_pages(m->shard_config(), 1, 16);
  cpu::ThreadPool pool(1);
  pool.set_exact_activations(true);  // the GPU keeps f32 activations
  std::vector<float> logits;
  const Status s = m->forward(pool, *host_state, Batch::of({{0, {1, 2, 3}, false}}), logits);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("cuda"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace kiln
