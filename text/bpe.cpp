// Byte-level BPE merge loop (see bpe.h). Symbols form a linked list over the piece; candidate
// pairs sit in a min-heap keyed by (rank, position) and are re-validated when popped, since a
// merge invalidates its neighbours' pairs.
#include "text/bpe.h"

#include <queue>

namespace kiln::text {
namespace {

struct Symbol {
  int32_t start;
  int32_t len;
  int32_t id;
  int32_t prev;
  int32_t next;
};

struct Candidate {
  int32_t rank;
  int32_t left;       // symbol index == position of the left symbol's first byte
  int32_t left_len;
  int32_t right_len;
  int32_t id;         // merged token
  bool operator>(const Candidate& o) const {
    return rank != o.rank ? rank > o.rank : left > o.left;
  }
};

Status check_bytes(const BytesToId& map, int32_t (&byte_token)[256]) {
  for (int b = 0; b < 256; ++b) {
    const auto it = map.find(std::string_view(std::string(1, static_cast<char>(b))));
    if (it == map.end()) return invalid_argument("vocabulary has no token for byte 0x{:02X}", b);
    byte_token[b] = it->second;
  }
  return Status::ok_status();
}

}  // namespace

StatusOr<BytePairEncoder> BytePairEncoder::from_ranks(const std::vector<std::string>& ranks) {
  BytePairEncoder e;
  e.ordinary_.reserve(ranks.size());
  for (size_t r = 0; r < ranks.size(); ++r) {
    if (!e.ordinary_.emplace(ranks[r], static_cast<int32_t>(r)).second) {
      return invalid_argument("rank {} repeats the bytes of rank {}", r, e.ordinary_[ranks[r]]);
    }
  }
  KILN_RETURN_IF_ERROR(check_bytes(e.ordinary_, e.byte_token_));
  return e;
}

StatusOr<BytePairEncoder> BytePairEncoder::from_merges(
    BytesToId ordinary, const std::vector<std::pair<std::string, std::string>>& merges,
    bool whole_piece_first, size_t* skipped) {
  BytePairEncoder e;
  e.use_merge_list_ = true;
  e.whole_piece_first_ = whole_piece_first;
  e.ordinary_ = std::move(ordinary);
  KILN_RETURN_IF_ERROR(check_bytes(e.ordinary_, e.byte_token_));
  size_t n_skipped = 0;
  e.merges_.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    const int32_t l = e.find(merges[i].first);
    const int32_t r = e.find(merges[i].second);
    const int32_t m = e.find(merges[i].first + merges[i].second);
    if (l < 0 || r < 0 || m < 0) {
      ++n_skipped;
      continue;
    }
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(l)) << 32) | static_cast<uint32_t>(r);
    e.merges_.emplace(key, PairRank{static_cast<int32_t>(i), m});  // first listing wins
  }
  if (skipped != nullptr) *skipped = n_skipped;
  return e;
}

int32_t BytePairEncoder::find(std::string_view bytes) const {
  const auto it = ordinary_.find(bytes);
  return it == ordinary_.end() ? -1 : it->second;
}

bool BytePairEncoder::pair_rank(std::string_view piece, int32_t left_start, int32_t left_id,
                                int32_t right_id, int32_t end, PairRank& out) const {
  if (use_merge_list_) {
    const uint64_t key =
        (static_cast<uint64_t>(static_cast<uint32_t>(left_id)) << 32) | static_cast<uint32_t>(right_id);
    const auto it = merges_.find(key);
    if (it == merges_.end()) return false;
    out = it->second;
    return true;
  }
  const int32_t id = find(piece.substr(left_start, end - left_start));
  if (id < 0) return false;
  out = PairRank{id, id};
  return true;
}

void BytePairEncoder::encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (whole_piece_first_ || piece.size() == 1) {
    const int32_t id = find(piece);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  const auto n = static_cast<int32_t>(piece.size());
  std::vector<Symbol> sym(n);
  for (int32_t i = 0; i < n; ++i) {
    sym[i] = Symbol{i, 1, byte_token_[static_cast<uint8_t>(piece[i])], i - 1, i + 1 < n ? i + 1 : -1};
  }
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push_pair = [&](int32_t left) {
    if (left < 0 || sym[left].next < 0) return;
    const Symbol& l = sym[left];
    const Symbol& r = sym[l.next];
    PairRank pr{};
    if (pair_rank(piece, l.start, l.id, r.id, r.start + r.len, pr)) {
      heap.push(Candidate{pr.rank, left, l.len, r.len, pr.id});
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& l = sym[c.left];
    if (l.len != c.left_len || l.next < 0 || sym[l.next].len != c.right_len) continue;
    Symbol& r = sym[l.next];
    l.len += r.len;
    l.id = c.id;
    l.next = r.next;
    if (r.next >= 0) sym[r.next].prev = c.left;
    r.len = 0;  // dead: no candidate can match len 0
    push_pair(l.prev);
    push_pair(c.left);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

}  // namespace kiln::text
