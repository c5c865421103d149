// GGUF reader/writer tests: round trips of every metadata kind and tensor type, typed getters,
// the defect corpus (one malformed file per defect class, each built by patching a valid writer
// output), every strict prefix rejected, the path API, and the llama.cpp-written golden model.
#include <gtest/gtest.h>

#include <limits>

#include "tests/shard/format_fixtures.h"
#include "shard/gguf.h"

namespace kiln {
namespace {

using namespace kiln::testing_fixtures;

StatusOr<GgufFile> parse_bytes(std::string bytes, std::string name = "mem.gguf") {
  return GgufFile::parse(MappedFile::from_bytes(std::move(bytes), std::move(name)));
}

void expect_gguf_error(std::string bytes, const std::vector<std::string>& words) {
  auto g = parse_bytes(std::move(bytes));
  expect_error(g.status(), words);
  if (!g.ok()) {
    EXPECT_EQ(g.status().message().rfind("mem.gguf: ", 0), 0u) << g.status().message();
  }
}

TEST(GgufRoundTrip, MetadataAndEveryTensorType) {
  const GgufWriter w = full_gguf_writer();
  auto g = parse_bytes(w.serialize());
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->alignment(), 32u);
  EXPECT_EQ(g->metadata().size(), 10u);
  EXPECT_EQ(g->get_string("general.architecture").value(), "kimi-linear");
  EXPECT_EQ(g->get_int("kimi-linear.block_count").value(), 8);
  EXPECT_EQ(g->get_int("test.negative").value(), -7);
  EXPECT_EQ(g->get_int("test.big").value(), int64_t{1} << 40);
  EXPECT_FLOAT_EQ(static_cast<float>(g->get_float("kimi-linear.attention.layer_norm_rms_epsilon")
                                         .value()), 1e-5f);
  EXPECT_TRUE(g->get_bool("test.flag").value());
  EXPECT_EQ(g->get_int_array("test.ints").value(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(g->get_int_array("kimi-linear.attention.head_count_kv").value(),
            (std::vector<int64_t>{0, 0, 0, 1}));
  EXPECT_EQ(g->get_float_array("test.floats").value(), (std::vector<double>{0.5, -1.25}));
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.tokens").value(),
            (std::vector<std::string>{"a", "", "<|im_end|>"}));
  EXPECT_EQ(g->find("test.ints")->type, GgufValueType::kArray);
  EXPECT_EQ(g->find("test.ints")->array_type, GgufValueType::kInt32);
  EXPECT_EQ(g->find("test.negative")->type, GgufValueType::kInt32);
}

TEST(GgufRoundTrip, TensorsKeepOrderShapeTypeAndBytes) {
  const GgufWriter w = full_gguf_writer();
  const std::string bytes = w.serialize();
  auto g = parse_bytes(bytes);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  struct Want { const char* name; GgmlType type; DType dtype; std::vector<int64_t> ne; std::string data; };
  const std::vector<Want> want = {
      {"token_embd.weight", GgmlType::kF32, DType::kF32, {4, 3}, f32_bytes(12)},
      {"blk.0.attn_norm.weight", GgmlType::kF16, DType::kF16, {5}, u16_bytes(5, 0x3c00)},
      {"blk.0.ffn_up.weight", GgmlType::kBF16, DType::kBF16, {2, 3, 2}, u16_bytes(12, 0x3f80)},
      {"blk.0.attn_q.weight", GgmlType::kQ8_0, DType::kQ8_0, {64, 2, 1, 1}, q8_0_bytes(128)},
  };
  ASSERT_EQ(g->tensors().size(), want.size());
  const std::byte* base = g->file()->data();
  for (size_t i = 0; i < want.size(); ++i) {
    const GgufTensor& t = g->tensors()[i];
    SCOPED_TRACE(want[i].name);
    EXPECT_EQ(t.name, want[i].name);
    EXPECT_EQ(t.type, want[i].type);
    EXPECT_EQ(t.dtype, want[i].dtype);
    EXPECT_EQ(t.ne, want[i].ne);
    EXPECT_EQ(t.nbytes, want[i].data.size());
    EXPECT_EQ(static_cast<size_t>(t.data - base) % 32, 0u);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(t.data), t.nbytes), want[i].data);
    EXPECT_EQ(g->find_tensor(want[i].name), &t);
  }
  EXPECT_EQ(g->find_tensor("missing"), nullptr);
  EXPECT_EQ(bytes.size() % 32, 0u);  // the last tensor is padded too
}

