// The comparison helpers themselves: a NaN or an infinity in the logits under test (or a NaN in
// the reference) is a mismatch everywhere it can be reported: the maximum error, the first bad
// index, the argmax check and the kernel tests' error report.
#include <cmath>
#include <limits>
#include <vector>

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include "kernels/cpu/sampling.h"
#include "parity_util.h"
#include "tests/common/compare.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int64_t kVocab = 8;
constexpr double kTol = 1e-4;

// Three rows of 8 logits, each with a clear top-1 (margin 1.0) at column 2 + row.
std::vector<float> reference_rows() {
  std::vector<float> v(3 * kVocab);
  for (int64_t r = 0; r < 3; ++r) {
    for (int64_t j = 0; j < kVocab; ++j) v[r * kVocab + j] = 0.1f * float(j) - 0.5f;
    v[r * kVocab + 2 + r] = 3.0f;
  }
  return v;
}

TEST(CompareLogits, IdenticalRowsPass) {
  const auto want = reference_rows();
  const auto c = testing::compare_logits(want, want, kVocab, kTol, 1e-3);
  EXPECT_EQ(c.max_abs, 0.0);
  EXPECT_EQ(c.first_bad, -1);
  EXPECT_EQ(c.non_finite, 0);
  EXPECT_EQ(c.argmax_mismatches, 0);
}

// One value replaced in `got` (row 1, col 6: not the top, so the argmax does not move).
struct Plant {
  const char* name;
  float value;
  bool nan;  // the reported maximum is NaN (else +inf)
};

void PrintTo(const Plant& p, std::ostream* os) { *os << p.name; }

class PlantedInGot : public ::testing::TestWithParam<Plant> {};

TEST_P(PlantedInGot, IsAMismatchEverywhere) {
  const Plant p = GetParam();
  const auto want = reference_rows();
  auto got = want;
  const int64_t at = 1 * kVocab + 6;
  got[at] = p.value;
  got[2 * kVocab + 1] += 0.5f;  // a larger finite error after it must not hide it
  const auto c = testing::compare_logits(got, want, kVocab, kTol, 1e-3);
  EXPECT_FALSE(c.max_abs <= kTol) << testing::describe(c, got, want, kVocab);
  if (p.nan) {
    EXPECT_TRUE(std::isnan(c.max_abs)) << testing::describe(c, got, want, kVocab);
    EXPECT_TRUE(std::isnan(c.max_rel)) << testing::describe(c, got, want, kVocab);
  } else {
    EXPECT_EQ(c.max_abs, INFINITY) << testing::describe(c, got, want, kVocab);
  }
  EXPECT_EQ(c.first_bad, at) << testing::describe(c, got, want, kVocab);
  EXPECT_EQ(c.non_finite, 1);
  // +inf takes the argmax; -inf does not move it (max_abs catches it); a NaN row has no argmax.
  EXPECT_EQ(c.argmax_mismatches, p.value == -kInf ? 0 : 1)
      << testing::describe(c, got, want, kVocab);
}

INSTANTIATE_TEST_SUITE_P(Values, PlantedInGot,
                         ::testing::Values(Plant{"NaN", kNaN, true}, Plant{"PlusInf", kInf, false},
                                           Plant{"MinusInf", -kInf, false}),
                         [](const ::testing::TestParamInfo<Plant>& i) { return i.param.name; });

TEST(CompareLogits, NaNInTheReferenceIsAMismatch) {
  auto want = reference_rows();
  const auto got = want;
  want[5] = kNaN;
  const auto c = testing::compare_logits(got, want, kVocab, kTol, 1e-3);
  EXPECT_TRUE(std::isnan(c.max_abs));
  EXPECT_EQ(c.first_bad, 5);
  EXPECT_EQ(c.non_finite, 1);
  EXPECT_EQ(c.argmax_mismatches, 1);
}

// A NaN at column 0 of a row whose reference top is column 0: cpu::argmax stops at a NaN in
// front, so the argmax looks unchanged; the row must still be a mismatch.
TEST(CompareLogits, NaNRowWithUnchangedArgmaxIsAMismatch) {
  auto want = reference_rows();
  want[0] = 5.0f;  // row 0's top is now column 0
  auto got = want;
  for (int64_t j = 0; j < kVocab; ++j) got[j] = kNaN;
  const auto c = testing::compare_logits(got, want, kVocab, kTol, 1e-3);
  EXPECT_EQ(cpu::argmax(got.data(), kVocab), 0);  // what fooled the old check
  EXPECT_EQ(c.argmax_mismatches, 1);
  EXPECT_FALSE(c.max_abs <= kTol);
  EXPECT_EQ(c.first_bad, 0);
}

