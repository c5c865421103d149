// BPE trainer (see bpe_trainer.h): unique pre-tokenized pieces with their counts, pair counts
// recomputed per merge, merges applied left to right within each piece.
#include "tools/make_model/bpe_trainer.h"

#include <map>
#include <set>
#include <unordered_map>

#include "kernels/base/check.h"

namespace kiln::text {
namespace {

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

uint64_t pair_key(int32_t l, int32_t r) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
}

std::vector<Word> unique_words(std::string_view corpus, PreTokenizer pre) {
  auto re = PreTokenizerRegex::create(pre);
  KILN_CHECK_MSG(re.ok(), re.status().to_string());
  std::vector<std::string_view> pieces;
  re->split(corpus, pieces);
  std::map<std::string_view, int64_t> counts;  // ordered: the result must not depend on hashing
  for (std::string_view p : pieces) ++counts[p];
  std::vector<Word> words;
  words.reserve(counts.size());
  for (const auto& [piece, count] : counts) {
    Word w{{}, count};
    for (char c : piece) w.symbols.push_back(static_cast<uint8_t>(c));
    if (w.symbols.size() > 1) words.push_back(std::move(w));
  }
  return words;
}

// The most frequent pair not in `banned`; 0 count when none is left.
std::pair<uint64_t, int64_t> best_pair(const std::vector<Word>& words, const std::set<uint64_t>& banned) {
  std::unordered_map<uint64_t, int64_t> counts;
  for (const Word& w : words) {
    for (size_t i = 0; i + 1 < w.symbols.size(); ++i) counts[pair_key(w.symbols[i], w.symbols[i + 1])] += w.count;
  }
  uint64_t best = 0;
  int64_t best_count = 0;
  for (const auto& [key, count] : counts) {
    if (banned.count(key) != 0) continue;
    if (count > best_count || (count == best_count && key < best)) {
      best = key;
      best_count = count;
    }
  }
  return {best, best_count};
}

void apply_merge(std::vector<Word>& words, int32_t l, int32_t r, int32_t merged) {
  for (Word& w : words) {
    std::vector<int32_t>& s = w.symbols;
    size_t out = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (i + 1 < s.size() && s[i] == l && s[i + 1] == r) {
        s[out++] = merged;
        ++i;
      } else {
        s[out++] = s[i];
      }
    }
    s.resize(out);
  }
}

}  // namespace

TrainedVocab train_bpe(std::string_view corpus, int32_t n_merges, PreTokenizer pre) {
  TrainedVocab v;
  v.pre = pre;
  for (int b = 0; b < 256; ++b) v.ranks.emplace_back(1, static_cast<char>(b));
  std::set<std::string> known(v.ranks.begin(), v.ranks.end());
  std::vector<Word> words = unique_words(corpus, pre);
  std::set<uint64_t> banned;
  while (static_cast<int32_t>(v.merges.size()) < n_merges) {
    const auto [key, count] = best_pair(words, banned);
    if (count == 0) break;
    const auto l = static_cast<int32_t>(key >> 32);
    const auto r = static_cast<int32_t>(key & 0xFFFFFFFFu);
    std::string bytes = v.ranks[l] + v.ranks[r];
    if (!known.insert(bytes).second) {
      banned.insert(key);
      continue;
    }
    const int32_t merged = v.n_ranks();
    v.ranks.push_back(std::move(bytes));
    v.merges.emplace_back(l, r);
    apply_merge(words, l, r, merged);
  }
  return v;
}

}  // namespace kiln::text
