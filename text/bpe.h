// Byte-level BPE over one pre-tokenized piece. Two rankings of adjacent pairs:
//  * token rank (tiktoken): a pair's rank is the rank of its concatenated bytes (id = rank);
//  * merge list (GGUF / llama.cpp): a pair's rank is the index of "left right" in the merge list.
// The lowest-ranked pair (leftmost on ties) is merged until none is left; a heap keeps this
// O(n log n) per piece. Immutable after construction; safe to share across threads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/base/status.h"

namespace kiln::text {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using BytesToId = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BytePairEncoder {
 public:
  // `ranks[r]` = bytes of the token with rank (and id) r. Every single byte must be a token.
  static StatusOr<BytePairEncoder> from_ranks(const std::vector<std::string>& ranks);
  // `ordinary` maps token bytes to ids (specials excluded); `merges[i]` = (left bytes, right bytes)
  // with rank i. Merges whose parts or result are not tokens are skipped (returned in `skipped`).
  // `whole_piece_first`: a piece that is itself a token is emitted directly (llama.cpp's
  // ignore_merges, which its kimi-k2 pre-tokenizer sets and gpt2 does not).
  static StatusOr<BytePairEncoder> from_merges(
      BytesToId ordinary, const std::vector<std::pair<std::string, std::string>>& merges,
      bool whole_piece_first, size_t* skipped = nullptr);

  // Appends the ids of `piece` to `out`.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const;
  // Id of the ordinary token with exactly these bytes, or -1.
  int32_t find(std::string_view bytes) const;

 private:
  struct PairRank { int32_t rank; int32_t id; };
  bool pair_rank(std::string_view piece, int32_t left_start, int32_t left_id, int32_t right_id,
                 int32_t end, PairRank& out) const;

  bool use_merge_list_ = false;
  bool whole_piece_first_ = true;
  BytesToId ordinary_;
  int32_t byte_token_[256] = {};
  // Merge-list ranking: (left id << 32 | right id) -> (rank, merged id).
  std::unordered_map<uint64_t, PairRank> merges_;
};

}  // namespace kiln::text
