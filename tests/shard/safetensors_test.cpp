// safetensors reader/writer tests: round trips of every dtype, the header defect corpus (size
// bounds, UTF-8, JSON, duplicate keys, dtypes, shapes, offsets, data length), every strict prefix
// rejected, and sharded model directories with model.safetensors.index.json.
#include <gtest/gtest.h>

#include <limits>

#include "tests/shard/format_fixtures.h"
#include "shard/json_strict.h"
#include "shard/safetensors.h"

namespace kiln {
namespace {

using namespace kiln::testing_fixtures;

StatusOr<SafetensorsFile> parse_bytes(std::string bytes) {
  return SafetensorsFile::parse(MappedFile::from_bytes(std::move(bytes), "mem.safetensors"));
}

void expect_st_error(std::string bytes, const std::vector<std::string>& words) {
  auto f = parse_bytes(std::move(bytes));
  expect_error(f.status(), words);
  if (!f.ok()) {
    EXPECT_EQ(f.status().message().rfind("mem.safetensors: ", 0), 0u) << f.status().message();
  }
}

// One F32 tensor entry of the header.
std::string entry(const std::string& name, const std::string& shape, uint64_t b, uint64_t e,
                  const std::string& dtype = "F32") {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(e) + "]}";
}

TEST(SafetensorsRoundTrip, EveryDtypeMetadataAndEmptyTensor) {
  const std::string bytes = full_safetensors_writer().serialize();
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  auto f = parse_bytes(bytes);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->metadata().at("format"), "pt");
  struct Want { const char* name; DType dtype; std::vector<int64_t> shape; std::string data; };
  const std::vector<Want> want = {
      {"model.embed_tokens.weight", DType::kF32, {3, 4}, f32_bytes(12)},
      {"model.norm.weight", DType::kF16, {5}, u16_bytes(5, 0x3c00)},
      {"model.layers.0.mlp.up_proj.weight", DType::kBF16, {2, 1, 3}, u16_bytes(6, 0x3f80)},
      {"model.empty", DType::kF32, {0}, ""},
  };
  ASSERT_EQ(f->tensors().size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    const SafetensorsTensor& t = f->tensors()[i];
    SCOPED_TRACE(want[i].name);
    EXPECT_EQ(t.name, want[i].name);
    EXPECT_EQ(t.dtype, want[i].dtype);
    EXPECT_EQ(t.shape, want[i].shape);
    EXPECT_EQ(t.nbytes, want[i].data.size());
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(t.data), t.nbytes), want[i].data);
    EXPECT_EQ(t.file, "mem.safetensors");
    EXPECT_EQ(f->find(want[i].name), &t);
  }
  EXPECT_EQ(f->find("nope"), nullptr);
}

TEST(SafetensorsRoundTrip, EmptyFileAndScalar) {
  auto empty = parse_bytes(SafetensorsWriter().serialize());
  ASSERT_TRUE(empty.ok()) << empty.status().to_string();
  EXPECT_TRUE(empty->tensors().empty());
  SafetensorsWriter w;
  w.add("scalar", DType::kF32, {}, f32_bytes(1));
  auto s = parse_bytes(w.serialize());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_TRUE(s->tensors()[0].shape.empty());
  EXPECT_EQ(s->tensors()[0].nbytes, 4u);
}

TEST(SafetensorsRoundTrip, OutOfOrderOffsetsAreAccepted) {
  const std::string h = "{" + entry("b", "[2]", 8, 16) + "," + entry("a", "[2]", 0, 8) + "}";
  auto f = parse_bytes(raw_safetensors(h, f32_bytes(4)));
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->tensors()[0].name, "b");  // header order is kept
  EXPECT_EQ(f->find("a")->data + 8, f->find("b")->data);
}

// ---- Defect corpus --------------------------------------------------------------------------

