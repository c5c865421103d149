// The tensor table against generated checkpoints: the files hold exactly the table's tensors,
// and the partition's byte estimate of every rank equals the bytes of the ModelWeights the
// loader builds for that rank (HF f32, GGUF q8_0, GGUF bf16; tensor and pipeline parallel).
#include "shard/tensor_table.h"

#include <unistd.h>

#include <filesystem>
#include <set>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "tools/make_model/make_model.h"
#include "shard/gguf.h"
#include "shard/safetensors.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path>& made_dirs() {
  static std::vector<fs::path> dirs;
  return dirs;
}

// make-model's `preset` in `dtype`, once per process.
fs::path generated(const std::string& preset, DType dtype, bool write_hf) {
  const fs::path d = fs::temp_directory_path() /
                     fmt::format("kiln-table-{}-{}-{}", preset, dtype_name(dtype), ::getpid());
  if (fs::exists(d / "model.gguf")) return d;
  made_dirs().push_back(d);
  auto cfg = preset_config(preset);
  EXPECT_TRUE(cfg.ok());
  MakeModelOptions o;
  o.dtype = dtype;
  o.out_dir = d.string();
  o.write_hf = write_hf;
  auto made = make_model(*cfg, o);
  EXPECT_TRUE(made.ok()) << made.status().to_string();
  return d;
}

class TensorTableTest : public ::testing::Test {
 protected:
  static void TearDownTestSuite() {
    std::error_code ec;
    for (const fs::path& d : made_dirs()) fs::remove_all(d, ec);
  }
};

// The names the table gives the tensors of a whole model in one format.
std::set<std::string> table_names(const ModelConfig& c, bool hf) {
  std::set<std::string> out;
  for_each_tensor(c, Range{0, c.num_layers}, [&](const TensorSpec& s, int64_t layer) {
    if (hf && s.hf == nullptr) return;
    if (!hf && (s.gguf == nullptr || s.special == Special::kKvB)) return;  // legacy combined kv_b
    const int64_t experts = hf && s.stack == Stack::kExperts ? c.num_experts : 1;
    for (int64_t e = 0; e < experts; ++e) out.insert(s.name(hf, layer, e));
  });
  return out;
}

TEST_F(TensorTableTest, GeneratedFilesHoldExactlyTheTablesTensors) {
  const fs::path d = generated("micro", DType::kF32, true);
  auto cfg = preset_config("micro");
  ASSERT_TRUE(cfg.ok());
  auto st = SafetensorsFile::open((d / "hf" / "model.safetensors").string());
  ASSERT_TRUE(st.ok()) << st.status().to_string();
  std::set<std::string> hf;
  for (const SafetensorsTensor& t : st->tensors()) hf.insert(t.name);
  EXPECT_EQ(hf, table_names(*cfg, true));
  auto gg = GgufFile::open((d / "model.gguf").string());
  ASSERT_TRUE(gg.ok()) << gg.status().to_string();
  std::set<std::string> gguf;
  for (const GgufTensor& t : gg->tensors()) gguf.insert(t.name);
  EXPECT_EQ(gguf, table_names(*cfg, false));
}

// Bytes of every view of a loaded rank's weights: its resident share.
uint64_t loaded_bytes(const ModelWeights& w, const ModelConfig& c) {
  uint64_t b = 0;
  for_each_weight(
      w, c, [&](const TensorSpec&, int64_t, int64_t, const MatrixView& m) { b += view_bytes(m); },
      [&](const TensorSpec&, int64_t, const FloatView& f) {
        b += 4 * static_cast<uint64_t>(f.size());
      });
  return b;
}

void expect_estimate_is_loaded(const std::string& path, DType dtype, int tp, int pp) {
  SCOPED_TRACE(fmt::format("{} tp {} pp {}", path, tp, pp));
  auto ck = Checkpoint::open(path);
  ASSERT_TRUE(ck.ok()) << ck.status().to_string();
  const ModelConfig& c = (*ck)->config();
  auto plans = plan_all(c, ParallelSpec{tp, pp, {}}, dtype, {});
  ASSERT_TRUE(plans.ok()) << plans.status().to_string();
  for (const RankPlan& p : *plans) {
    auto w = load_weights(**ck, p);
    ASSERT_TRUE(w.ok()) << w.status().to_string();
    EXPECT_EQ(loaded_bytes(*w, c), estimate_rank_memory(c, p, dtype).weight_bytes)
        << "rank " << p.rank;
  }
}

TEST_F(TensorTableTest, PartitionEstimateIsTheLoadedWeights) {
  const fs::path f32 = generated("micro", DType::kF32, true);
  const fs::path q8 = generated("micro", DType::kQ8_0, false);
  const fs::path bf16 = generated("tiny", DType::kBF16, false);
  for (auto [tp, pp] : {std::pair{1, 1}, {2, 1}, {2, 2}}) {
    expect_estimate_is_loaded((f32 / "hf").string(), DType::kF32, tp, pp);
    expect_estimate_is_loaded((f32 / "model.gguf").string(), DType::kF32, tp, pp);
    expect_estimate_is_loaded((q8 / "model.gguf").string(), DType::kQ8_0, tp, pp);
    expect_estimate_is_loaded((bf16 / "model.gguf").string(), DType::kBF16, tp, pp);
  }
}

TEST_F(TensorTableTest, ActiveBytesCountOneTokensExperts) {
  auto ck = Checkpoint::open((generated("micro", DType::kF32, true) / "model.gguf").string());
  ASSERT_TRUE(ck.ok()) << ck.status().to_string();
  const ModelConfig& c = (*ck)->config();
  auto w = load_weights(**ck);
  ASSERT_TRUE(w.ok()) << w.status().to_string();
  // All weights but the embedding, the vectors and all but experts_per_token experts per layer.
  uint64_t want = 0;
  for_each_weight(*w, c, [&](const TensorSpec& s, int64_t, int64_t index, const MatrixView& m) {
    if (s.block == Block::kEmbedding) return;
    if (s.block != Block::kExperts || index < c.experts_per_token) want += view_bytes(m);
  });
  EXPECT_EQ(w->active_bytes_per_token(c), want);
  EXPECT_GT(want, 0u);
}

}  // namespace
}  // namespace kiln
