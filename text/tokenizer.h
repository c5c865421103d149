// kiln's tokenizer: Kimi's tiktoken-style byte-level BPE (and GPT-2's, for test vocabularies),
// loaded from a Hugging Face directory (tiktoken.model + tokenizer_config.json) or from a GGUF's
// tokenizer.ggml.* keys. Encoding = split on special-token text (optional), pre-tokenizer regex,
// BPE per piece. A Tokenizer is immutable after loading, cheap to copy (shared state) and safe
// to use from many threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "text/pretokenizer.h"
#include "kernels/base/status.h"
#include "shard/gguf.h"

namespace kiln::text {

struct TokenizerState;

class Tokenizer {
 public:
  // HF layout: tiktoken.model (base64 token bytes, a space, the rank, one per line) and
  // tokenizer_config.json (added_tokens_decoder: id -> {content, special}). Ids in
  // [n_ranks, n_ranks + 256) without a name become <|reserved_token_{id}|>. Errors name the file
  // and line.
  static StatusOr<Tokenizer> from_hf_dir(const std::string& dir);
  // GGUF tokenizer.ggml.*: model "gpt2", tokens in GPT-2 byte-to-unicode form, merges "a b",
  // token_type (1 normal, 3 control, 4 user-defined, 6 byte, ...), pre "kimi-k2" or "gpt-2".
  static StatusOr<Tokenizer> from_gguf(const GgufFile& gguf);

  // allow_special: text equal to a special token's content becomes that token (longest first).
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true) const;
  // Raw bytes of the tokens concatenated (not necessarily valid UTF-8); unknown ids are skipped.
  std::string decode(const std::vector<int32_t>& ids) const;
  // Bytes of one token (a special's content); empty for an id out of range.
  const std::string& token_bytes(int32_t id) const;
  // Exact match over ordinary token bytes and special contents.
  std::optional<int32_t> find_token(std::string_view content) const;
  int32_t vocab_size() const;  // number of ids, specials included
  bool is_special(int32_t id) const;
  // End-of-generation ids: [EOS], <|im_end|>, [EOT] when present, plus the file's eos id.
  std::vector<int32_t> eos_ids() const;
  std::optional<int32_t> bos_id() const;
  PreTokenizer pre_tokenizer() const;

 private:
  explicit Tokenizer(std::shared_ptr<const TokenizerState> state) : state_(std::move(state)) {}
  std::shared_ptr<const TokenizerState> state_;
};

// UTF-8-safe incremental decoder for streaming: holds back an incomplete multi-byte sequence
// until it completes; bytes that can no longer form a character come out as U+FFFD (one per
// maximal invalid subpart). Not thread-safe; one per stream. Keeps a reference to the tokenizer.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  // Text that became complete with this token.
  std::string push(int32_t id);
  // Whatever is held back, with U+FFFD for an incomplete tail; resets the decoder.
  std::string flush();

 private:
  std::string drain(bool final);
  const Tokenizer& tokenizer_;
  std::string pending_;
};

}  // namespace kiln::text