TEST(SafetensorsDefects, HeaderLength) {
  std::string huge = full_safetensors_writer().serialize();
  patch<uint64_t>(&huge, 0, 200'000'000);
  expect_st_error(huge, {"header length 200000000", "limit"});
  std::string max = full_safetensors_writer().serialize();
  patch<uint64_t>(&max, 0, std::numeric_limits<uint64_t>::max());
  expect_st_error(max, {"header length"});
  std::string beyond = full_safetensors_writer().serialize();
  patch<uint64_t>(&beyond, 0, beyond.size() - 7);
  expect_st_error(beyond, {"header length", "exceeds"});
  expect_st_error("1234567", {"truncated", "header length"});
  expect_st_error("", {"truncated"});
}

TEST(SafetensorsDefects, HeaderNotUtf8JsonOrObject) {
  const std::string d = f32_bytes(1);
  expect_st_error(raw_safetensors("{" + entry("bad\xff", "[1]", 0, 4) + "}", d), {"UTF-8"});
  expect_st_error(raw_safetensors("{" + entry("\xc0\xaf", "[1]", 0, 4) + "}", d), {"UTF-8"});
  expect_st_error(raw_safetensors("{" + entry("\xed\xa0\x80", "[1]", 0, 4) + "}", d), {"UTF-8"});
  expect_st_error(raw_safetensors("{not json", d), {"not valid JSON"});
  expect_st_error(raw_safetensors("", ""), {"not valid JSON"});
  expect_st_error(raw_safetensors("{" + entry("a", "[1]", 0, 4) + ",}", d), {"JSON"});
  expect_st_error(raw_safetensors("{" + entry("a", "[1]", 0, 4) + "} {}", d), {"JSON"});
  expect_st_error(raw_safetensors("[1,2]", ""), {"not a JSON object"});
  expect_st_error(raw_safetensors(std::string(100, '[') + std::string(100, ']'), ""), {"JSON"});
  expect_st_error(raw_safetensors("{\"a\":[1]}", d), {"'a'", "not a JSON object"});
  // Valid multi-byte UTF-8 is fine.
  EXPECT_TRUE(parse_bytes(raw_safetensors("{" + entry("w\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80",
                                                      "[1]", 0, 4) + "}", d)).ok());
}

TEST(SafetensorsDefects, DuplicateKeys) {
  const std::string d = f32_bytes(2);
  expect_st_error(raw_safetensors("{" + entry("w", "[1]", 0, 4) + "," + entry("w", "[1]", 4, 8) +
                                  "}", d), {"duplicate key 'w'"});
  // Same key after unescaping.
  expect_st_error(raw_safetensors("{" + entry("ab", "[1]", 0, 4) + "," +
                                  entry("a\\u0062", "[1]", 4, 8) + "}", d), {"duplicate", "ab"});
  expect_st_error(raw_safetensors("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"I64\",\"shape\":[2],"
                                  "\"data_offsets\":[0,8]}}", d), {"duplicate key 'dtype'"});
  expect_st_error(raw_safetensors("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}," +
                                  entry("w", "[2]", 0, 8) + "}", d), {"duplicate key 'k'"});
  // The same key in two different objects is not a duplicate.
  EXPECT_TRUE(parse_bytes(raw_safetensors("{" + entry("a", "[1]", 0, 4) + "," +
                                          entry("b", "[1]", 4, 8) + "}", d)).ok());
}

TEST(SafetensorsDefects, UnknownAndUnsupportedDtypes) {
  const std::string d = f32_bytes(1);
  expect_st_error(raw_safetensors("{" + entry("w", "[1]", 0, 4, "Q9") + "}", d),
                  {"'w'", "unknown dtype 'Q9'"});
  for (const char* dt : {"I64", "F8_E4M3", "F64", "U8", "BOOL"}) {
    auto f = parse_bytes(raw_safetensors("{" + entry("w", "[1]", 0, 4, dt) + "}", d));
    expect_error(f.status(), {"'w'", dt, "not support"});
    EXPECT_EQ(f.status().code(), StatusCode::kUnimplemented);
  }
  expect_st_error(raw_safetensors("{\"w\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", d),
                  {"dtype is not a string"});
}

