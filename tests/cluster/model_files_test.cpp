// Loading generated checkpoints: a missing tensor or a mis-shaped one is rejected with a message
// naming the tensor (and both shapes); make-model writes what the loaders read back.
#include <filesystem>

#include <gtest/gtest.h>

#include "cluster/make_model.h"
#include "shard/model.h"
#include "shard/safetensors.h"

namespace kiln {
namespace {

namespace fs = std::filesystem;

fs::path micro_hf() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("kiln-files-" + std::to_string(::getpid()));
    auto cfg = preset_config("micro");
    EXPECT_TRUE(cfg.ok());
    MakeModelOptions o;
    o.dtype = DType::kF32;
    o.out_dir = d.string();
    auto s = make_model(*cfg, o);
    EXPECT_TRUE(s.ok()) << s.status().to_string();
    return d;
  }();
  struct Cleanup {
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  };
  static Cleanup cleanup;
  return dir;
}

// Copies the HF directory, rewriting model.safetensors through `edit`.
fs::path edited_copy(const std::string& name,
                     const std::function<void(const SafetensorsTensor&, SafetensorsWriter&)>& edit) {
  const fs::path src = micro_hf() / "hf";
  const fs::path dst = micro_hf() / name;
  fs::create_directories(dst);
  for (const char* f : {"config.json", "tiktoken.model", "tokenizer_config.json"}) {
    fs::copy_file(src / f, dst / f, fs::copy_options::overwrite_existing);
  }
  auto st = SafetensorsFile::open((src / "model.safetensors").string());
  EXPECT_TRUE(st.ok());
  SafetensorsWriter w;
  for (const SafetensorsTensor& t : st->tensors()) edit(t, w);
  EXPECT_TRUE(w.write((dst / "model.safetensors").string()).ok());
  return dst;
}

std::string bytes_of(const SafetensorsTensor& t) {
  return std::string(reinterpret_cast<const char*>(t.data), t.nbytes);
}

TEST(ModelFilesTest, GeneratedModelLoadsInBothLayouts) {
  auto hf = KimiLinearModel::load((micro_hf() / "hf").string());
  ASSERT_TRUE(hf.ok()) << hf.status().to_string();
  auto gguf = KimiLinearModel::load((micro_hf() / "model.gguf").string());
  ASSERT_TRUE(gguf.ok()) << gguf.status().to_string();
  EXPECT_EQ((*hf)->config().num_layers, 8);
  EXPECT_EQ((*gguf)->config().kda_num_heads, 4);
  EXPECT_EQ((*hf)->config().vocab_size, 640);
}

TEST(ModelFilesTest, MissingTensorIsNamed) {
  const std::string victim = "model.layers.3.self_attn.kv_b_proj.weight";
  fs::path dir = edited_copy("missing", [&](const SafetensorsTensor& t, SafetensorsWriter& w) {
    if (t.name != victim) w.add(t.name, t.dtype, t.shape, bytes_of(t));
  });
  auto m = KimiLinearModel::load(dir.string());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find(victim), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("missing"), std::string::npos) << m.status().message();
}

TEST(ModelFilesTest, MisShapedTensorNamesBothShapes) {
  const std::string victim = "model.layers.1.self_attn.q_proj.weight";
  fs::path dir = edited_copy("misshaped", [&](const SafetensorsTensor& t, SafetensorsWriter& w) {
    w.add(t.name, t.dtype, t.name == victim ? std::vector<int64_t>{64, 256} : t.shape, bytes_of(t));
  });
  auto m = KimiLinearModel::load(dir.string());
  ASSERT_FALSE(m.ok());
  const std::string msg = m.status().message();
  EXPECT_NE(msg.find(victim), std::string::npos) << msg;
  EXPECT_NE(msg.find("[64, 256]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[128, 128]"), std::string::npos) << msg;
}

TEST(ModelFilesTest, UnknownPresetAndBadPathsAreClearErrors) {
  EXPECT_NE(preset_config("huge").status().message().find("huge"), std::string::npos);
  auto m = KimiLinearModel::load("/nonexistent/model.gguf");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("/nonexistent/model.gguf"), std::string::npos);
}

}  // namespace
}  // namespace kiln
