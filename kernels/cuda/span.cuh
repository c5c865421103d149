// Device-side helpers for batches of sequences (ops.h Span): which span a batch row belongs to.
#pragma once

#include <cstdint>

#include "kernels/cuda/ops.h"

namespace kiln::cuda {

// The span holding batch row t: the last span with begin ≤ t. Spans are in row order and tile
// [0, n_rows), so that span also has t < begin + n (empty spans before it share its begin).
__device__ inline int find_span(const Span* spans, int n_spans, int64_t t) {
  int lo = 0, hi = n_spans - 1;  // invariant: spans[lo].begin ≤ t (spans[0].begin = 0)
  while (lo < hi) {
    const int mid = lo + (hi - lo + 1) / 2;
    if (spans[mid].begin <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

}  // namespace kiln::cuda
