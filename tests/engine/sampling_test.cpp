// SequenceSampler: draw frequencies over seeded runs against the filtered softmax (fixed absolute
// tolerances), penalties and bias checked exactly on crafted rows, banned ids and the all-banned
// fallback; token_logprob against a direct double-precision log-softmax.
#include "cluster/engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace kiln::serve {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr int kDraws = 20000;
constexpr double kTol = 0.015;  // absolute, per token; ≈ 5σ at p = 0.5 over 20,000 draws

// Samples `draws` tokens from fresh copies of `row` (sample() scribbles on its input).
std::vector<double> frequencies(const SamplingOptions& o, const std::vector<float>& row,
                                int draws = kDraws, uint64_t seed = 1,
                                std::vector<int32_t> banned = {}) {
  SequenceSampler s(o, seed, int64_t(row.size()));
  std::vector<double> f(row.size(), 0.0);
  std::vector<float> scratch;
  for (int i = 0; i < draws; ++i) {
    scratch = row;
    const int32_t t = s.sample(scratch.data(), {}, banned);
    EXPECT_TRUE(t >= 0 && t < int32_t(row.size())) << t;
    if (t >= 0 && t < int32_t(row.size())) f[size_t(t)] += 1.0 / draws;
  }
  return f;
}

// softmax(row / t) restricted to `keep` (all when empty), renormalised, in double.
std::vector<double> expected(const std::vector<float>& row, double t, std::set<int> keep = {}) {
  std::vector<double> p(row.size(), 0.0);
  double z = 0.0;
  for (size_t i = 0; i < row.size(); ++i)
    if (keep.empty() || keep.count(int(i))) z += p[i] = std::exp(double(row[i]) / t);
  for (auto& x : p) x /= z;
  return p;
}

void expect_matches(const std::vector<double>& got, const std::vector<double>& want,
                    const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (want[i] == 0.0)
      EXPECT_EQ(got[i], 0.0) << what << ": token " << i << " is outside the filter";
    else
      EXPECT_NEAR(got[i], want[i], kTol) << what << ": token " << i;
  }
}

std::vector<float> log_probs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(float(std::log(x)));
  return l;
}

SamplingOptions greedy() {
  SamplingOptions o;
  o.temperature = 0.0f;
  return o;
}

const std::vector<float> kRow = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};

TEST(SequenceSampler, TemperatureOneMatchesSoftmax) {
  expect_matches(frequencies({}, kRow), expected(kRow, 1.0), "t=1");
}

TEST(SequenceSampler, TemperatureHalfSharpens) {
  SamplingOptions o;
  o.temperature = 0.5f;
  const auto f = frequencies(o, kRow);
  expect_matches(f, expected(kRow, 0.5), "t=0.5");
  EXPECT_GT(f[1], expected(kRow, 1.0)[1] + 0.1);  // the best token gains (0.44 → 0.64)
}

TEST(SequenceSampler, TopKKeepsTheBestAndRenormalises) {
  SamplingOptions o;
  o.top_k = 2;
  expect_matches(frequencies(o, kRow), expected(kRow, 1.0, {1, 4}), "top_k=2");
  // Equal logits: ties go to the lower ids.
  expect_matches(frequencies(o, std::vector<float>(6, 0.25f)), {0.5, 0.5, 0, 0, 0, 0}, "ties");
  o.top_k = -1;  // off
  expect_matches(frequencies(o, kRow), expected(kRow, 1.0), "top_k=-1");
}

TEST(SequenceSampler, TopPKeepsExactlyTheNucleus) {
  // Probabilities 0.06 0.30 0.04 0.50 0.10: sorted 0.5 (< 0.6), +0.3 reaches 0.6 → {3, 1}.
  const auto row = log_probs({0.06, 0.30, 0.04, 0.50, 0.10});
  SamplingOptions o;
  o.top_p = 0.6f;
  expect_matches(frequencies(o, row), {0, 0.375, 0, 0.625, 0}, "top_p=0.6");
  o.top_p = 0.45f;  // the best alone already covers it
  expect_matches(frequencies(o, row), {0, 0, 0, 1, 0}, "top_p=0.45");
  o.top_p = 0.85f;  // 0.5 + 0.3 = 0.8 < 0.85 → also 0.10
  expect_matches(frequencies(o, row), {0, 0.3 / 0.9, 0, 0.5 / 0.9, 0.1 / 0.9}, "top_p=0.85");
}

