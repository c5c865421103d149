// Tokenizer behaviour: tiktoken cross-check through the HF loader, round trips on random text and
// bytes, the streaming decoder, special tokens in text, ids and errors from malformed files.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include <boost/json.hpp>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "text/byte_codec.h"
#include "text/tokenizer.h"

namespace kiln::text {
namespace {

namespace fs = std::filesystem;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

const std::string kData = KILN_TEST_DATA_DIR;

Tokenizer micro_gguf() {
  auto gguf = GgufFile::open(kData + "/golden/kimi-micro-f32.gguf");
  EXPECT_TRUE(gguf.ok()) << gguf.status().to_string();
  return std::move(Tokenizer::from_gguf(*gguf)).value();
}

Tokenizer micro_hf() {
  auto tok = Tokenizer::from_hf_dir(kData + "/tokenizer/kimi_micro_hf");
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  return std::move(tok).value();
}

// A scratch directory removed at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(fs::temp_directory_path() / (name + std::to_string(::getpid()))) {
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

TEST(Tokenizer, HfLoaderMatchesTiktoken) {
  const Tokenizer tok = micro_hf();
  EXPECT_EQ(tok.vocab_size(), 608 + 256);
  EXPECT_EQ(tok.token_bytes(613), "<|reserved_token_613|>");
  EXPECT_EQ(tok.token_bytes(700), "<|reserved_token_700|>");
  EXPECT_EQ(tok.bos_id(), 608);
  EXPECT_EQ(tok.eos_ids(), (std::vector<int32_t>{609, 610, 617}));
  std::istringstream lines(read_all(kData + "/tokenizer/kimi_micro_tiktoken_cases.jsonl"));
  int n = 0;
  for (std::string line; std::getline(lines, line); ++n) {
    const boost::json::value v = boost::json::parse(line);
    const std::string text(v.at("text").as_string());
    std::vector<int32_t> expected;
    for (const auto& id : v.at("ids").as_array()) expected.push_back(static_cast<int32_t>(id.as_int64()));
    EXPECT_EQ(tok.encode(text), expected) << "text: '" << text << "'";
  }
  EXPECT_GT(n, 400);
}

TEST(Tokenizer, GgufAndHfLoadersAgreeOnMicroVocab) {
  const Tokenizer hf = micro_hf();
  const Tokenizer gg = micro_gguf();
  for (int32_t id = 0; id < gg.vocab_size(); ++id) ASSERT_EQ(hf.token_bytes(id), gg.token_bytes(id)) << id;
  std::istringstream lines(read_all(kData + "/tokenizer/kimi_micro_tiktoken_cases.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    const std::string text(boost::json::parse(line).at("text").as_string());
    EXPECT_EQ(gg.encode(text), hf.encode(text)) << "text: '" << text << "'";
  }
}

std::string random_utf8(std::mt19937& rng, int n_chars) {
  std::uniform_int_distribution<int> kind(0, 5);
  std::string s;
  for (int i = 0; i < n_chars; ++i) {
    uint32_t cp = 0;
    switch (kind(rng)) {
      case 0: cp = std::uniform_int_distribution<uint32_t>(0, 0x7F)(rng); break;
      case 1: cp = std::uniform_int_distribution<uint32_t>(0x80, 0x7FF)(rng); break;
      case 2: cp = std::uniform_int_distribution<uint32_t>(0x4E00, 0x9FFF)(rng); break;
      case 3: cp = std::uniform_int_distribution<uint32_t>(0x800, 0xFFFF)(rng); break;
      case 4: cp = std::uniform_int_distribution<uint32_t>(0x10000, 0x10FFFF)(rng); break;
      default: cp = static_cast<uint32_t>(" \t\n\r'0"[std::uniform_int_distribution<int>(0, 5)(rng)]);
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD;
    append_utf8(s, cp);
  }
  return s;
}

TEST(Tokenizer, RoundTripsRandomTextAndBytes) {
  const Tokenizer gg = micro_gguf();
  const Tokenizer hf = micro_hf();
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 300; ++iter) {
    const std::string text = random_utf8(rng, 1 + iter % 40);
    for (bool special : {true, false}) {
      EXPECT_EQ(gg.decode(gg.encode(text, special)), text);
      EXPECT_EQ(hf.decode(hf.encode(text, special)), text);
    }
    std::string bytes(1 + iter % 50, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() & 0xFF);
    EXPECT_EQ(gg.decode(gg.encode(bytes)), bytes);
    EXPECT_EQ(hf.decode(hf.encode(bytes)), bytes);
  }
  const std::string long_ws = std::string(100000, ' ') + "x" + std::string(50000, '\n');
  EXPECT_TRUE(hf.decode(hf.encode(long_ws)) == long_ws);
}

TEST(Tokenizer, StreamDecoderHoldsIncompleteCharacters) {
  const Tokenizer tok = micro_gguf();
  const std::string text = "é😀中 ok";
  const std::vector<int32_t> ids = tok.encode(text);
  ASSERT_GT(ids.size(), 6u);  // byte tokens: characters are split across tokens
  StreamDecoder dec(tok);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = dec.push(id);
    for (size_t i = 0; i < piece.size(); i += utf8_char_len(piece, i)) {
      ASSERT_GT(utf8_char_len(piece, i), 0u) << "emitted an incomplete character";
    }
    streamed += piece;
  }
  streamed += dec.flush();
  EXPECT_EQ(streamed, text);
  // "😀" = F0 9F 98 80: nothing comes out until the last byte.
  EXPECT_EQ(dec.push(240), "");
  EXPECT_EQ(dec.push(159), "");
  EXPECT_EQ(dec.push(152), "");
  EXPECT_EQ(dec.push(128), "😀");
  // Invalid bytes become U+FFFD once they cannot complete.
  EXPECT_EQ(dec.push(255), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.push(226), "");
  EXPECT_EQ(dec.push('A'), "\xEF\xBF\xBD" "A");
  EXPECT_EQ(dec.push(226), "");
  EXPECT_EQ(dec.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.push(tok.find_token("<|im_end|>").value()), "<|im_end|>");
}

TEST(Tokenizer, SpecialTokensInText) {
  const Tokenizer tok = micro_gguf();
  const std::string text = "Hi<|im_end|><|im_user|>user";
  const auto ids = tok.encode(text);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 610), ids.end());
  EXPECT_NE(std::find(ids.begin(), ids.end(), 611), ids.end());
  const auto plain = tok.encode(text, /*allow_special=*/false);
  for (int32_t id : plain) EXPECT_FALSE(tok.is_special(id)) << id;
  EXPECT_EQ(tok.decode(plain), text);
  EXPECT_EQ(tok.encode("<|im_end|>"), std::vector<int32_t>{610});
  EXPECT_EQ(tok.encode("<|im_end|"), tok.encode("<|im_end|", false));
}

