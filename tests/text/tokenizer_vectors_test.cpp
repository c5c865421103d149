// Tokenizer against reference tokenizations: llama.cpp's GPT-2 vocabulary test vectors and the
// micro Kimi GGUF's cases (kimi-k2 pre-tokenizer, merge-list ranking).
#include <fstream>
#include <sstream>

#include <boost/json.hpp>
#include <gtest/gtest.h>

#include "text/tokenizer.h"

namespace kiln::text {
namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string ids_to_string(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    s += ' ';
    s += std::to_string(id);
  }
  return s;
}

Tokenizer load_gguf(const std::string& path) {
  auto gguf = GgufFile::open(path);
  EXPECT_TRUE(gguf.ok()) << gguf.status().to_string();
  auto tok = Tokenizer::from_gguf(*gguf);
  EXPECT_TRUE(tok.ok()) << tok.status().to_string();
  return std::move(tok).value();
}

TEST(TokenizerVectors, Gpt2VocabMatchesLlamaCppVectors) {
  const std::string base = std::string(KILN_TEST_DATA_DIR) + "/tokenizer/ggml-vocab-gpt-2.gguf";
  const Tokenizer tok = load_gguf(base);
  ASSERT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::kGpt2);
  // Cases are separated by "\n__ggml_vocab_test__\n" (the file ends with one); one output line each.
  const std::string inp = read_all(base + ".inp");
  const std::string out = read_all(base + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> cases;
  for (size_t pos = 0; pos < inp.size();) {
    const size_t next = inp.find(sep, pos);
    ASSERT_NE(next, std::string::npos);
    cases.push_back(inp.substr(pos, next - pos));
    pos = next + sep.size();
  }
  std::vector<std::string> expected;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) expected.push_back(line);
  ASSERT_EQ(cases.size(), expected.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto ids = tok.encode(cases[i], /*allow_special=*/false);
    EXPECT_EQ(ids_to_string(ids), expected[i]) << "case " << i << ": '" << cases[i] << "'";
    EXPECT_EQ(tok.decode(ids), cases[i]);
  }
}

TEST(TokenizerVectors, MicroKimiGgufMatchesLlamaCpp) {
  const std::string dir = std::string(KILN_TEST_DATA_DIR) + "/golden/";
  const Tokenizer tok = load_gguf(dir + "kimi-micro-f32.gguf");
  ASSERT_EQ(tok.vocab_size(), 640);
  EXPECT_EQ(tok.pre_tokenizer(), PreTokenizer::kKimiK2);
  EXPECT_EQ(tok.bos_id(), 608);
  EXPECT_EQ(tok.find_token("<|im_end|>"), 610);
  EXPECT_EQ(tok.find_token("[PAD]"), 639);
  EXPECT_EQ(tok.eos_ids(), (std::vector<int32_t>{609, 610, 617}));
  EXPECT_TRUE(tok.is_special(625));
  EXPECT_FALSE(tok.is_special(300));
  std::istringstream lines(read_all(dir + "micro_tokenizer_cases.jsonl"));
  int n = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    const boost::json::value v = boost::json::parse(line);
    const std::string text(v.at("text").as_string());
    std::vector<int32_t> expected;
    for (const auto& id : v.at("ids").as_array()) expected.push_back(static_cast<int32_t>(id.as_int64()));
    const auto ids = tok.encode(text);
    EXPECT_EQ(ids_to_string(ids), ids_to_string(expected)) << "text: '" << text << "'";
    EXPECT_EQ(tok.decode(ids), text);
    ++n;
  }
  EXPECT_EQ(n, 18);  // the README says 19; the file holds 18
}

}  // namespace
}  // namespace kiln::text
