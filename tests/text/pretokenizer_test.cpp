// Pre-tokenizer regexes on hand cases. The Kimi expectations were checked against the original
// Rust-syntax pattern (tiktoken / Python `regex` V1 with class intersection).
#include <gtest/gtest.h>

#include "text/pretokenizer.h"

namespace kiln::text {
namespace {

std::vector<std::string> split(PreTokenizer kind, std::string_view text) {
  auto re = PreTokenizerRegex::create(kind);
  EXPECT_TRUE(re.ok()) << re.status().to_string();
  std::vector<std::string_view> views;
  re->split(text, views);
  return {views.begin(), views.end()};
}

using Pieces = std::vector<std::string>;

TEST(PreTokenizer, KimiHanRunsAndMixedScripts) {
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "中文测试 Chinese text 日本語"),
            (Pieces{"中文测试", " Chinese", " text", " ", "日本語"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "混合English和中文mixed在一起"),
            (Pieces{"混合", "English", "和中文", "mixed", "在一起"}));
  // CJK punctuation is Script=Common (only its Script_Extensions include Han).
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "、中文。"), (Pieces{"、", "中文", "。"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "ЗДРАВСТВУЙ мир"), (Pieces{"ЗДРАВСТВУЙ", " мир"}));
}

TEST(PreTokenizer, KimiDigitGroups) {
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "1234567"), (Pieces{"123", "456", "7"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "١٢٣٤ ٥"), (Pieces{"١٢٣", "٤", " ", "٥"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "$100,000.50"), (Pieces{"$", "100", ",", "000", ".", "50"}));
}

TEST(PreTokenizer, KimiContractionsAndCase) {
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "DON'T stop, he's HERE'S we'LL"),
            (Pieces{"DON'T", " stop", ",", " he's", " HERE'S", " we'LL"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "I'm"), (Pieces{"I'm"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "won’t"), (Pieces{"won", "’t"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "HTTPServer isOK"), (Pieces{"HTTPServer", " is", "OK"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "ǅungla Ǆ ǈ"), (Pieces{"ǅungla", " Ǆ", " ǈ"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "foo.bar()"), (Pieces{"foo", ".bar", "()"}));
}

TEST(PreTokenizer, KimiWhitespaceAndNewlines) {
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "Hello\n\nworld"), (Pieces{"Hello", "\n\n", "world"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "a  \n b"), (Pieces{"a", "  \n", " b"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "  leading"), (Pieces{" ", " leading"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "abc\r\n\r\nd"), (Pieces{"abc", "\r\n\r\n", "d"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "x   y"), (Pieces{"x", "  ", " y"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "end.\n\nNext"), (Pieces{"end", ".\n\n", "Next"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "  \t\n  x"), (Pieces{"  \t\n", " ", " x"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "tab\tend"), (Pieces{"tab", "\tend"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "    "), (Pieces{"    "}));
  // U+0085 is White_Space for the reference engine.
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "a\u0085\u0085b"), (Pieces{"a", "\u0085", "\u0085b"}));
}

TEST(PreTokenizer, KimiEmojiAndCombiningMarks) {
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "hi 😀😀!"), (Pieces{"hi", " 😀😀!"}));
  EXPECT_EQ(split(PreTokenizer::kKimiK2, "x\u0301\u00ff combining"), (Pieces{"x\u0301\u00ff", " combining"}));
}

TEST(PreTokenizer, Gpt2Pattern) {
  EXPECT_EQ(split(PreTokenizer::kGpt2, "Hello world's 123 !!  x"),
            (Pieces{"Hello", " world", "'s", " 123", " !!", " ", " x"}));
  EXPECT_EQ(split(PreTokenizer::kGpt2, "DON'T"), (Pieces{"DON", "'", "T"}));
  EXPECT_EQ(split(PreTokenizer::kGpt2, "中文 1234567"), (Pieces{"中文", " 1234567"}));
}

TEST(PreTokenizer, InvalidUtf8BytesBecomeSinglePieces) {
  const std::string text = "ab\xff\xc3 cd\xe2\x82";
  const Pieces pieces = split(PreTokenizer::kKimiK2, text);
  EXPECT_EQ(pieces, (Pieces{"ab", "\xff", "\xc3", " cd", "\xe2", "\x82"}));
}

TEST(PreTokenizer, LongRunsAreLinear) {
  // Compared with EXPECT_TRUE so a failure does not print 100 KB strings.
  const std::string spaces(200000, ' ');
  EXPECT_TRUE(split(PreTokenizer::kKimiK2, spaces + "x") == (Pieces{std::string(199999, ' '), " x"}));
  for (const std::string& run : {std::string(100000, 'A'), std::string(100000, 'a'),
                                 std::string(1000000, 'Z') + "z"}) {
    const Pieces pieces = split(PreTokenizer::kKimiK2, run);
    EXPECT_EQ(pieces.size(), 1u);
    EXPECT_TRUE(!pieces.empty() && pieces[0] == run);
  }
  const std::string mixed = std::string(50000, '\n') + std::string(50000, ' ');
  std::string joined;
  for (const auto& p : split(PreTokenizer::kKimiK2, mixed)) joined += p;
  EXPECT_EQ(joined, mixed);
}

}  // namespace
}  // namespace kiln::text