TEST(Tokenizer, LongestSpecialMatchWins) {
  TempDir dir("kiln_tok_longest_");
  write_file(dir.path / "tiktoken.model", read_all(kData + "/tokenizer/kimi_micro_hf/tiktoken.model"));
  write_file(dir.path / "tokenizer_config.json",
             R"({"added_tokens_decoder": {"608": {"content": "<x>", "special": true},
                 "609": {"content": "<x><y>", "special": true}}})");
  auto tok = Tokenizer::from_hf_dir(dir.path.string());
  ASSERT_TRUE(tok.ok()) << tok.status().to_string();
  EXPECT_EQ(tok->encode("<x><y><x>"), (std::vector<int32_t>{609, 608}));
  EXPECT_EQ(tok->find_token("<x><y>"), 609);
  EXPECT_EQ(tok->find_token("<|reserved_token_610|>"), 610);
  EXPECT_EQ(tok->bos_id(), std::nullopt);
}

// Writes a tokenizer directory with the given files and returns the load error.
std::string load_error(const std::string& model, const std::string& config, const TempDir& dir) {
  write_file(dir.path / "tiktoken.model", model);
  write_file(dir.path / "tokenizer_config.json", config);
  auto tok = Tokenizer::from_hf_dir(dir.path.string());
  return tok.ok() ? "" : tok.status().message();
}

