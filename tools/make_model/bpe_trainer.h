// A small deterministic byte-level BPE trainer, used to give generated demo models a real
// vocabulary (not meant for production-size vocabularies: each merge rescans the unique pieces).
// Ranks 0..255 are the single bytes in byte order; merge i creates rank 256 + i.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "text/pretokenizer.h"

namespace kiln::text {

struct TrainedVocab {
  std::vector<std::string> ranks;                   // [n_ranks] token bytes, id = rank
  std::vector<std::pair<int32_t, int32_t>> merges;  // [n_ranks - 256] (left, right) of rank 256+i
  PreTokenizer pre = PreTokenizer::kKimiK2;
  int32_t n_ranks() const { return static_cast<int32_t>(ranks.size()); }
};

// Learns up to `n_merges` merges on `corpus` split with `pre` (fewer when no pair is left).
// The most frequent adjacent pair wins; ties go to the smallest (left, right) rank pair. A pair
// whose bytes already exist as a token is never merged again, so ranks stay unique.
TrainedVocab train_bpe(std::string_view corpus, int32_t n_merges, PreTokenizer pre);

// A few KB of plain prose (mostly English, some other scripts) to train demo vocabularies on.
std::string_view builtin_training_text();

}  // namespace kiln::text
