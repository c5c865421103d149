// Loading generated checkpoints: a missing tensor or a mis-shaped one is rejected with a message
// naming the tensor (and both shapes); make-model writes what the loaders read back.
#include <filesystem>

#include <gtest/gtest.h>

#include "tools/make_model/make_model.h"
#include "shard/gguf.h"
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

// make-model --dtype q4_k_m writes llama.cpp's Q4_K_M mix (see gguf_type in make_model.cpp). The
// tiny shape has 8 layers, KDA layers 0–2 and 4–6 (attn_v index 0..5), so use_more_bits picks
// ffn_down of layers 0, 3, 6, 7 and attn_v of KDA index 2 and 5 (layers 2 and 6). Expert rows
// widened to 256 so they are whole k-quant blocks; 32-wide rows (f_b, k_b) fall back to q8_0.
TEST(ModelFilesTest, Q4KMMixMatchesLlamaCpp) {
  const fs::path d = fs::temp_directory_path() / ("kiln-q4km-" + std::to_string(::getpid()));
  auto cfg = preset_config("tiny");
  ASSERT_TRUE(cfg.ok());
  cfg->moe_intermediate_size = 256;
  MakeModelOptions o;
  o.dtype = DType::kQ4_K;
  o.out_dir = d.string();
  o.write_hf = false;
  auto s = make_model(*cfg, o);
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  auto g = GgufFile::open((d / "model.gguf").string());
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  const std::vector<std::pair<std::string, GgmlType>> want = {
      {"output.weight", GgmlType::kQ6_K},
      {"token_embd.weight", GgmlType::kQ4_K},
      {"blk.0.attn_q.weight", GgmlType::kQ4_K},
      {"blk.0.attn_v.weight", GgmlType::kQ4_K},
      {"blk.2.attn_v.weight", GgmlType::kQ6_K},
      {"blk.4.attn_v.weight", GgmlType::kQ4_K},
      {"blk.6.attn_v.weight", GgmlType::kQ6_K},
      {"blk.0.ffn_down.weight", GgmlType::kQ6_K},
      {"blk.0.ffn_up.weight", GgmlType::kQ4_K},
      {"blk.1.ffn_down_exps.weight", GgmlType::kQ4_K},
      {"blk.3.ffn_down_exps.weight", GgmlType::kQ6_K},
      {"blk.3.ffn_down_shexp.weight", GgmlType::kQ6_K},
      {"blk.4.ffn_down_exps.weight", GgmlType::kQ4_K},
      {"blk.6.ffn_down_exps.weight", GgmlType::kQ6_K},
      {"blk.7.ffn_down_exps.weight", GgmlType::kQ6_K},
      {"blk.1.ffn_up_exps.weight", GgmlType::kQ4_K},
      {"blk.1.ffn_gate_inp.weight", GgmlType::kF32},
      {"blk.1.ssm_f_b.weight", GgmlType::kQ8_0},
      {"blk.3.attn_k_b.weight", GgmlType::kQ8_0},
      {"blk.1.attn_norm.weight", GgmlType::kF32},
  };
  for (const auto& [name, type] : want) {
    const GgufTensor* t = g->find_tensor(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(ggml_type_name(static_cast<uint32_t>(t->type)),
              ggml_type_name(static_cast<uint32_t>(type))) << name;
  }
  EXPECT_EQ(g->get_int("general.file_type").value(), 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  std::error_code ec;
  fs::remove_all(d, ec);
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