// The top-k, then top-p set by a full sort: top-p's mass is that of the top-k survivors.
std::set<int> top_k_top_p(const std::vector<float>& row, size_t k, double top_p) {
  const auto p = expected(row, 1.0);
  std::vector<int> order(row.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
  order.resize(std::min(k, order.size()));
  double mass = 0.0;
  for (int id : order) mass += p[size_t(id)];
  std::set<int> keep;
  double cum = 0.0;
  for (int id : order) {
    if (cum >= top_p * mass) break;
    keep.insert(id);
    cum += p[size_t(id)];
  }
  return keep;
}

TEST(SequenceSampler, TopPOnALargerRowWithAndWithoutTopK) {
  // 64 random logits: the unsorted (quickselect) path alone, and the sorted path after top-k.
  std::mt19937 gen(5);
  std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
  std::vector<float> row(64);
  for (auto& x : row) x = dist(gen);
  SamplingOptions o;
  o.top_p = 0.5f;
  const auto nucleus = top_k_top_p(row, row.size(), 0.5);
  ASSERT_GT(nucleus.size(), 5u);
  expect_matches(frequencies(o, row, 40000), expected(row, 1.0, nucleus), "top_p=0.5");
  o.top_k = 20;
  const auto after_k = top_k_top_p(row, 20, 0.5);
  ASSERT_LT(after_k.size(), nucleus.size());
  expect_matches(frequencies(o, row, 40000), expected(row, 1.0, after_k), "top_k=20 top_p=0.5");
}

TEST(SequenceSampler, MinPFiltersRelativeToTheMax) {
  // Relative to the max 0.5: 1, 0.6, 0.2, 0.12, 0.08; min_p 0.15 keeps the first three.
  const auto row = log_probs({0.5, 0.3, 0.1, 0.06, 0.04});
  SamplingOptions o;
  o.min_p = 0.15f;
  expect_matches(frequencies(o, row), {0.5 / 0.9, 0.3 / 0.9, 0.1 / 0.9, 0, 0}, "min_p=0.15");
}

TEST(SequenceSampler, SeedsAreReproducibleAndDistinct) {
  const std::vector<float> row(50, 0.0f);
  auto run = [&](uint64_t seed) {
    SequenceSampler s({}, seed, int64_t(row.size()));
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) {
      auto r = row;
      out.push_back(s.sample(r.data(), {}, {}));
      s.accept(out.back());
    }
    return out;
  };
  EXPECT_EQ(run(42), run(42));
  EXPECT_NE(run(42), run(43));
}

TEST(SequenceSampler, PenaltiesFollowTheFormulas) {
  // Greedy leaves the penalised row in the scratch: check every value exactly.
  SamplingOptions o = greedy();
  o.repetition_penalty = 1.5f;
  o.frequency_penalty = 0.5f;
  o.presence_penalty = 0.25f;
  o.logit_bias = {{3, -1.0f}, {99, 5.0f}, {-1, 5.0f}};  // out-of-range ids are ignored
  SequenceSampler s(o, 1, 6);
  s.accept(2);
  s.accept(5);
  s.accept(2);
  std::vector<float> row = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f, -2.0f};
  const std::vector<int32_t> prompt = {0, 1, 0, 0};  // repeats penalised once
  const std::vector<int32_t> banned = {4, 7};
  EXPECT_EQ(s.sample(row.data(), prompt, banned), 3);
  EXPECT_FLOAT_EQ(row[0], 2.0f / 1.5f);
  EXPECT_FLOAT_EQ(row[1], -1.0f * 1.5f);
  EXPECT_FLOAT_EQ(row[2], 0.5f / 1.5f - (0.5f * 2 + 0.25f));
  EXPECT_FLOAT_EQ(row[3], 3.0f - 1.0f);
  EXPECT_EQ(row[4], -kInf);
  EXPECT_FLOAT_EQ(row[5], -2.0f * 1.5f - (0.5f * 1 + 0.25f));
  // A second call sees the same penalties (the seen mask was cleared).
  std::vector<float> again = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f, -2.0f};
  s.sample(again.data(), prompt, banned);
  EXPECT_EQ(again, row);
}