TEST(GgufRoundTrip, EmptyFileAndCustomAlignment) {
  auto empty = parse_bytes(GgufWriter().serialize());
  ASSERT_TRUE(empty.ok()) << empty.status().to_string();
  EXPECT_TRUE(empty->tensors().empty());
  GgufWriter w;
  w.add_uint32("general.alignment", 64);
  w.add_tensor("a", GgmlType::kF32, {3}, f32_bytes(3));
  w.add_tensor("b", GgmlType::kF32, {20}, f32_bytes(20));
  auto g = parse_bytes(w.serialize());
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ(g->alignment(), 64u);
  EXPECT_EQ(g->tensors()[1].offset, 64u);
  EXPECT_EQ(static_cast<size_t>(g->tensors()[1].data - g->file()->data()) % 64, 0u);
}

TEST(GgufGetters, TypeMismatchAndMissingKeysAreErrors) {
  GgufWriter w = full_gguf_writer();
  w.add_uint64("test.huge", std::numeric_limits<uint64_t>::max());
  auto g = parse_bytes(w.serialize());
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ(g->get_int("nope").status().code(), StatusCode::kNotFound);
  expect_error(g->get_int("nope").status(), {"mem.gguf", "nope"});
  expect_error(g->get_int("general.architecture").status(), {"general.architecture", "string"});
  expect_error(g->get_int("test.huge").status(), {"test.huge", "int64"});
  expect_error(g->get_float("kimi-linear.block_count").status(), {"block_count", "uint32"});
  expect_error(g->get_bool("kimi-linear.block_count").status(), {"block_count"});
  expect_error(g->get_string("test.flag").status(), {"test.flag", "bool"});
  expect_error(g->get_int_array("test.floats").status(), {"test.floats", "array of float32"});
  expect_error(g->get_float_array("test.ints").status(), {"test.ints"});
  expect_error(g->get_string_array("test.ints").status(), {"test.ints"});
  expect_error(g->get_int_array("test.negative").status(), {"test.negative"});
  EXPECT_EQ(ggml_type_name(12), "Q4_K");
  EXPECT_EQ(ggml_type_name(99), "type 99");
}

// ---- Defect corpus: header ------------------------------------------------------------------

TEST(GgufDefects, BadMagic) {
  std::string b = full_gguf_writer().serialize();
  b[0] = 'X';
  expect_gguf_error(b, {"magic"});
  expect_gguf_error("GGU", {"truncated"});
  expect_gguf_error("", {"truncated"});
}

TEST(GgufDefects, UnsupportedVersion) {
  for (uint32_t v : {0u, 1u, 4u, 0xffffffffu}) {
    std::string b = full_gguf_writer().serialize();
    patch<uint32_t>(&b, 4, v);
    expect_gguf_error(b, {"unsupported GGUF version " + std::to_string(v)});
  }
  std::string v2 = full_gguf_writer().serialize();
  patch<uint32_t>(&v2, 4, 2);
  EXPECT_TRUE(parse_bytes(v2).ok());
}

TEST(GgufDefects, HugeCounts) {
  const uint64_t max = std::numeric_limits<uint64_t>::max();
  for (uint64_t n : {max, uint64_t{1} << 40, uint64_t{100000}}) {
    std::string t = full_gguf_writer().serialize();
    patch<uint64_t>(&t, 8, n);
    expect_gguf_error(t, {"tensor count"});
    std::string k = full_gguf_writer().serialize();
    patch<uint64_t>(&k, 16, n);
    expect_gguf_error(k, {"kv count"});
  }
}

