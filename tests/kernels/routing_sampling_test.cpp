// MoE routing vs ref (ids exact, ties to the lower index; weights NMSE ≤ 1e-12), softmax and
// argmax vs ref, sample_token's filters checked by sweeping u over [0, 1), and its edges: u just
// below 1 and rows with nothing above −∞.
#include <cmath>
#include <map>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/moe.h"
#include "kernels/cpu/sampling.h"
#include "kernels/ref/ref.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::expect_close;
using test::random_vec;

void check_route(int64_t T, int64_t E, int k, bool with_bias, bool renorm, std::vector<float> lg) {
  const auto bias = random_vec(size_t(E), 11, -0.1f, 0.1f);
  const float* b = with_bias ? bias.data() : nullptr;
  std::vector<int32_t> ids(size_t(T * k)), ids_ref(ids.size());
  std::vector<float> w(ids.size()), w_ref(ids.size());
  cpu::moe_route(lg.data(), T, E, b, k, renorm, 2.446f, ids.data(), w.data());
  ref::moe_route(lg.data(), T, E, b, k, renorm, 2.446f, ids_ref.data(), w_ref.data());
  const auto what = fmt::format("T={} E={} k={} bias={} renorm={}", T, E, k, with_bias, renorm);
  EXPECT_EQ(ids, ids_ref) << what;
  expect_close(w, w_ref, 1e-12, 1e-6, what);
}

TEST(MoeRoute, MatchesRef) {
  for (bool bias : {false, true})
    for (bool renorm : {false, true}) {
      check_route(5, 256, 8, bias, renorm, random_vec(5 * 256, 1, -4, 4));
      check_route(1, 5, 5, bias, renorm, random_vec(5, 2, -4, 4));
      check_route(3, 7, 1, bias, renorm, random_vec(21, 3, -4, 4));
    }
  // Ties everywhere: equal logits must pick the lowest indices, in index order.
  check_route(2, 16, 4, false, true, std::vector<float>(32, 0.5f));
  std::vector<int32_t> ids(3);
  std::vector<float> w(3);
  const std::vector<float> lg = {1, 3, 3, 0, 3};
  cpu::moe_route(lg.data(), 1, 5, nullptr, 3, true, 1.0f, ids.data(), w.data());
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 2, 4}));
  EXPECT_NEAR(w[0] + w[1] + w[2], 1.0f, 1e-6);
}

TEST(Sampling, SoftmaxAndArgmax) {
  for (int64_t n : {1, 7, 100, 5000}) {
    auto got = random_vec(size_t(n), 4, -20, 20);
    auto want = got;
    EXPECT_EQ(cpu::argmax(got.data(), n), ref::argmax(got.data(), n));
    cpu::softmax(got.data(), n);
    ref::softmax(want.data(), n);
    expect_close(got, want, 1e-12, 1e-6, fmt::format("softmax n={}", n));
  }
  const std::vector<float> tie = {1, 5, 2, 5};
  EXPECT_EQ(cpu::argmax(tie.data(), 4), 1);
}

// A NaN ranks below every number wherever it stands (the GPU's argmax_rows order): the first
// element is not a winner by default.
TEST(Argmax, NaNRanksBelowEveryNumber) {
  const float nan = std::nanf("");
  const std::vector<std::vector<float>> rows = {
      {nan, 1, 2}, {2, nan, 1}, {1, 2, nan}, {nan, -INFINITY, nan}, {nan, nan, -3, -3}};
  const std::vector<int32_t> want = {2, 0, 1, 1, 2};
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto n = static_cast<int64_t>(rows[r].size());
    EXPECT_EQ(cpu::argmax(rows[r].data(), n), want[r]) << "row " << r;
    EXPECT_EQ(ref::argmax(rows[r].data(), n), want[r]) << "row " << r;
  }
  const std::vector<float> all_nan = {nan, nan};
  EXPECT_EQ(cpu::argmax(all_nan.data(), 2), 0);
}

// Frequencies of each token over u = (i + 0.5) / n_u.
std::map<int32_t, double> sweep(const std::vector<float>& lg, const cpu::SamplingParams& p) {
  std::vector<std::pair<float, int32_t>> scratch;
  std::map<int32_t, double> f;
  const int n_u = 20000;
  for (int i = 0; i < n_u; ++i) {
    f[cpu::sample_token(lg.data(), int64_t(lg.size()), p, (i + 0.5) / n_u, scratch)] += 1.0 / n_u;
  }
  return f;
}

