// Vocabulary writers (see vocab_writer.h). The layouts mirror kimi-micro-f32.gguf and Kimi's
// tokenizer_config.json.
#include "tools/make_model/vocab_writer.h"

#include <array>
#include <utility>

#include <boost/json.hpp>

#include "text/byte_codec.h"

namespace kiln::text {
namespace {

// Offsets from the first special id, as in the real tokenizer (163584 + offset).
constexpr std::array<std::pair<int32_t, const char*>, 15> kNamedSpecials = {{
    {0, "[BOS]"}, {1, "[EOS]"}, {2, "<|im_end|>"}, {3, "<|im_user|>"}, {4, "<|im_assistant|>"},
    {6, "<|start_header_id|>"}, {7, "<|end_header_id|>"}, {9, "[EOT]"}, {10, "<|im_system|>"},
    {11, "<|tool_calls_section_begin|>"}, {12, "<|tool_calls_section_end|>"},
    {13, "<|tool_call_begin|>"}, {14, "<|tool_call_argument_begin|>"}, {15, "<|tool_call_end|>"},
    {17, "<|im_middle|>"},
}};
constexpr int32_t kMinSpecials = 20;

}  // namespace

StatusOr<SpecialTokens> kimi_special_tokens(int32_t n_ranks, int32_t vocab_size) {
  if (n_ranks < 256 || vocab_size - n_ranks < kMinSpecials) {
    return invalid_argument("vocab_size {} leaves {} ids after {} BPE ranks; Kimi's specials need {}",
                            vocab_size, vocab_size - n_ranks, n_ranks, kMinSpecials);
  }
  SpecialTokens s;
  s.vocab_size = vocab_size;
  for (int32_t id = n_ranks; id < vocab_size; ++id) {
    s.tokens.push_back({id, fmt::format("<|reserved_token_{}|>", id)});
  }
  for (const auto& [offset, name] : kNamedSpecials) s.tokens[offset].content = name;
  s.tokens[vocab_size - 2 - n_ranks].content = "[UNK]";
  s.tokens[vocab_size - 1 - n_ranks].content = "[PAD]";
  s.bos_id = n_ranks;
  s.eos_id = n_ranks + 1;
  s.unk_id = vocab_size - 2;
  s.pad_id = vocab_size - 1;
  return s;
}

std::string tiktoken_model_text(const TrainedVocab& vocab) {
  std::string out;
  for (size_t r = 0; r < vocab.ranks.size(); ++r) {
    out += base64_encode(vocab.ranks[r]);
    out += ' ';
    out += std::to_string(r);
    out += '\n';
  }
  return out;
}

std::string tokenizer_config_json(const TrainedVocab& vocab, const SpecialTokens& specials,
                                  const std::optional<std::string>& chat_template) {
  (void)vocab;
  boost::json::object decoder;
  for (const SpecialToken& t : specials.tokens) {
    decoder[std::to_string(t.id)] = boost::json::object{
        {"content", t.content}, {"lstrip", false}, {"normalized", false},
        {"rstrip", false}, {"single_word", false}, {"special", true}};
  }
  auto content_of = [&](int32_t id) { return specials.tokens.at(id - specials.tokens.front().id).content; };
  boost::json::object config;
  config["added_tokens_decoder"] = std::move(decoder);
  config["bos_token"] = content_of(specials.bos_id);
  config["clean_up_tokenization_spaces"] = false;
  config["eos_token"] = content_of(specials.eos_id);
  config["pad_token"] = content_of(specials.pad_id);
  config["unk_token"] = content_of(specials.unk_id);
  config["tokenizer_class"] = "TikTokenTokenizer";
  config["auto_map"] = boost::json::object{
      {"AutoTokenizer", boost::json::array{"tokenization_kimi.TikTokenTokenizer", nullptr}}};
  if (chat_template) config["chat_template"] = *chat_template;
  return boost::json::serialize(config) + "\n";
}

void add_gguf_vocab(GgufWriter& writer, const TrainedVocab& vocab, const SpecialTokens& specials,
                    const std::optional<std::string>& chat_template) {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  tokens.reserve(specials.vocab_size);
  for (const std::string& bytes : vocab.ranks) {
    tokens.push_back(gpt2_bytes_to_unicode(bytes));
    types.push_back(1);  // normal
  }
  for (const SpecialToken& t : specials.tokens) {
    tokens.push_back(t.content);
    types.push_back(3);  // control
  }
  std::vector<std::string> merges;
  merges.reserve(vocab.merges.size());
  for (const auto& [l, r] : vocab.merges) {
    merges.push_back(gpt2_bytes_to_unicode(vocab.ranks[l]) + " " + gpt2_bytes_to_unicode(vocab.ranks[r]));
  }
  writer.add_string("tokenizer.ggml.model", "gpt2");
  writer.add_string("tokenizer.ggml.pre", vocab.pre == PreTokenizer::kKimiK2 ? "kimi-k2" : "gpt-2");
  writer.add_string_array("tokenizer.ggml.tokens", tokens);
  writer.add_int32_array("tokenizer.ggml.token_type", types);
  writer.add_string_array("tokenizer.ggml.merges", merges);
  writer.add_uint32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(specials.bos_id));
  writer.add_uint32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(specials.eos_id));
  writer.add_uint32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(specials.pad_id));
  writer.add_uint32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(specials.unk_id));
  writer.add_bool("tokenizer.ggml.add_bos_token", false);
  if (chat_template) writer.add_string("tokenizer.chat_template", *chat_template);
}

}  // namespace kiln::text