TEST(SafetensorsDefects, BadShapes) {
  const std::string d = f32_bytes(1);
  expect_st_error(raw_safetensors("{" + entry("w", "[-1]", 0, 4) + "}", d), {"'w'", "negative"});
  expect_st_error(raw_safetensors("{" + entry("w", "[1.5]", 0, 4) + "}", d), {"not an integer"});
  expect_st_error(raw_safetensors("{" + entry("w", "[\"1\"]", 0, 4) + "}", d), {"integer"});
  expect_st_error(raw_safetensors("{" + entry("w", "[4611686018427387904,8]", 0, 4) + "}", d),
                  {"'w'", "overflow"});
  expect_st_error(raw_safetensors("{" + entry("w", "[18446744073709551615]", 0, 4) + "}", d),
                  {"too large"});
  // 2^62 elements fit int64, but 2^64 bytes of F32 do not.
  expect_st_error(raw_safetensors("{" + entry("w", "[4611686018427387904]", 0, 4) + "}", d),
                  {"byte size overflows"});
  expect_st_error(raw_safetensors("{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}",
                                  d), {"shape is not an array"});
  expect_st_error(raw_safetensors("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", d),
                  {"'w'", "shape"});
}

TEST(SafetensorsDefects, OffsetsNotContiguousFromZero) {
  const std::string d16 = f32_bytes(4);
  expect_st_error(raw_safetensors("{" + entry("w", "[3]", 4, 16) + "}", d16),
                  {"'w'", "contiguous from 0"});
  expect_st_error(raw_safetensors("{" + entry("a", "[2]", 0, 8) + "," + entry("b", "[1]", 12, 16) +
                                  "}", d16), {"gap", "'b'", "'a'"});
  expect_st_error(raw_safetensors("{" + entry("a", "[3]", 0, 12) + "," + entry("b", "[2]", 8, 16) +
                                  "}", d16), {"overlap", "'b'", "'a'"});
  expect_st_error(raw_safetensors("{" + entry("a", "[2]", 0, 8) + "," + entry("b", "[2]", 0, 8) +
                                  "}", d16), {"overlap"});
  expect_st_error(raw_safetensors("{" + entry("w", "[0]", 8, 4) + "}", ""), {"after end"});
  expect_st_error(raw_safetensors("{" + entry("w", "[1]", 0, 4) + ",\"v\":{\"dtype\":\"F32\","
                                  "\"shape\":[1],\"data_offsets\":[4]}}", d16), {"data_offsets"});
  expect_st_error(raw_safetensors("{" + entry("w", "[1]", 0, 4) + ",\"v\":{\"dtype\":\"F32\","
                                  "\"shape\":[1],\"data_offsets\":[-4,0]}}", d16), {"negative"});
}

TEST(SafetensorsDefects, SizeMismatchAndDataLength) {
  expect_st_error(raw_safetensors("{" + entry("w", "[4]", 0, 12) + "}", f32_bytes(3)),
                  {"'w'", "12 bytes", "16 bytes"});
  expect_st_error(raw_safetensors("{" + entry("w", "[2]", 0, 8, "BF16") + "}", f32_bytes(2)),
                  {"'w'", "4 bytes"});
  expect_st_error(raw_safetensors("{" + entry("w", "[2]", 0, 8) + "}", f32_bytes(3)),
                  {"data length", "8", "12"});
  expect_st_error(raw_safetensors("{" + entry("w", "[2]", 0, 8) + "}", f32_bytes(1)),
                  {"data length", "truncated"});
  expect_st_error(raw_safetensors("{}", "x"), {"data length"});
}

TEST(SafetensorsDefects, BadMetadata) {
  expect_st_error(raw_safetensors("{\"__metadata__\":{\"k\":1}}", ""), {"__metadata__", "'k'"});
  expect_st_error(raw_safetensors("{\"__metadata__\":[]}", ""), {"__metadata__"});
}

