// The regex pre-tokenizers that cut text into pieces before byte-level BPE: Kimi K2's pattern
// (rewritten for PCRE2, which lacks class intersection) and GPT-2's. Compiled once with PCRE2
// (UTF + UCP, JIT when available); a compiled splitter is immutable and safe to share across
// threads. Input may be any bytes: invalid UTF-8 bytes become one-byte pieces.
#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include "kernels/base/status.h"

namespace kiln::text {

enum class PreTokenizer { kKimiK2, kGpt2 };

// The PCRE2 pattern used for `kind` (for logs and tests).
std::string_view pretokenizer_pattern(PreTokenizer kind);

class PreTokenizerRegex {
 public:
  static StatusOr<PreTokenizerRegex> create(PreTokenizer kind);

  // Appends the pieces of `text` to `pieces`; the pieces are views into `text` and concatenate
  // back to it exactly.
  void split(std::string_view text, std::vector<std::string_view>& pieces) const;
  PreTokenizer kind() const { return kind_; }

 private:
  void split_valid(std::string_view text, std::vector<std::string_view>& pieces) const;

  PreTokenizer kind_ = PreTokenizer::kKimiK2;
  std::shared_ptr<void> code_;  // pcre2_code_8, freed with pcre2_code_free_8
};

}  // namespace kiln::text
