// The GPU MoE ops (route, group, combine) and greedy/top-k selection against CPU references.
// Exact: routing ids, the grouping's offsets and stable order, argmax and top-k ids and values.
// Routing weights and the combine: NMSE ≤ 1e-7 (CUDA's expf vs the host's).
//
// Routing ids are compared exactly on every token whose top-(k+1) selection scores are separated
// by more than 1e-6; two different experts closer than that could legitimately swap (CUDA's expf
// differs from the host's by up to 2 ulp, so a score by ≲ 3e-7), and such a token is left out.
// Planted ties (equal logit and bias) are computed identically on both sides and always compared.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/moe.h"
#include "kernels/cuda/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace kiln {
namespace {

using test::expect_close;
using test::gpu_context;
using test::random_vec;
using test::to_device;
using test::to_host;

// Whether token t's selection has two different experts closer than 1e-6 among its first k+1.
bool near_tie(const float* lt, const float* bias, int64_t E, int k) {
  std::vector<std::pair<double, int64_t>> s(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) {
    s[size_t(e)] = {1.0 / (1.0 + std::exp(-double(lt[e]))) + (bias ? bias[e] : 0.0), e};
  }
  std::sort(s.begin(), s.end(), [](auto a, auto b) { return a.first > b.first; });
  for (int64_t i = 0; i < std::min<int64_t>(k, E - 1); ++i) {
    const int64_t a = s[size_t(i)].second, b = s[size_t(i + 1)].second;
    const bool planted = lt[a] == lt[b] && (!bias || bias[a] == bias[b]);
    if (!planted && s[size_t(i)].first - s[size_t(i + 1)].first < 1e-6) return true;
  }
  return false;
}

void check_route(int64_t T, int64_t E, int k, bool with_bias, bool renorm,
                 const std::vector<float>& lg, const std::vector<float>& bias_values) {
  const float* bias = with_bias ? bias_values.data() : nullptr;
  std::vector<int32_t> ids(size_t(T * k));
  std::vector<float> w(ids.size());
  cpu::moe_route(lg.data(), T, E, bias, k, renorm, 2.446f, ids.data(), w.data());
  auto d_lg = to_device(lg), d_bias = to_device(bias_values);
  auto d_ids = test::device_zeros<int32_t>(T * k);
  auto d_w = test::device_zeros<float>(T * k);
  cuda::moe_route(*gpu_context(), d_lg.get(), T, E, with_bias ? d_bias.get() : nullptr, k, renorm,
                  2.446f, d_ids.get(), d_w.get());
  const auto g_ids = to_host(d_ids);
  const auto g_w = to_host(d_w);
  const auto what = fmt::format("T={} E={} k={} bias={} renorm={}", T, E, k, with_bias, renorm);
  std::vector<float> got_w, want_w;
  int64_t skipped = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (near_tie(lg.data() + t * E, bias, E, k)) {
      ++skipped;
      continue;
    }
    for (int64_t j = t * k; j < (t + 1) * k; ++j) {
      EXPECT_EQ(g_ids[size_t(j)], ids[size_t(j)]) << what << " token " << t << " slot " << j - t * k;
      got_w.push_back(g_w[size_t(j)]);
      want_w.push_back(w[size_t(j)]);
    }
  }
  EXPECT_LE(skipped, std::max<int64_t>(1, T / 4)) << what << ": too many near ties to test";
  expect_close(got_w, want_w, 1e-7, 1e-5, what + " weights");
}

TEST(CudaMoe, RouteMatchesCpu) {
  KILN_REQUIRE_GPU();
  struct Case {
    int64_t T, E;
    int k;
  };
  for (const Case c : {Case{1, 8, 1}, Case{3, 7, 7}, Case{257, 64, 6}, Case{257, 256, 8},
                       Case{3, 384, 16}, Case{257, 512, 16}, Case{1, 512, 2}}) {
    // σ is steep on [−2, 2], so the top scores are well apart (few near ties to leave out).
    const auto lg = random_vec(size_t(c.T * c.E), 1, -2, 2);
    const auto bias = random_vec(size_t(c.E), 2, -0.1f, 0.1f);
    for (bool with_bias : {false, true})
      for (bool renorm : {false, true}) check_route(c.T, c.E, c.k, with_bias, renorm, lg, bias);
  }
}