TEST(GgufDefects, StringLengthsBeyondTheFile) {
  std::string key = full_gguf_writer().serialize();
  patch<uint64_t>(&key, 24, uint64_t{1} << 62);  // length of the first key
  expect_gguf_error(key, {"length", "key #0"});
  std::string value = full_gguf_writer().serialize();
  const size_t pos = find_or_fail(value, "general.architecture") + 20 + 4;
  patch<uint64_t>(&value, pos, std::numeric_limits<uint64_t>::max());
  expect_gguf_error(value, {"general.architecture", "length"});
  std::string name = full_gguf_writer().serialize();
  patch<uint64_t>(&name, find_or_fail(name, "token_embd.weight") - 8, 1u << 30);
  expect_gguf_error(name, {"name of tensor #0", "length"});
}

TEST(GgufDefects, ArrayLengthsBeyondTheFile) {
  for (const char* key : {"test.ints", "tokenizer.ggml.tokens"}) {
    std::string b = full_gguf_writer().serialize();
    const size_t count_pos = find_or_fail(b, key) + std::strlen(key) + 4 + 4;
    for (uint64_t n : {std::numeric_limits<uint64_t>::max(), uint64_t{1} << 32}) {
      patch<uint64_t>(&b, count_pos, n);
      expect_gguf_error(b, {"array", key, "length"});
    }
  }
}

TEST(GgufDefects, UnknownValueTypes) {
  std::string b = full_gguf_writer().serialize();
  const size_t type_pos = find_or_fail(b, "kimi-linear.block_count") + 23;
  patch<uint32_t>(&b, type_pos, 13);
  expect_gguf_error(b, {"kimi-linear.block_count", "unknown value type 13"});
  std::string a = full_gguf_writer().serialize();
  patch<uint32_t>(&a, find_or_fail(a, "test.ints") + 9 + 4, 77);
  expect_gguf_error(a, {"test.ints", "unknown value type 77"});
}

TEST(GgufDefects, BoolOutOfRange) {
  std::string b = full_gguf_writer().serialize();
  b[find_or_fail(b, "test.flag") + 9 + 4] = 2;
  expect_gguf_error(b, {"test.flag", "bool"});
}

// GGUF with one kv holding arrays nested `depth` deep around a single uint8.
std::string nested_array_gguf(int depth) {
  std::string b = "GGUF";
  auto put32 = [&](uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); };
  auto put64 = [&](uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); };
  put32(3);
  put64(0);
  put64(1);
  put64(6);
  b += "nested";
  put32(9);
  for (int i = 1; i < depth; ++i) {
    put32(9);
    put64(1);
  }
  put32(0);
  put64(1);
  b += '\x05';
  return b;
}

TEST(GgufDefects, ArrayNestingIsBounded) {
  auto ok = parse_bytes(nested_array_gguf(3));
  ASSERT_TRUE(ok.ok()) << ok.status().to_string();
  const GgufValue* v = ok->find("nested");
  ASSERT_NE(v, nullptr);
  EXPECT_EQ(v->array_type, GgufValueType::kArray);
  expect_gguf_error(nested_array_gguf(9), {"nested", "deeper"});
  expect_gguf_error(nested_array_gguf(100000), {"nested"});
}

TEST(GgufDefects, DuplicateKeyAndTensorName) {
  GgufWriter k = full_gguf_writer();
  k.add_uint32("kimi-linear.block_count", 9);
  expect_gguf_error(k.serialize(), {"duplicate key", "kimi-linear.block_count"});
  GgufWriter t = full_gguf_writer();
  t.add_tensor("token_embd.weight", GgmlType::kF32, {1}, f32_bytes(1));
  expect_gguf_error(t.serialize(), {"duplicate tensor name", "token_embd.weight"});
}

TEST(GgufDefects, BadAlignment) {
  for (uint32_t a : {0u, 3u, 48u, 1u << 21, 0x80000000u}) {
    GgufWriter w = full_gguf_writer();
    w.add_uint32("general.alignment", a);
    expect_gguf_error(w.serialize(), {"general.alignment", std::to_string(a)});
  }
  GgufWriter wrong_type = full_gguf_writer();
  wrong_type.add_uint64("general.alignment", 32);
  expect_gguf_error(wrong_type.serialize(), {"general.alignment", "uint32"});
}

// ---- Defect corpus: tensor infos ------------------------------------------------------------

std::string one_tensor(GgmlType type, std::vector<int64_t> ne, std::string data = "") {
  GgufWriter w;
  w.add_string("general.architecture", "kimi-linear");
  w.add_tensor("blk.0.attn_q.weight", type, ne, std::move(data));
  return w.serialize();
}

