// Batch: one step of work for every rank, in the one form it has from the scheduler to the
// kernels. The scheduler builds it, the engine broadcasts it as the step plan, every rank applies
// its resets and new pages to its state and runs the forward over it. Spans are in the order the
// logits come back in; their tokens are concatenated in `ids` in the same order.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

namespace kiln {

// One sequence's part of a batch.
struct BatchSpan {
  int32_t slot = 0;         // the sequence's state slot
  bool reset = false;       // a new sequence: zero the slot's state and empty its block table first
  bool all_logits = false;  // logits for every token (prompt logprobs), else for the last one
  int64_t begin = 0;        // its tokens are ids[begin, begin + n)
  int64_t n = 0;            // > 0
  int64_t pages_begin = 0;  // its new pages are new_pages[pages_begin, pages_begin + n_pages),
  int64_t n_pages = 0;      // appended to the slot's block table (after a reset)
  bool operator==(const BatchSpan&) const = default;
};

struct Batch {
  std::vector<BatchSpan> spans;
  std::vector<int32_t> ids;        // every span's tokens, in span order
  std::vector<int32_t> new_pages;  // every span's new pages, in span order

  // A literal sequence, for building a batch in one expression (tools and tests).
  struct Seq {
    int32_t slot = 0;
    std::vector<int32_t> tokens;
    bool all_logits = false;
  };
  static Batch of(std::initializer_list<Seq> seqs) {
    Batch b;
    for (const Seq& s : seqs) b.add(s.slot, s.tokens, s.all_logits);
    return b;
  }

  // Appends a span with `tokens` (not empty) after the others.
  void add(int32_t slot, std::span<const int32_t> tokens, bool all_logits = false,
           bool reset = false, std::span<const int32_t> pages = {}) {
    spans.push_back({slot, reset, all_logits, static_cast<int64_t>(ids.size()),
                     static_cast<int64_t>(tokens.size()), static_cast<int64_t>(new_pages.size()),
                     static_cast<int64_t>(pages.size())});
    ids.insert(ids.end(), tokens.begin(), tokens.end());
    new_pages.insert(new_pages.end(), pages.begin(), pages.end());
  }
  void clear() {
    spans.clear();
    ids.clear();
    new_pages.clear();
  }
  bool empty() const { return spans.empty(); }
  int64_t n_tokens() const { return static_cast<int64_t>(ids.size()); }
  // Rows of logits the forward returns: per span, n when all_logits, else 1.
  int64_t n_logit_rows() const {
    int64_t rows = 0;
    for (const BatchSpan& s : spans) rows += s.all_logits ? s.n : 1;
    return rows;
  }
  std::span<const int32_t> tokens(const BatchSpan& s) const {
    return {ids.data() + s.begin, static_cast<size_t>(s.n)};
  }
  std::span<const int32_t> pages(const BatchSpan& s) const {
    return {new_pages.data() + s.pages_begin, static_cast<size_t>(s.n_pages)};
  }
  bool operator==(const Batch&) const = default;
};

}  // namespace kiln