TEST(SequenceSampler, PenaltiesChangeGreedyChoices) {
  auto choose = [](SamplingOptions o, std::vector<float> row, std::vector<int32_t> prompt,
                   std::vector<int32_t> generated) {
    SequenceSampler s(o, 1, int64_t(row.size()));
    for (int32_t t : generated) s.accept(t);
    return s.sample(row.data(), prompt, {});
  };
  SamplingOptions o = greedy();
  EXPECT_EQ(choose(o, {1.0f, 0.9f}, {0}, {}), 0);
  o.repetition_penalty = 1.2f;
  EXPECT_EQ(choose(o, {1.0f, 0.9f}, {0}, {}), 1);    // 1 / 1.2 < 0.9
  EXPECT_EQ(choose(o, {-1.0f, -1.1f}, {}, {0}), 1);  // −1 · 1.2 < −1.1, generated counts too
  o = greedy();
  o.frequency_penalty = 0.25f;
  EXPECT_EQ(choose(o, {1.0f, 0.6f}, {}, {0}), 0);        // 0.75 > 0.6
  EXPECT_EQ(choose(o, {1.0f, 0.6f}, {}, {0, 0}), 1);     // 0.5 < 0.6
  EXPECT_EQ(choose(o, {1.0f, 0.6f}, {0, 0, 0}, {}), 0);  // the prompt does not count
  o = greedy();
  o.presence_penalty = 0.3f;
  EXPECT_EQ(choose(o, {1.0f, 0.8f}, {}, {0}), 1);  // 0.7 whatever the count
  o.presence_penalty = 0.1f;
  EXPECT_EQ(choose(o, {1.0f, 0.8f}, {}, {0, 0, 0}), 0);
}

TEST(SequenceSampler, GreedyTakesTheLowestIdOnTies) {
  SequenceSampler s(greedy(), 1, 4);
  std::vector<float> row = {1.0f, 3.0f, 3.0f, 2.0f};
  EXPECT_EQ(s.sample(row.data(), {}, {}), 1);
}

TEST(SequenceSampler, LogitBiasExcludesAndForces) {
  const std::vector<float> flat(5, 0.0f);
  SamplingOptions o;
  o.logit_bias = {{2, -100.0f}};
  expect_matches(frequencies(o, flat, 10000), {0.25, 0.25, 0, 0.25, 0.25}, "bias -100");
  o.logit_bias = {{3, 100.0f}};
  expect_matches(frequencies(o, flat, 10000), {0, 0, 0, 1, 0}, "bias +100");
}

TEST(SequenceSampler, BannedIdsAreNeverDrawn) {
  SamplingOptions o;
  expect_matches(frequencies(o, kRow, kDraws, 3, {1, 3}), expected(kRow, 1.0, {0, 2, 4}),
                 "banned 1 3");
  o.top_k = 1;  // the best is banned: the next best
  expect_matches(frequencies(o, kRow, 1000, 3, {1}), {0, 0, 0, 0, 1}, "top_k=1 banned best");
  SequenceSampler s(greedy(), 1, 5);
  auto row = kRow;
  const std::vector<int32_t> banned = {1};
  EXPECT_EQ(s.sample(row.data(), {}, banned), 4);
}