TEST(Sampling, FiltersAndDistribution) {
  const std::vector<float> lg = {std::log(0.1f), std::log(0.4f), std::log(0.2f), std::log(0.3f)};
  auto near = [](std::map<int32_t, double> f, std::map<int32_t, double> want) {
    ASSERT_EQ(f.size(), want.size());
    for (auto [k, v] : want) EXPECT_NEAR(f[k], v, 1e-3) << "token " << k;
  };
  near(sweep(lg, {}), {{0, 0.1}, {1, 0.4}, {2, 0.2}, {3, 0.3}});
  near(sweep(lg, {.temperature = 0.0f}), {{1, 1.0}});
  near(sweep(lg, {.top_k = 2}), {{1, 4.0 / 7}, {3, 3.0 / 7}});
  near(sweep(lg, {.top_k = 1}), {{1, 1.0}});
  // top-p 0.7: 0.4 + 0.3 reaches it exactly → {1, 3}; 0.75 needs 2 as well.
  near(sweep(lg, {.top_p = 0.65f}), {{1, 4.0 / 7}, {3, 3.0 / 7}});
  near(sweep(lg, {.top_p = 0.75f}), {{1, 4.0 / 9}, {3, 3.0 / 9}, {2, 2.0 / 9}});
  near(sweep(lg, {.top_p = 0.01f}), {{1, 1.0}});
  // min-p 0.45: keep p ≥ 0.18 → {1, 2, 3}.
  near(sweep(lg, {.min_p = 0.45f}), {{1, 4.0 / 9}, {2, 2.0 / 9}, {3, 3.0 / 9}});
  near(sweep(lg, {.min_p = 1.0f}), {{1, 1.0}});
  // Temperature 2 flattens: p ∝ sqrt(p).
  const double z = std::sqrt(0.1) + std::sqrt(0.4) + std::sqrt(0.2) + std::sqrt(0.3);
  near(sweep(lg, {.temperature = 2.0f}), {{0, std::sqrt(0.1) / z}, {1, std::sqrt(0.4) / z},
                                           {2, std::sqrt(0.2) / z}, {3, std::sqrt(0.3) / z}});
  // u at the very top still returns a valid token.
  std::vector<std::pair<float, int32_t>> scratch;
  const int32_t t = cpu::sample_token(lg.data(), 4, {}, 0.99999994f, scratch);
  EXPECT_TRUE(t >= 0 && t < 4);
}

// u is taken in double: the largest u below 1 (which a float would round to 1) still lands on a
// token that has probability, never on an excluded (−∞) or underflowed one.
TEST(Sampling, UJustBelowOneDrawsOnlyTokensWithProbability) {
  std::vector<std::pair<float, int32_t>> scratch;
  const double top = std::nextafter(1.0, 0.0);
  const std::vector<float> banned_last = {0.0f, 1.0f, -INFINITY};
  EXPECT_EQ(cpu::sample_token(banned_last.data(), 3, {}, top, scratch), 1);
  // exp(-200) underflows to 0 in float: token 1 is a candidate with p = 0.
  const std::vector<float> underflow = {0.0f, -200.0f};
  EXPECT_EQ(cpu::sample_token(underflow.data(), 2, {}, top, scratch), 0);
  EXPECT_EQ(cpu::sample_token(underflow.data(), 2, {.top_k = 2}, top, scratch), 0);
  // Just below the first token's share (1/2 of two equal logits): still the first token.
  const std::vector<float> even = {0.0f, 0.0f};
  EXPECT_EQ(cpu::sample_token(even.data(), 2, {}, std::nextafter(0.5, 0.0), scratch), 0);
  EXPECT_EQ(cpu::sample_token(even.data(), 2, {}, 0.5, scratch), 1);
}

// A row with nothing above −∞ (all −∞, all NaN, or a mix) has no candidate: −1, for the caller
// to fall back on, never a NaN-driven pick. Greedy parameters still give the argmax.
TEST(Sampling, RowWithoutCandidatesReturnsMinusOne) {
  std::vector<std::pair<float, int32_t>> scratch;
  const float nan = std::nanf("");
  const std::vector<std::vector<float>> rows = {
      {-INFINITY, -INFINITY, -INFINITY}, {nan, nan}, {nan, -INFINITY, nan}};
  for (size_t r = 0; r < rows.size(); ++r) {
    const auto n = static_cast<int64_t>(rows[r].size());
    for (double u : {0.0, 0.5, std::nextafter(1.0, 0.0)}) {
      EXPECT_EQ(cpu::sample_token(rows[r].data(), n, {}, u, scratch), -1) << "row " << r;
      EXPECT_EQ(cpu::sample_token(rows[r].data(), n, {.top_k = 1, .top_p = 0.5f}, u, scratch), -1)
          << "row " << r;
    }
    EXPECT_EQ(cpu::sample_token(rows[r].data(), n, {.temperature = 0.0f}, 0.5, scratch),
              cpu::argmax(rows[r].data(), n));
  }
  // +∞ is every temperature's limit: the argmax.
  const std::vector<float> inf = {0.0f, INFINITY, 1.0f};
  EXPECT_EQ(cpu::sample_token(inf.data(), 3, {}, 0.0, scratch), 1);
}

}  // namespace
}  // namespace kiln