TEST(CudaMoe, RoutePlantedTies) {
  KILN_REQUIRE_GPU();
  // Logits on a coarse grid: many experts share a logit, so many equal scores.
  const int64_t T = 64, E = 256;
  auto lg = random_vec(size_t(T * E), 3, -2, 2);
  for (float& v : lg) v = std::round(v * 2.0f) / 2.0f;
  const std::vector<float> flat_bias(size_t(E), 0.03f);
  for (bool with_bias : {false, true})
    for (bool renorm : {false, true}) check_route(T, E, 8, with_bias, renorm, lg, flat_bias);
  // All equal: the lowest ids, in order.
  check_route(2, 16, 4, false, true, std::vector<float>(32, 0.5f), flat_bias);
  std::vector<int32_t> ids(3);
  auto d_lg = to_device(std::vector<float>{1, 3, 3, 0, 3});
  auto d_ids = test::device_zeros<int32_t>(3);
  auto d_w = test::device_zeros<float>(3);
  cuda::moe_route(*gpu_context(), d_lg.get(), 1, 5, nullptr, 3, true, 1.0f, d_ids.get(),
                  d_w.get());
  EXPECT_EQ(to_host(d_ids), (std::vector<int32_t>{1, 2, 4}));
  const auto w = to_host(d_w);
  EXPECT_NEAR(w[0] + w[1] + w[2], 1.0f, 1e-6);
}

// The stable counting sort of shard/ffn_block.cpp.
void cpu_group(const std::vector<int32_t>& ids, int64_t E, std::vector<int32_t>& offsets,
               std::vector<int32_t>& order) {
  offsets.assign(size_t(E + 1), 0);
  order.assign(ids.size(), -1);
  for (int32_t e : ids) ++offsets[size_t(e + 1)];
  for (int64_t e = 0; e < E; ++e) offsets[size_t(e + 1)] += offsets[size_t(e)];
  std::vector<int32_t> fill(offsets.begin(), offsets.end() - 1);
  for (size_t i = 0; i < ids.size(); ++i) order[size_t(fill[size_t(ids[i])]++)] = int32_t(i);
}

TEST(CudaMoe, GroupIsAStableCountingSort) {
  KILN_REQUIRE_GPU();
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{65536},
                    int64_t{1} << 20}) {
    for (int64_t E : {1, 8, 256, 512}) {
      // Skewed: squaring a uniform draw crowds the low experts and leaves high ones empty.
      const auto u = random_vec(size_t(n), uint32_t(n + E), 0.0f, 1.0f);
      std::vector<int32_t> ids(static_cast<size_t>(n));
      for (size_t i = 0; i < ids.size(); ++i) {
        ids[i] = std::min<int32_t>(int32_t(u[i] * u[i] * float(E)), int32_t(E - 1));
      }
      std::vector<int32_t> offsets, order;
      cpu_group(ids, E, offsets, order);
      auto d_ids = to_device(ids);
      auto d_off = to_device(std::vector<int32_t>(size_t(E + 1), -1));
      auto d_order = to_device(std::vector<int32_t>(size_t(n), -1));
      cuda::moe_group(*gpu_context(), d_ids.get(), n, E, d_off.get(), d_order.get());
      const auto what = fmt::format("n={} E={}", n, E);
      EXPECT_EQ(to_host(d_off), offsets) << what;
      EXPECT_EQ(to_host(d_order), order) << what;
    }
  }
}

TEST(CudaMoe, CombineMatchesCpuLoop) {
  KILN_REQUIRE_GPU();
  for (int64_t T : {1, 3, 257}) {
    for (int64_t k : {1, 8}) {
      for (int64_t D : {1, 100, 1027}) {
        const auto y = random_vec(size_t(T * k * D), 4, -3, 3);
        const auto w = random_vec(size_t(T * k), 5, 0, 1);
        auto want = random_vec(size_t(T * D), 6);
        auto d_y = to_device(y), d_w = to_device(w), d_out = to_device(want);
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t d = 0; d < D; ++d) {
            float acc = want[size_t(t * D + d)];
            for (int64_t j = 0; j < k; ++j) {
              acc = std::fma(w[size_t(t * k + j)], y[size_t((t * k + j) * D + d)], acc);
            }
            want[size_t(t * D + d)] = acc;
          }
        }
        cuda::moe_combine(*gpu_context(), d_y.get(), d_w.get(), T, k, D, d_out.get());
        expect_close(to_host(d_out), want, 1e-7, 1e-5,
                     fmt::format("moe_combine T={} k={} D={}", T, k, D));
      }
    }
  }
}