TEST(GgufDefects, BadDimCounts) {
  expect_gguf_error(one_tensor(GgmlType::kF32, {}), {"blk.0.attn_q.weight", "n_dims 0"});
  expect_gguf_error(one_tensor(GgmlType::kF32, {1, 1, 1, 1, 1}),
                    {"blk.0.attn_q.weight", "n_dims 5"});
  std::string b = one_tensor(GgmlType::kF32, {1}, f32_bytes(1));
  patch<uint32_t>(&b, find_or_fail(b, "blk.0.attn_q.weight") + 19, 0xffffffffu);
  expect_gguf_error(b, {"n_dims 4294967295"});
}

TEST(GgufDefects, ZeroNegativeAndOverflowingDims) {
  expect_gguf_error(one_tensor(GgmlType::kF32, {4, 0}), {"blk.0.attn_q.weight", "ne[1] = 0"});
  expect_gguf_error(one_tensor(GgmlType::kF32, {-4}), {"ne[0] = -4"});
  const int64_t big = int64_t{1} << 32;
  expect_gguf_error(one_tensor(GgmlType::kF32, {big, big}),
                    {"blk.0.attn_q.weight", "element count overflows"});
  const int64_t b31 = int64_t{1} << 31;  // 2^62 elements fit int64; 2^64 bytes do not
  expect_gguf_error(one_tensor(GgmlType::kF32, {b31, b31}), {"byte size overflows"});
  expect_gguf_error(one_tensor(GgmlType::kQ8_0, {int64_t{1} << 60, 1 << 10}), {"overflows"});
  const int64_t max = std::numeric_limits<int64_t>::max();
  expect_gguf_error(one_tensor(GgmlType::kF16, {max}), {"overflows"});
  expect_gguf_error(one_tensor(GgmlType::kF32, {1 << 20, 1 << 20}), {"too short"});
}

