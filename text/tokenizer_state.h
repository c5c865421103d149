// Internal: the shared, immutable state behind a Tokenizer, and the helper the loaders use to
// finish building it (special-token matcher, lookup maps). Not part of the public API.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <vector>

#include "text/bpe.h"
#include "text/pretokenizer.h"

namespace kiln::text {

struct TokenizerState {
  BytePairEncoder bpe;
  PreTokenizerRegex pre;
  std::vector<std::string> id_bytes;   // [vocab] bytes of each id (a special's content)
  std::vector<uint8_t> special;        // [vocab] 1 for special/control tokens
  BytesToId special_ids;               // special content -> id
  // Specials recognised in text, grouped by first byte, longest first.
  std::array<std::vector<int32_t>, 256> special_by_first_byte;
  std::optional<int32_t> bos;
  std::optional<int32_t> file_eos;
};

// Fills special_ids and special_by_first_byte from id_bytes/special.
void index_specials(TokenizerState& state);

}  // namespace kiln::text