TEST(SafetensorsDefects, EveryStrictPrefixIsRejected) {
  const std::string good = full_safetensors_writer().serialize();
  ASSERT_TRUE(parse_bytes(good).ok());
  for (size_t n = 0; n < good.size(); ++n) {
    auto f = parse_bytes(good.substr(0, n));
    ASSERT_FALSE(f.ok()) << "prefix of " << n << " of " << good.size() << " bytes was accepted";
    EXPECT_EQ(f.status().message().rfind("mem.safetensors: ", 0), 0u);
  }
}

TEST(JsonStrict, NestedDuplicatesAndSplitKeys) {
  EXPECT_TRUE(parse_json_strict("{\"a\":{\"x\":1},\"b\":{\"x\":2}}", "doc").ok());
  expect_error(parse_json_strict("{\"a\":[{\"x\":1,\"x\":2}]}", "doc").status(),
               {"doc", "duplicate key 'x'"});
  const std::string long_key(5000, 'k');
  expect_error(parse_json_strict("{\"" + long_key + "\\n\":1,\"" + long_key + "\\u000a\":2}",
                                 "doc").status(), {"duplicate"});
  EXPECT_EQ(first_invalid_utf8("ok\xe2\x82"), 2u);
  EXPECT_EQ(first_invalid_utf8("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(first_invalid_utf8("\xf4\x8f\xbf\xbf"), 4u);
}

// ---- Files and model directories ------------------------------------------------------------

TEST(SafetensorsFiles, OpenFromPathAndErrorsNameThePath) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  ASSERT_TRUE(full_safetensors_writer().write(path).ok());
  auto f = SafetensorsFile::open(path);
  ASSERT_TRUE(f.ok()) << f.status().to_string();
  EXPECT_EQ(f->tensors()[0].file, path);
  const std::string bad = dir.file("bad.safetensors");
  write_test_file(bad, raw_safetensors("{" + entry("w", "[1]", 0, 4, "I64") + "}", f32_bytes(1)));
  auto b = SafetensorsFile::open(bad);
  expect_error(b.status(), {"I64"});
  EXPECT_EQ(b.status().message().rfind(bad + ": ", 0), 0u) << b.status().message();
  auto missing = SafetensorsFile::open(dir.file("none.safetensors"));
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  expect_error(missing.status(), {dir.file("none.safetensors")});
}

TEST(SafetensorsSetTest, SingleFileDirectory) {
  TempDir dir;
  ASSERT_TRUE(full_safetensors_writer().write(dir.file("model.safetensors")).ok());
  auto s = SafetensorsSet::open_dir(dir.path());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->names().size(), 4u);
  ASSERT_NE(s->find("model.norm.weight"), nullptr);
  EXPECT_EQ(s->find("model.norm.weight")->dtype, DType::kF16);
  EXPECT_EQ(s->find("nope"), nullptr);
}

TEST(SafetensorsSetTest, MissingFilesAreNotFound) {
  TempDir dir;
  auto s = SafetensorsSet::open_dir(dir.path());
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  expect_error(s.status(), {dir.path(), "model.safetensors.index.json", "model.safetensors"});
}

// Two shards: a+b in shard 1, c in shard 2, and an index that says so (plus `extra` entries).
void write_sharded(const TempDir& dir, const std::string& extra = "") {
  SafetensorsWriter s1;
  s1.add("a", DType::kF32, {2}, f32_bytes(2));
  s1.add("b", DType::kBF16, {3}, u16_bytes(3, 7));
  SafetensorsWriter s2;
  s2.add("c", DType::kF16, {2, 2}, u16_bytes(4, 9));
  ASSERT_TRUE(s1.write(dir.file("model-00001-of-00002.safetensors")).ok());
  ASSERT_TRUE(s2.write(dir.file("model-00002-of-00002.safetensors")).ok());
  write_test_file(dir.file("model.safetensors.index.json"),
             "{\"metadata\":{\"total_size\":30},\"weight_map\":{"
             "\"a\":\"model-00001-of-00002.safetensors\","
             "\"b\":\"model-00001-of-00002.safetensors\"," + extra +
             "\"c\":\"model-00002-of-00002.safetensors\"}}");
}