TEST(SequenceSampler, AllBannedFallsBackToTheRawArgmax) {
  const std::vector<float> row = {0.5f, 3.0f, 1.0f};
  const std::vector<int32_t> all = {2, 0, 1};
  for (float t : {0.0f, 1.0f}) {
    SamplingOptions o;
    o.temperature = t;
    o.logit_bias = {{2, 5.0f}};  // changes the order: the fallback ignores it
    SequenceSampler s(o, 1, 3);
    auto r = row;
    EXPECT_EQ(s.sample(r.data(), {}, all), 1) << "temperature " << t;
  }
  // A row with nothing finite still gives a valid id.
  SequenceSampler s({}, 1, 3);
  std::vector<float> dead(3, -kInf);
  EXPECT_EQ(s.sample(dead.data(), {}, {}), 0);
}

TEST(TokenLogprob, MatchesDoubleLogSoftmax) {
  std::mt19937 gen(9);
  for (int64_t vocab : {1, 7, 1000, 4099}) {
    for (float scale : {1.0f, 12.0f}) {
      std::uniform_real_distribution<float> dist(-scale, scale);
      std::vector<float> row(static_cast<size_t>(vocab));
      for (auto& x : row) x = dist(gen) + 40.0f;  // an offset: the max subtraction matters
      const auto copy = row;
      double mx = -INFINITY, z = 0.0;
      for (float x : row) mx = std::max(mx, double(x));
      for (float x : row) z += std::exp(double(x) - mx);
      auto lp = [&](int32_t i) { return double(row[size_t(i)]) - mx - std::log(z); };
      std::vector<int32_t> order(row.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return row[size_t(a)] > row[size_t(b)]; });
      for (int32_t token : {int32_t(0), int32_t(vocab / 2), int32_t(vocab - 1)}) {
        const auto r = token_logprob(row.data(), vocab, token, 20);
        const std::string what = "vocab " + std::to_string(vocab) + " token " +
                                 std::to_string(token) + " scale " + std::to_string(scale);
        EXPECT_EQ(r.token, token);
        EXPECT_NEAR(r.logprob, lp(token), 1e-5) << what;
        ASSERT_EQ(r.top.size(), size_t(std::min<int64_t>(20, vocab))) << what;
        for (size_t i = 0; i < r.top.size(); ++i) {
          EXPECT_EQ(r.top[i].first, order[i]) << what << " rank " << i;
          EXPECT_NEAR(r.top[i].second, lp(order[i]), 1e-5) << what << " rank " << i;
        }
      }
      EXPECT_EQ(row, copy);  // not modified
    }
  }
}

TEST(TokenLogprob, TiesClampsAndInfinities) {
  const std::vector<float> row = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f};
  auto r = token_logprob(row.data(), 5, 3, 3);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].first, 1);
  EXPECT_EQ(r.top[1].first, 2);
  EXPECT_EQ(r.top[2].first, 4);
  EXPECT_EQ(r.top[0].second, r.top[2].second);
  EXPECT_TRUE(token_logprob(row.data(), 5, 0, 0).top.empty());
  EXPECT_EQ(token_logprob(row.data(), 5, 0, 50).top.size(), 5u);  // clamped to the vocabulary
  const std::vector<float> big(100, 0.0f);
  r = token_logprob(big.data(), 100, 7, 50);  // clamped to 20
  ASSERT_EQ(r.top.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(r.top[size_t(i)].first, i);
  EXPECT_NEAR(r.logprob, -std::log(100.0), 1e-6);
  // −∞ entries: −∞ themselves, no mass; an all −∞ row counts as uniform.
  const std::vector<float> masked = {0.0f, -kInf, 0.0f};
  EXPECT_EQ(token_logprob(masked.data(), 3, 1, 0).logprob, -kInf);
  EXPECT_NEAR(token_logprob(masked.data(), 3, 2, 0).logprob, -std::log(2.0), 1e-6);
  const std::vector<float> dead(4, -kInf);
  EXPECT_NEAR(token_logprob(dead.data(), 4, 3, 0).logprob, -std::log(4.0), 1e-6);
}

}  // namespace
}  // namespace kiln::serve