TEST(Tokenizer, MalformedFilesNameFileAndLine) {
  TempDir dir("kiln_tok_bad_");
  const std::string good = read_all(kData + "/tokenizer/kimi_micro_hf/tiktoken.model");
  const std::string first_lines = good.substr(0, good.find("YQ=="));  // ranks before 'a'
  auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  };
  std::string err = load_error(first_lines + "YQ==\n", "{}", dir);
  EXPECT_TRUE(has(err, "tiktoken.model:98: expected '<base64> <rank>'")) << err;
  err = load_error(first_lines + "@@@ 97\n", "{}", dir);
  EXPECT_TRUE(has(err, "tiktoken.model:98: bad base64")) << err;
  err = load_error(first_lines + "YQ== 9x\n", "{}", dir);
  EXPECT_TRUE(has(err, "tiktoken.model:98: bad rank '9x'")) << err;
  err = load_error(first_lines + "YQ== 5\n", "{}", dir);
  EXPECT_TRUE(has(err, "tiktoken.model:98: rank 5 appears twice")) << err;
  err = load_error(first_lines, "{}", dir);
  EXPECT_TRUE(has(err, "no token for byte 0x61")) << err;
  err = load_error(good, "{\n  \"added_tokens_decoder\": {\n    \"608\": {,}\n}", dir);
  EXPECT_TRUE(has(err, "tokenizer_config.json:3: invalid JSON")) << err;
  err = load_error(good, R"({"added_tokens_decoder": {"608": {"special": true}}})", dir);
  EXPECT_TRUE(has(err, "tokenizer_config.json: added_tokens_decoder[608] has no string 'content'")) << err;
  err = load_error(good, R"({"added_tokens_decoder": {"12": {"content": "x"}}})", dir);
  EXPECT_TRUE(has(err, "key '12' is not an id in [608, 66144)")) << err;
  EXPECT_EQ(load_error(good, "{}", dir), "");
  fs::remove(dir.path / "tiktoken.model");
  auto missing = Tokenizer::from_hf_dir(dir.path.string());
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(has(missing.status().message(), "tiktoken.model: cannot open"));
}

// Added ids size the dense id table, so they are bounded (ranks + 2^16) before anything is
// allocated; an id given twice (also as "0608" next to "608") or a key given twice is refused.
TEST(Tokenizer, AddedIdsAreBoundedAndUnique) {
  TempDir dir("kiln_tok_ids_");
  const std::string good = read_all(kData + "/tokenizer/kimi_micro_hf/tiktoken.model");
  auto has = [](const std::string& msg, const std::string& part) {
    return msg.find(part) != std::string::npos;
  };
  for (const char* id : {"2147483647", "9223372036854775807", "66144", "-1"}) {
    const std::string err = load_error(
        good, fmt::format(R"({{"added_tokens_decoder": {{"{}": {{"content": "<x>"}}}}}})", id), dir);
    EXPECT_TRUE(has(err, fmt::format("key '{}' is not an id in [608, 66144)", id))) << err;
  }
  EXPECT_EQ(load_error(good, R"({"added_tokens_decoder": {"66143": {"content": "<x>"}}})", dir), "");
  std::string err = load_error(
      good, R"({"added_tokens_decoder": {"608": {"content": "<x>"}, "0608": {"content": "<y>"}}})", dir);
  EXPECT_TRUE(has(err, "added_tokens_decoder gives id 608 twice")) << err;
  err = load_error(
      good, R"({"added_tokens_decoder": {"608": {"content": "<x>"}, "608": {"content": "<y>"}}})", dir);
  EXPECT_TRUE(has(err, "tokenizer_config.json: JSON has a duplicate key '608'")) << err;
}

// The tokenizer files are opened as regular files only: a FIFO is refused at once (not waited
// on), /dev/zero is refused instead of read without end.
TEST(Tokenizer, SpecialFilesAreRefusedWithTheirPath) {
  TempDir dir("kiln_tok_special_");
  write_file(dir.path / "tiktoken.model", read_all(kData + "/tokenizer/kimi_micro_hf/tiktoken.model"));
  ASSERT_EQ(::mkfifo((dir.path / "tokenizer_config.json").c_str(), 0600), 0);
  auto tok = Tokenizer::from_hf_dir(dir.path.string());
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("tokenizer_config.json: is a FIFO, not a regular file"),
            std::string::npos) << tok.status().message();
  fs::remove(dir.path / "tiktoken.model");
  fs::create_symlink("/dev/zero", dir.path / "tiktoken.model");
  tok = Tokenizer::from_hf_dir(dir.path.string());
  ASSERT_FALSE(tok.ok());
  EXPECT_NE(tok.status().message().find("tiktoken.model: is a character device"),
            std::string::npos) << tok.status().message();
}

}  // namespace
}  // namespace kiln::text
