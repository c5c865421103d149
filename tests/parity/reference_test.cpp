// Parity with a second, independent reference: HF transformers' KimiLinearForCausalLM in fp32
// (tools/reference/hf_logits.py) on checkpoints written by make-model. kiln loads the same HF
// directory, regenerated here from the recorded preset, dtype and seed, after checking it is
// byte for byte the checkpoint the reference logits were computed from.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "checksums.h"
#include "cluster/make_model.h"
#include "shard/model.h"
#include "parity_util.h"

namespace kiln {
namespace {

namespace json = boost::json;

json::value read_json(const std::string& path) {
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  EXPECT_FALSE(ec) << path << ": " << ec.message();
  return v;
}

// The checkpoint in `hf` is the one reference/<name>.bin was computed from: every file whose
// sha256 <name>.bin.json records hashes to it. config.json is hashed with the fields listed for
// <name> in reference/config_changes.json put back to their recorded values (make-model has
// since numbered its special tokens differently; the reference forward reads none of them), and
// each of those fields must hold its listed current value, so any other change still fails.
void expect_recorded_checkpoint(const std::filesystem::path& hf, const std::string& name) {
  const std::string record_path = testing::data_path("reference/" + name + ".bin.json");
  const json::value record = read_json(record_path);
  const json::value* sums = record.is_object() ? record.as_object().if_contains("sha256") : nullptr;
  ASSERT_TRUE(sums != nullptr && sums->is_object()) << record_path << " records no sha256";
  const json::object& recorded = sums->as_object();
  json::value config = read_json((hf / "config.json").string());
  const json::value changes = read_json(testing::data_path("reference/config_changes.json"));
  ASSERT_TRUE(config.is_object() && changes.is_object());
  if (const json::value* fields = changes.as_object().if_contains(name)) {
    for (const auto& [key, values] : fields->as_object()) {
      const json::value* now = config.as_object().if_contains(key);
      EXPECT_TRUE(now != nullptr && *now == values.at("now"))
          << hf.string() << "/config.json: " << key << " is "
          << (now ? json::serialize(*now) : "missing") << ", config_changes.json says "
          << json::serialize(values.at("now"));
      config.as_object()[key] = values.at("recorded");
    }
  }
  const std::filesystem::path restored = hf.parent_path() / "config.as-recorded.json";
  std::ofstream(restored) << json::serialize(config);
  std::vector<std::string> paths;
  for (const auto& [file, sha] : recorded) {
    paths.push_back((file == "config.json" ? restored : hf / std::string(file)).string());
  }
  const auto actual = testing::sha256_files(paths);
  size_t i = 0;
  for (const auto& [file, sha] : recorded) {
    const auto it = actual.find(paths[i++]);
    EXPECT_TRUE(it != actual.end() && it->second == sha.as_string())
        << "make-model no longer writes the checkpoint of " << name << ": " << hf.string() << "/"
        << std::string(file) << " has sha256 "
        << (it == actual.end() ? std::string("(missing)") : it->second) << ", " << record_path
        << " records " << sha.as_string().c_str()
        << (file == "config.json" ? " (hashed with config_changes.json's fields restored)" : "");
  }
}

struct RefCase {
  const char* name;    // data file stem under reference/
  const char* preset;
  DType dtype;
  uint64_t seed;
  const char* ids;     // ids file under reference/
};

void PrintTo(const RefCase& c, std::ostream* os) { *os << c.name; }

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
  expect_recorded_checkpoint(dir / "hf", rc.name);
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
  ASSERT_TRUE((*model)->forward(pool, *state, Batch::of({{0, ids, true}}), got).ok());
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
