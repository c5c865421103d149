// NaN-proof error accounting for every tolerance check in the tests. A NaN or an infinity must
// never pass a check by falling out of a comparison: `std::max(m, NaN)` keeps m and `NaN > tol` is
// false, so a running maximum or an "over tolerance" test written the usual way silently accepts
// a NaN. These helpers make a NaN the worst possible error, an infinity the next worst, and keep
// that in the reported maximum; checks then assert `error <= tol`, which is false for NaN.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace kiln::testing {

// |got − want|: NaN when either is NaN, 0 when both are the same infinity, +inf when only one is
// infinite (or the two are opposite infinities).
inline double abs_diff(double got, double want) {
  if (std::isnan(got) || std::isnan(want)) return std::numeric_limits<double>::quiet_NaN();
  if (got == want) return 0.0;
  return std::fabs(got - want);
}

// True when error e is worse than the running worst w: a NaN beats everything except an earlier
// NaN (so the first one is kept), otherwise the larger value wins.
inline bool worse(double e, double w) {
  if (std::isnan(e)) return !std::isnan(w);
  return !std::isnan(w) && e > w;
}

// The running maximum of a sequence of errors with `worse`; index is where it first occurred
// (-1 while every error is 0).
struct WorstError {
  double value = 0.0;
  int64_t index = -1;
  void add(double e, int64_t i) {
    if (worse(e, value)) {
      value = e;
      index = i;
    }
  }
};

// The largest abs_diff over n elements (NaN when any element pair has a NaN, +inf for an
// infinity against a finite value) and the first index holding it.
inline WorstError max_abs_diff(const float* got, const float* want, int64_t n) {
  WorstError w;
  for (int64_t i = 0; i < n; ++i) w.add(abs_diff(got[i], want[i]), i);
  return w;
}

// The index of the largest value of row[0..n), the lowest on ties; -1 when the row holds a NaN
// (a NaN row has no meaningful argmax, so it can never match a reference's).
inline int64_t argmax_or_nan(const float* row, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(row[i])) return -1;
    if (best < 0 || row[i] > row[best]) best = i;
  }
  return best;
}

// True when every value is finite.
inline bool all_finite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

}  // namespace kiln::testing
