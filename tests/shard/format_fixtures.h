// Test helpers for the checkpoint format tests: small valid GGUF/safetensors files built with the
// writers, byte patching at named fields, and temporary directories. Test-only code.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kernels/base/dtype.h"
#include "kernels/base/status.h"
#include "shard/gguf.h"
#include "shard/safetensors.h"

namespace kiln::testing_fixtures {

template <typename T>
std::string le_bytes(const std::vector<T>& v) {
  std::string out(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

template <typename T>
void patch(std::string* bytes, size_t pos, T v) {
  ASSERT_LE(pos + sizeof(T), bytes->size());
  std::memcpy(bytes->data() + pos, &v, sizeof(T));
}

// Offset of the first occurrence of `needle` after `from`; fails the test if absent.
inline size_t find_or_fail(const std::string& bytes, const std::string& needle, size_t from = 0) {
  const size_t pos = bytes.find(needle, from);
  EXPECT_NE(pos, std::string::npos) << "'" << needle << "' not in the test bytes";
  return pos == std::string::npos ? 0 : pos;
}

// Offset of the ggml type / data offset fields of tensor `name` in a GGUF file.
inline size_t gguf_tensor_type_pos(const std::string& bytes, const std::string& name) {
  const size_t after_name = find_or_fail(bytes, name) + name.size();
  uint32_t n_dims = 0;
  std::memcpy(&n_dims, bytes.data() + after_name, 4);
  return after_name + 4 + 8 * n_dims;
}
inline size_t gguf_tensor_offset_pos(const std::string& bytes, const std::string& name) {
  return gguf_tensor_type_pos(bytes, name) + 4;
}

inline std::string f32_bytes(size_t n, float start = 0.5f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i) * 0.25f;
  return le_bytes(v);
}
inline std::string u16_bytes(size_t n, uint16_t start) {
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint16_t>(start + i);
  return le_bytes(v);
}
inline std::string q8_0_bytes(size_t n_values) {
  std::vector<float> x(n_values);
  for (size_t i = 0; i < n_values; ++i) x[i] = static_cast<float>(i % 17) - 8.0f;
  std::vector<BlockQ8_0> blocks(n_values / kQ8Block);
  quantize_row_q8_0(x.data(), blocks.data(), static_cast<int64_t>(n_values));
  return le_bytes(blocks);
}

// Metadata of every writable kind and one tensor of each supported type.
inline GgufWriter full_gguf_writer() {
  GgufWriter w;
  w.add_string("general.architecture", "kimi-linear");
  w.add_uint32("kimi-linear.block_count", 8);
  w.add_int32("test.negative", -7);
  w.add_uint64("test.big", uint64_t{1} << 40);
  w.add_float32("kimi-linear.attention.layer_norm_rms_epsilon", 1e-5f);
  w.add_bool("test.flag", true);
  w.add_int32_array("test.ints", {1, -2, 3});
  w.add_uint32_array("kimi-linear.attention.head_count_kv", {0, 0, 0, 1});
  w.add_float32_array("test.floats", {0.5f, -1.25f});
  w.add_string_array("tokenizer.ggml.tokens", {"a", "", "<|im_end|>"});
  w.add_tensor("token_embd.weight", GgmlType::kF32, {4, 3}, f32_bytes(12));
  w.add_tensor("blk.0.attn_norm.weight", GgmlType::kF16, {5}, u16_bytes(5, 0x3c00));
  w.add_tensor("blk.0.ffn_up.weight", GgmlType::kBF16, {2, 3, 2}, u16_bytes(12, 0x3f80));
  w.add_tensor("blk.0.attn_q.weight", GgmlType::kQ8_0, {64, 2, 1, 1}, q8_0_bytes(128));
  return w;
}

// A small file for the every-prefix test (kept small so the loop is quick).
inline GgufWriter small_gguf_writer() {
  GgufWriter w;
  w.add_string("general.architecture", "kimi-linear");
  w.add_uint32_array("a", {1, 2});
  w.add_tensor("t0", GgmlType::kF32, {3}, f32_bytes(3));
  w.add_tensor("t1", GgmlType::kF16, {2, 2}, u16_bytes(4, 1));
  return w;
}

inline SafetensorsWriter full_safetensors_writer() {
  SafetensorsWriter w;
  w.add_metadata("format", "pt");
  w.add("model.embed_tokens.weight", DType::kF32, {3, 4}, f32_bytes(12));
  w.add("model.norm.weight", DType::kF16, {5}, u16_bytes(5, 0x3c00));
  w.add("model.layers.0.mlp.up_proj.weight", DType::kBF16, {2, 1, 3}, u16_bytes(6, 0x3f80));
  w.add("model.empty", DType::kF32, {0}, "");
  return w;
}

// 8-byte little-endian length + header text + data, with no padding or checks.
inline std::string raw_safetensors(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

// Asserts `s` failed and its message contains every word in `words`.
inline void expect_error(const Status& s, const std::vector<std::string>& words) {
  ASSERT_FALSE(s.ok()) << "expected an error containing '" << (words.empty() ? "" : words[0])
                       << "'";
  for (const std::string& w : words) {
    EXPECT_NE(s.message().find(w), std::string::npos)
        << "message '" << s.message() << "' lacks '" << w << "'";
  }
}

// A fresh directory under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() /
            (std::string("kiln_") + info->test_suite_name() + "_" + info->name() + "_" +
             std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

inline void write_test_file(const std::string& path, const std::string& bytes) {
  const Status s = kiln::write_file(path, bytes);
  ASSERT_TRUE(s.ok()) << s.to_string();
}

}  // namespace kiln::testing_fixtures
