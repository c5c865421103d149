// BPE trainer and vocabulary writers: a vocabulary trained on the built-in text, written in the HF
// and GGUF forms, loads both ways and encodes text to the same ids.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "tools/make_model/bpe_trainer.h"
#include "text/tokenizer.h"
#include "tools/make_model/vocab_writer.h"
#include "shard/mapped_file.h"

namespace kiln::text {
namespace {

namespace fs = std::filesystem;

TEST(BpeTrainer, DeterministicByteRanksThenMerges) {
  const TrainedVocab a = train_bpe(builtin_training_text(), 352, PreTokenizer::kKimiK2);
  const TrainedVocab b = train_bpe(builtin_training_text(), 352, PreTokenizer::kKimiK2);
  ASSERT_EQ(a.n_ranks(), 608);
  EXPECT_EQ(a.ranks, b.ranks);
  EXPECT_EQ(a.merges, b.merges);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(a.ranks[i], std::string(1, static_cast<char>(i)));
  for (size_t i = 0; i < a.merges.size(); ++i) {
    const auto [l, r] = a.merges[i];
    ASSERT_LT(l, static_cast<int32_t>(256 + i));
    ASSERT_LT(r, static_cast<int32_t>(256 + i));
    EXPECT_EQ(a.ranks[256 + i], a.ranks[l] + a.ranks[r]);
  }
  EXPECT_EQ(a.ranks[256], " t");  // the most frequent pair of English prose
  EXPECT_GT(builtin_training_text().size(), 4000u);
  // A tiny corpus runs out of pairs before the requested count.
  EXPECT_EQ(train_bpe("abab", 100, PreTokenizer::kGpt2).n_ranks(), 258);
}

TEST(VocabWriter, KimiSpecialLayoutMatchesMicroGguf) {
  auto s = kimi_special_tokens(608, 640);
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(s->tokens.size(), 32u);
  EXPECT_EQ(s->bos_id, 608);
  EXPECT_EQ(s->eos_id, 609);
  EXPECT_EQ(s->unk_id, 638);
  EXPECT_EQ(s->pad_id, 639);
  auto micro = GgufFile::open(std::string(KILN_TEST_DATA_DIR) + "/golden/kimi-micro-f32.gguf");
  ASSERT_TRUE(micro.ok());
  const auto tokens = micro->get_string_array("tokenizer.ggml.tokens").value();
  for (const SpecialToken& t : s->tokens) EXPECT_EQ(t.content, tokens[t.id]) << t.id;
  EXPECT_FALSE(kimi_special_tokens(608, 620).ok());
}

TEST(VocabWriter, HfAndGgufFormsEncodeAlike) {
  const TrainedVocab vocab = train_bpe(builtin_training_text(), 600, PreTokenizer::kKimiK2);
  const auto specials = kimi_special_tokens(vocab.n_ranks(), vocab.n_ranks() + 256).value();
  const std::string tmpl = "{{ messages }}";

  const fs::path dir = fs::temp_directory_path() / ("kiln_vocab_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "tiktoken.model") << tiktoken_model_text(vocab);
  std::ofstream(dir / "tokenizer_config.json") << tokenizer_config_json(vocab, specials, tmpl);
  auto hf = Tokenizer::from_hf_dir(dir.string());
  fs::remove_all(dir);
  ASSERT_TRUE(hf.ok()) << hf.status().to_string();

  GgufWriter writer;
  add_gguf_vocab(writer, vocab, specials, tmpl);
  auto gguf = GgufFile::parse(MappedFile::from_bytes(writer.serialize()));
  ASSERT_TRUE(gguf.ok()) << gguf.status().to_string();
  EXPECT_EQ(gguf->get_string("tokenizer.ggml.pre").value(), "kimi-k2");
  EXPECT_EQ(gguf->get_string("tokenizer.chat_template").value(), tmpl);
  auto gg = Tokenizer::from_gguf(*gguf);
  ASSERT_TRUE(gg.ok()) << gg.status().to_string();

  ASSERT_EQ(hf->vocab_size(), gg->vocab_size());
  for (int32_t id = 0; id < gg->vocab_size(); ++id) {
    ASSERT_EQ(hf->token_bytes(id), gg->token_bytes(id)) << id;
    ASSERT_EQ(hf->is_special(id), gg->is_special(id)) << id;
  }
  EXPECT_EQ(hf->bos_id(), gg->bos_id());
  EXPECT_EQ(hf->eos_ids(), gg->eos_ids());
  const std::string texts[] = {
      std::string(builtin_training_text()),
      "<|im_system|>system<|im_middle|>You are a helpful assistant.<|im_end|><|im_user|>user"
      "<|im_middle|>What's the weather in Zürich? 今天天气很好 😀<|im_end|>",
      "Numbers 1234567 and 3.14159, 65536.\n\n  indented\tcode\r\n",
  };
  for (const std::string& text : texts) {
    const auto ids = hf->encode(text);
    EXPECT_EQ(ids, gg->encode(text));
    EXPECT_EQ(hf->decode(ids), text);
    EXPECT_LT(ids.size(), text.size() / 2 + 40);  // the merges compress ordinary prose
  }
}

}  // namespace
}  // namespace kiln::text
