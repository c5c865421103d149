// Tokenizer::from_gguf: the tokenizer.ggml.* keys llama.cpp's converter writes for byte-level BPE
// vocabularies ("gpt2" model). Ordinary tokens are stored in GPT-2 byte-to-unicode form, control
// and user-defined tokens as their text. Pairs are ranked by merge-list order, as llama.cpp does.
#include <charconv>

#include "text/byte_codec.h"
#include "text/tokenizer.h"
#include "text/tokenizer_state.h"

namespace kiln::text {
namespace {

// llama.cpp token types.
enum TokenType : int64_t {
  kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6,
};

StatusOr<PreTokenizer> pre_tokenizer_named(const GgufFile& gguf) {
  const auto pre = gguf.get_string("tokenizer.ggml.pre");
  if (!pre.ok()) {
    if (pre.status().code() == StatusCode::kNotFound) return PreTokenizer::kGpt2;
    return pre.status();
  }
  if (*pre == "kimi-k2") return PreTokenizer::kKimiK2;
  if (*pre == "gpt-2" || *pre == "gpt2") return PreTokenizer::kGpt2;
  return unimplemented("tokenizer.ggml.pre '{}' is not supported (kimi-k2, gpt-2)", *pre);
}

// Bytes of token `id`: ordinary tokens are GPT-2 byte-to-unicode text, <0xXX> byte tokens one byte.
StatusOr<std::string> ordinary_bytes(const std::string& text, int64_t type, size_t id) {
  if (type == kByte && text.size() == 6 && text.rfind("<0x", 0) == 0 && text[5] == '>') {
    unsigned v = 0;
    const auto [end, ec] = std::from_chars(text.data() + 3, text.data() + 5, v, 16);
    if (ec == std::errc() && end == text.data() + 5) return std::string(1, static_cast<char>(v));
  }
  auto bytes = gpt2_unicode_to_bytes(text);
  if (!bytes || bytes->empty()) {
    return invalid_argument("tokenizer.ggml.tokens[{}] '{}' is not GPT-2 byte-level text", id, text);
  }
  return std::move(*bytes);
}

StatusOr<std::vector<std::pair<std::string, std::string>>> parse_merges(const GgufFile& gguf) {
  KILN_ASSIGN_OR_RETURN(const auto merges, gguf.get_string_array("tokenizer.ggml.merges"));
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const size_t sp = merges[i].find(' ', 1);
    if (sp == std::string::npos) {
      return invalid_argument("tokenizer.ggml.merges[{}] '{}' is not 'left right'", i, merges[i]);
    }
    auto left = gpt2_unicode_to_bytes(merges[i].substr(0, sp));
    auto right = gpt2_unicode_to_bytes(merges[i].substr(sp + 1));
    if (!left || !right) {
      return invalid_argument("tokenizer.ggml.merges[{}] '{}' is not GPT-2 byte-level text", i, merges[i]);
    }
    out.emplace_back(std::move(*left), std::move(*right));
  }
  return out;
}

std::optional<int32_t> optional_id(const GgufFile& gguf, const std::string& key, size_t vocab) {
  const auto v = gguf.get_int(key);
  if (!v.ok() || *v < 0 || static_cast<size_t>(*v) >= vocab) return std::nullopt;
  return static_cast<int32_t>(*v);
}

}  // namespace

StatusOr<Tokenizer> Tokenizer::from_gguf(const GgufFile& gguf) {
  KILN_ASSIGN_OR_RETURN(const std::string model, gguf.get_string("tokenizer.ggml.model"));
  if (model != "gpt2") {
    return unimplemented("tokenizer.ggml.model '{}' is not supported (only byte-level BPE 'gpt2')", model);
  }
  KILN_ASSIGN_OR_RETURN(const PreTokenizer pre, pre_tokenizer_named(gguf));
  KILN_ASSIGN_OR_RETURN(const auto tokens, gguf.get_string_array("tokenizer.ggml.tokens"));
  std::vector<int64_t> types(tokens.size(), kNormal);
  if (gguf.find("tokenizer.ggml.token_type") != nullptr) {
    KILN_ASSIGN_OR_RETURN(types, gguf.get_int_array("tokenizer.ggml.token_type"));
    if (types.size() != tokens.size()) {
      return invalid_argument("tokenizer.ggml.token_type has {} entries for {} tokens", types.size(),
                              tokens.size());
    }
  }
  auto state = std::make_shared<TokenizerState>();
  state->id_bytes.resize(tokens.size());
  state->special.assign(tokens.size(), 0);
  BytesToId ordinary;
  for (size_t id = 0; id < tokens.size(); ++id) {
    if (types[id] == kNormal || types[id] == kByte) {
      KILN_ASSIGN_OR_RETURN(state->id_bytes[id], ordinary_bytes(tokens[id], types[id], id));
      ordinary.emplace(state->id_bytes[id], static_cast<int32_t>(id));
    } else {
      state->id_bytes[id] = tokens[id];
      state->special[id] = types[id] == kControl || types[id] == kUserDefined || types[id] == kUnknown;
    }
  }
  KILN_ASSIGN_OR_RETURN(const auto merges, parse_merges(gguf));
  auto bpe = BytePairEncoder::from_merges(std::move(ordinary), merges, /*whole_piece_first=*/false);
  if (!bpe.ok()) return bpe.status().with_context("tokenizer.ggml.tokens");
  state->bpe = std::move(bpe).value();
  KILN_ASSIGN_OR_RETURN(state->pre, PreTokenizerRegex::create(pre));
  index_specials(*state);
  state->bos = optional_id(gguf, "tokenizer.ggml.bos_token_id", tokens.size());
  state->file_eos = optional_id(gguf, "tokenizer.ggml.eos_token_id", tokens.size());
  return Tokenizer(std::move(state));
}

}  // namespace kiln::text