// Rows of logits from a coarse grid (many ties) with planted NaNs and infinities; row 1 is all
// NaN when there are ≥ 2 rows.
std::vector<float> awkward_logits(int64_t rows, int64_t vocab, uint32_t seed) {
  auto lg = random_vec(size_t(rows * vocab), seed, -8, 8);
  for (float& v : lg) v = std::round(v * 4.0f) / 4.0f;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t r = 0; r < rows; ++r) {
    float* row = lg.data() + r * vocab;
    if (r % 3 == 0) row[0] = nan;  // a NaN first: it must not win by position
    if (vocab > 5) {
      row[vocab / 2] = nan;
      row[vocab - 1] = -INFINITY;
    }
    if (vocab > 9 && r % 2 == 0) row[vocab / 3] = row[vocab - 2] = 9.0f;  // tied maxima
  }
  if (rows >= 2) std::fill_n(lg.data() + vocab, vocab, nan);
  return lg;
}

// The order both GPU ops use: larger value first, NaN last, ties by lower index.
bool ranks_before(const float* row, int32_t a, int32_t b) {
  const bool na = std::isnan(row[a]), nb = std::isnan(row[b]);
  if (na != nb) return nb;
  if (!na && row[a] != row[b]) return row[a] > row[b];
  return a < b;
}

uint32_t bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  return u;
}

TEST(CudaSampling, ArgmaxTiesAndNaN) {
  KILN_REQUIRE_GPU();
  for (int64_t rows : {1, 3, 257}) {
    for (int64_t vocab : {1, 31, 100, 1027, 4096, 163840}) {
      if (rows * vocab > 4'000'000) continue;
      const auto lg = awkward_logits(rows, vocab, uint32_t(rows + vocab));
      std::vector<int32_t> want(static_cast<size_t>(rows));
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = lg.data() + r * vocab;
        int32_t best = 0;
        for (int32_t i = 1; i < vocab; ++i)
          if (ranks_before(row, i, best)) best = i;
        want[size_t(r)] = best;
        if (!std::isnan(row[best])) {  // the lowest index of the largest number
          for (int32_t i = 0; i < vocab; ++i) {
            if (std::isnan(row[i])) continue;
            ASSERT_TRUE(row[i] < row[best] || (row[i] == row[best] && i >= best));
          }
        } else {
          EXPECT_EQ(best, 0);  // all NaN
        }
      }
      auto d_lg = to_device(lg);
      auto d_out = test::device_zeros<int32_t>(rows);
      cuda::argmax_rows(*gpu_context(), d_lg.get(), rows, vocab, d_out.get());
      EXPECT_EQ(to_host(d_out), want) << fmt::format("rows={} vocab={}", rows, vocab);
    }
  }
}

TEST(CudaSampling, TopkDescendingTiesAndNaN) {
  KILN_REQUIRE_GPU();
  for (int64_t rows : {1, 3, 257}) {
    for (int64_t vocab : {1, 31, 100, 1027, 4096, 163840}) {
      if (rows * vocab > 4'000'000) continue;
      for (int k : {1, 5, 64}) {
        if (k > vocab) continue;
        const auto lg = awkward_logits(rows, vocab, uint32_t(rows * vocab + k));
        std::vector<int32_t> want_ids(size_t(rows * k));
        std::vector<float> want_vals(want_ids.size());
        std::vector<int32_t> idx(static_cast<size_t>(vocab));
        for (int64_t r = 0; r < rows; ++r) {
          const float* row = lg.data() + r * vocab;
          std::iota(idx.begin(), idx.end(), 0);
          std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                            [&](int32_t a, int32_t b) { return ranks_before(row, a, b); });
          for (int j = 0; j < k; ++j) {
            want_ids[size_t(r * k + j)] = idx[size_t(j)];
            want_vals[size_t(r * k + j)] = row[idx[size_t(j)]];
          }
        }
        auto d_lg = to_device(lg);
        auto d_ids = test::device_zeros<int32_t>(rows * k);
        auto d_vals = test::device_zeros<float>(rows * k);
        cuda::topk_rows(*gpu_context(), d_lg.get(), rows, vocab, k, d_ids.get(), d_vals.get());
        const auto what = fmt::format("rows={} vocab={} k={}", rows, vocab, k);
        EXPECT_EQ(to_host(d_ids), want_ids) << what;
        const auto vals = to_host(d_vals);
        for (size_t i = 0; i < vals.size(); ++i) {
          ASSERT_EQ(bits(vals[i]), bits(want_vals[i])) << what << " entry " << i;
        }
      }
    }
  }
}

}  // namespace
}  // namespace kiln
