// Parity with a second, independent reference: HF transformers' KimiLinearForCausalLM in fp32
// (tools/reference/hf_logits.py) on checkpoints written by make-model. kiln loads the same HF
// directory, regenerated here from the recorded preset, dtype and seed.
#include <algorithm>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "cluster/make_model.h"
#include "shard/model.h"
#include "parity_util.h"

namespace kiln {
namespace {

struct RefCase {
  const char* name;    // data file stem under reference/
  const char* preset;
  DType dtype;
  uint64_t seed;
  const char* ids;     // ids file under reference/
};

class ReferenceTest : public ::testing::TestWithParam<RefCase> {};

TEST_P(ReferenceTest, MatchesHfTransformers) {
  const RefCase rc = GetParam();
  const auto dir = testing::temp_dir(std::string("ref-") + rc.name);
  auto cfg = preset_config(rc.preset);
  ASSERT_TRUE(cfg.ok());
  MakeModelOptions o;
  o.seed = rc.seed;
  o.dtype = rc.dtype;
  o.out_dir = dir.string();
  o.write_gguf = false;
  ASSERT_TRUE(make_model(*cfg, o).ok());
  auto model = KimiLinearModel::load((dir / "hf").string());
  ASSERT_TRUE(model.ok()) << model.status().to_string();

  std::ifstream f(testing::data_path(std::string("reference/") + rc.ids));
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<int32_t> ids;
  std::replace(text.begin(), text.end(), ',', ' ');
  std::istringstream in(text);
  for (int32_t v; in >> v;) ids.push_back(v);
  const int64_t vocab = (*model)->config().vocab_size;
  const std::vector<float> want =
      testing::read_f32(testing::data_path(std::string("reference/") + rc.name + ".bin"));
  ASSERT_EQ(want.size(), ids.size() * vocab);

  cpu::ThreadPool pool(2);
  auto state = (*model)->new_state(1, static_cast<int64_t>(ids.size())).value();
  std::vector<float> got;
  ASSERT_TRUE((*model)->forward(pool, *state, {{0, ids, true}}, got).ok());
  const testing::Comparison c = testing::compare_logits(got, want, vocab, 1e-4, 1e-3);
  std::printf("[parity] %s vs HF transformers: max |dlogit| = %.3g over %zu tokens\n", rc.name,
              c.max_abs, ids.size());
  EXPECT_LE(c.max_abs, 1e-4) << testing::describe(c, got, want, vocab);
  EXPECT_EQ(c.argmax_mismatches, 0) << testing::describe(c, got, want, vocab);
}

INSTANTIATE_TEST_SUITE_P(
    Models, ReferenceTest,
    ::testing::Values(RefCase{"tiny_bf16_ref", "tiny", DType::kBF16, 5, "tiny_ids.txt"},
                      RefCase{"micro_f32_ref", "micro", DType::kF32, 9, "micro_ids.txt"}),
    [](const ::testing::TestParamInfo<RefCase>& p) { return std::string(p.param.name); });

}  // namespace
}  // namespace kiln