TEST(CompareLogits, DifferentSizesFailTheTolerance) {
  const auto want = reference_rows();
  const std::vector<float> got(want.begin(), want.end() - kVocab);
  testing::Comparison c;
  EXPECT_NONFATAL_FAILURE(c = testing::compare_logits(got, want, kVocab, kTol, 1e-3), "got.size()");
  EXPECT_EQ(c.max_abs, INFINITY);
}

TEST(CompareHelpers, AbsDiffAndWorse) {
  EXPECT_TRUE(std::isnan(testing::abs_diff(1.0, kNaN)));
  EXPECT_TRUE(std::isnan(testing::abs_diff(kNaN, 1.0)));
  EXPECT_EQ(testing::abs_diff(kInf, kInf), 0.0);
  EXPECT_EQ(testing::abs_diff(kInf, -kInf), INFINITY);
  EXPECT_EQ(testing::abs_diff(-kInf, 3.0), INFINITY);
  EXPECT_EQ(testing::abs_diff(1.0, 3.5), 2.5);
  EXPECT_TRUE(testing::worse(kNaN, 1e30));
  EXPECT_FALSE(testing::worse(1e30, kNaN));
  EXPECT_FALSE(testing::worse(kNaN, kNaN));  // the first NaN is kept
  EXPECT_TRUE(testing::worse(kInf, 1e30));
  EXPECT_FALSE(testing::worse(1.0, 1.0));
}

TEST(CompareHelpers, MaxAbsDiffKeepsTheFirstNaN) {
  const std::vector<float> want = {0, 0, 0, 0, 0};
  const std::vector<float> got = {0.5f, kNaN, 9.0f, kNaN, kInf};
  const testing::WorstError w = testing::max_abs_diff(got.data(), want.data(), 5);
  EXPECT_TRUE(std::isnan(w.value));
  EXPECT_EQ(w.index, 1);
  const std::vector<float> inf_got = {0.5f, kInf, 9.0f};
  const testing::WorstError v = testing::max_abs_diff(inf_got.data(), want.data(), 3);
  EXPECT_EQ(v.value, INFINITY);
  EXPECT_EQ(v.index, 1);
}

TEST(CompareHelpers, ArgmaxOrNaN) {
  const std::vector<float> row = {1.0f, 4.0f, 4.0f, -kInf};
  EXPECT_EQ(testing::argmax_or_nan(row.data(), 4), 1);  // lowest index on ties
  const std::vector<float> with_nan = {1.0f, 4.0f, kNaN, 2.0f};
  EXPECT_EQ(testing::argmax_or_nan(with_nan.data(), 4), -1);
  EXPECT_FALSE(testing::all_finite(row.data(), 4));
  EXPECT_TRUE(testing::all_finite(row.data(), 3));
}

// The kernel tests' report: a NaN followed by finite errors keeps max_abs NaN and points at it.
TEST(CompareHelpers, KernelErrorStatsKeepNaN) {
  const std::vector<float> want = {1, 2, 3, 4, 5, 6};
  std::vector<float> got = want;
  got[2] = kNaN;
  got[4] += 1e-3f;
  const test::ErrorStats s = test::compare(got.data(), want.data(), 6);
  EXPECT_TRUE(std::isnan(s.max_abs));
  EXPECT_TRUE(std::isnan(s.nmse));
  EXPECT_EQ(s.worst, 2);
  got[2] = -kInf;
  const test::ErrorStats t = test::compare(got.data(), want.data(), 6);
  EXPECT_EQ(t.max_abs, INFINITY);
  EXPECT_EQ(t.worst, 2);
  EXPECT_FALSE(t.nmse <= 1.0);
  // An infinite reference fails even where got matches it (it would blind the NMSE).
  std::vector<float> inf_want = want;
  inf_want[3] = kInf;
  const test::ErrorStats u = test::compare(inf_want.data(), inf_want.data(), 6);
  EXPECT_TRUE(std::isnan(u.max_abs));
  EXPECT_TRUE(std::isnan(u.nmse));
  EXPECT_EQ(u.worst, 3);
}

}  // namespace
}  // namespace kiln