TEST(GgufDefects, UnsupportedAndUnknownTensorTypes) {
  auto q5k = parse_bytes(one_tensor(GgmlType::kQ5_K, {256}, std::string(176, '\0')));
  ASSERT_FALSE(q5k.ok());
  EXPECT_EQ(q5k.status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(q5k.status().message(),
            "mem.gguf: tensor 'blk.0.attn_q.weight' has type Q5_K, which kiln does not support "
            "yet (supported: F32, F16, BF16, Q8_0, Q4_K, Q6_K)");
  expect_gguf_error(one_tensor(GgmlType::kQ4_0, {32}, std::string(18, '\0')), {"Q4_0"});
  expect_gguf_error(one_tensor(static_cast<GgmlType>(20), {32}), {"IQ4_NL"});
  expect_gguf_error(one_tensor(static_cast<GgmlType>(99), {32}),
                    {"blk.0.attn_q.weight", "unknown ggml type 99"});
  expect_gguf_error(one_tensor(GgmlType::kQ8_0, {33}, std::string(34, '\0')),
                    {"ne[0] = 33", "block size 32"});
}

// ---- Defect corpus: data section ------------------------------------------------------------

TEST(GgufDefects, OffsetMisalignedOutOfRangeOrOverlapping) {
  const std::string good = full_gguf_writer().serialize();
  const size_t pos = gguf_tensor_offset_pos(good, "blk.0.ffn_up.weight");
  std::string mis = good;
  patch<uint64_t>(&mis, pos, 64 + 4);
  expect_gguf_error(mis, {"blk.0.ffn_up.weight", "offset 68", "misaligned"});
  std::string far = good;
  patch<uint64_t>(&far, pos, uint64_t{1} << 40);
  expect_gguf_error(far, {"blk.0.ffn_up.weight", "offset", "out of range"});
  std::string maxed = good;
  patch<uint64_t>(&maxed, pos, std::numeric_limits<uint64_t>::max() & ~uint64_t{31});
  expect_gguf_error(maxed, {"blk.0.ffn_up.weight", "out of range"});
  std::string overlap = good;
  patch<uint64_t>(&overlap, pos, 0);
  expect_gguf_error(overlap, {"blk.0.ffn_up.weight", "offset 0", "expected"});
  std::string gap = good;
  patch<uint64_t>(&gap, gguf_tensor_offset_pos(good, "blk.0.attn_norm.weight"), 96);
  expect_gguf_error(gap, {"blk.0.attn_norm.weight", "expected 64"});
}

TEST(GgufDefects, DataSectionTooShort) {
  const std::string good = full_gguf_writer().serialize();
  expect_gguf_error(good.substr(0, good.size() - 100), {"data section too short",
                                                         "blk.0.attn_q.weight"});
  expect_gguf_error(good.substr(0, good.size() - 1), {"data section too short", "padding"});
  // Infos intact, data section start beyond the end of the file.
  const size_t infos_end = gguf_tensor_offset_pos(good, "blk.0.attn_q.weight") + 8;
  expect_gguf_error(good.substr(0, infos_end + 1), {"data section too short"});
}

TEST(GgufDefects, EveryStrictPrefixIsRejected) {
  const std::string good = small_gguf_writer().serialize();
  ASSERT_TRUE(parse_bytes(good).ok());
  for (size_t n = 0; n < good.size(); ++n) {
    auto g = parse_bytes(good.substr(0, n));
    ASSERT_FALSE(g.ok()) << "prefix of " << n << " of " << good.size() << " bytes was accepted";
    EXPECT_EQ(g.status().message().rfind("mem.gguf: ", 0), 0u);
  }
}

TEST(GgufDefects, EveryPrefixOfTheFullFileIsRejected) {
  const std::string good = full_gguf_writer().serialize();
  for (size_t n = 0; n < good.size(); ++n) {
    ASSERT_FALSE(parse_bytes(good.substr(0, n)).ok()) << n;
  }
}

// Flipping any single header/info byte must never crash (it may still parse).
TEST(GgufDefects, SingleByteCorruptionsNeverCrash) {
  const std::string good = small_gguf_writer().serialize();
  const size_t meta_end = gguf_tensor_offset_pos(good, "t1") + 8;
  for (size_t i = 0; i < meta_end; ++i) {
    for (uint8_t x : {0x01, 0x80, 0xff}) {
      std::string b = good;
      b[i] = static_cast<char>(b[i] ^ x);
      auto g = parse_bytes(b);
      if (!g.ok()) {
        EXPECT_FALSE(g.status().message().empty());
      }
    }
  }
}

// ---- Files on disk --------------------------------------------------------------------------

TEST(GgufFiles, OpenFromPathAndErrorsNameThePath) {
  TempDir dir;
  const std::string path = dir.file("model.gguf");
  ASSERT_TRUE(full_gguf_writer().write(path).ok());
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ(g->tensors().size(), 4u);
  EXPECT_EQ(g->file()->path(), path);

  std::string bad = full_gguf_writer().serialize();
  patch<uint32_t>(&bad, 4, 7);
  const std::string bad_path = dir.file("bad.gguf");
  write_test_file(bad_path, bad);
  auto b = GgufFile::open(bad_path);
  expect_error(b.status(), {"unsupported GGUF version 7"});
  EXPECT_EQ(b.status().message().rfind(bad_path + ": ", 0), 0u) << b.status().message();
  auto missing = GgufFile::open(dir.file("missing.gguf"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  expect_error(missing.status(), {dir.file("missing.gguf")});
  expect_error(GgufFile::open(dir.path()).status(), {dir.path()});
  write_test_file(dir.file("empty.gguf"), "");
  expect_error(GgufFile::open(dir.file("empty.gguf")).status(), {"empty.gguf", "truncated"});
}

TEST(GgufFiles, GoldenLlamaCppModelParses) {
  const std::string path = std::string(KILN_TEST_DATA_DIR) + "/golden/kimi-micro-f32.gguf";
  auto g = GgufFile::open(path);
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  EXPECT_EQ(g->get_string("general.architecture").value(), "kimi-linear");
  EXPECT_GT(g->tensors().size(), 10u);
  EXPECT_NE(g->find_tensor("token_embd.weight"), nullptr);
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.tokens").value().size(), 640u);
  uint64_t total = 0;
  for (const GgufTensor& t : g->tensors()) total += t.nbytes;
  EXPECT_LE(total, g->file()->size());
}

}  // namespace
}  // namespace kiln