TEST(SafetensorsSetTest, ShardedDirectoryFindsEveryTensor) {
  TempDir dir;
  write_sharded(dir);
  auto s = SafetensorsSet::open_dir(dir.path());
  ASSERT_TRUE(s.ok()) << s.status().to_string();
  EXPECT_EQ(s->names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(s->find("c")->file, dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(s->find("b")->dtype, DType::kBF16);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(s->find("c")->data), 8), u16_bytes(4, 9));
}

TEST(SafetensorsSetTest, IndexNamingAMissingShard) {
  TempDir dir;
  write_sharded(dir, "\"d\":\"model-00003-of-00002.safetensors\",");
  auto s = SafetensorsSet::open_dir(dir.path());
  EXPECT_EQ(s.status().code(), StatusCode::kNotFound);
  expect_error(s.status(), {"model.safetensors.index.json", "model-00003-of-00002.safetensors"});
}

TEST(SafetensorsSetTest, TensorInTheWrongShard) {
  TempDir dir;
  write_sharded(dir);
  write_test_file(dir.file("model.safetensors.index.json"),
             "{\"weight_map\":{\"a\":\"model-00002-of-00002.safetensors\","
             "\"b\":\"model-00001-of-00002.safetensors\","
             "\"c\":\"model-00002-of-00002.safetensors\"}}");
  auto s = SafetensorsSet::open_dir(dir.path());
  expect_error(s.status(), {"tensor 'a'", "model-00002-of-00002.safetensors",
                            "it is in " + dir.file("model-00001-of-00002.safetensors")});
  write_sharded(dir, "\"ghost\":\"model-00001-of-00002.safetensors\",");
  expect_error(SafetensorsSet::open_dir(dir.path()).status(), {"'ghost'", "no shard holds it"});
}

TEST(SafetensorsSetTest, TensorInTwoShards) {
  TempDir dir;
  write_sharded(dir);
  SafetensorsWriter s2;
  s2.add("a", DType::kF32, {2}, f32_bytes(2));
  s2.add("c", DType::kF16, {2, 2}, u16_bytes(4, 9));
  ASSERT_TRUE(s2.write(dir.file("model-00002-of-00002.safetensors")).ok());
  expect_error(SafetensorsSet::open_dir(dir.path()).status(), {"tensor 'a'", "both"});
}

TEST(SafetensorsSetTest, BadIndexes) {
  TempDir dir;
  write_sharded(dir);
  for (const char* shard : {"../x.safetensors", "sub/x.safetensors", "/etc/passwd", ""}) {
    write_sharded(dir, std::string("\"d\":\"") + shard + "\",");
    expect_error(SafetensorsSet::open_dir(dir.path()).status(), {"'d'", "plain file name"});
  }
  const std::string index = dir.file("model.safetensors.index.json");
  write_test_file(index, "{\"weight_map\":{\"a\":\"x\",\"a\":\"y\"}}");
  expect_error(SafetensorsSet::open_dir(dir.path()).status(), {index, "duplicate key 'a'"});
  write_test_file(index, "{\"metadata\":{}}");
  expect_error(SafetensorsSet::open_dir(dir.path()).status(), {index, "weight_map"});
  write_test_file(index, "{\"weight_map\":{\"a\":1}}");
  expect_error(SafetensorsSet::open_dir(dir.path()).status(), {"'a'", "not a string"});
  write_test_file(index, "not json");
  expect_error(SafetensorsSet::open_dir(dir.path()).status(), {index, "JSON"});
}

TEST(SafetensorsSetTest, BadShardContentNamesTheShard) {
  TempDir dir;
  write_sharded(dir);
  std::string bad = full_safetensors_writer().serialize();
  bad.resize(bad.size() - 1);
  write_test_file(dir.file("model-00002-of-00002.safetensors"), bad);
  expect_error(SafetensorsSet::open_dir(dir.path()).status(),
               {"model-00002-of-00002.safetensors", "data length"});
}

}  // namespace
}  // namespace kiln
