// Causal conv + SiLU against ref::, including the carried state: one call over T tokens must equal
// any split into consecutive calls (decode is the T = 1 case). Tolerance: NMSE ≤ 1e-11.
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/conv.h"
#include "kernels/ref/ref.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::expect_close;
using test::random_vec;

struct ConvCase {
  int64_t T, C;
  int K;
};

TEST(CausalConv, MatchesRefWithState) {
  for (const ConvCase c : {ConvCase{1, 8, 4}, ConvCase{1, 33, 4}, ConvCase{2, 13, 4},
                           ConvCase{9, 100, 4}, ConvCase{5, 16, 1}, ConvCase{7, 24, 3}}) {
    const int64_t xs = c.C + 2, ys = c.C + 1;
    const auto x = random_vec(size_t(c.T * xs), 1, -2, 2), w = random_vec(size_t(c.C * c.K), 2);
    const auto st0 = random_vec(size_t((c.K - 1) * c.C), 3, -2, 2);
    auto st_got = st0, st_want = st0;
    std::vector<float> got(size_t(c.T * ys)), want(size_t(c.T * ys));
    cpu::causal_conv1d_silu(x.data(), xs, c.T, c.C, w.data(), c.K, st_got.data(), got.data(), ys);
    ref::causal_conv1d_silu(x.data(), xs, c.T, c.C, w.data(), c.K, st_want.data(), want.data(), ys);
    const auto what = fmt::format("T={} C={} K={}", c.T, c.C, c.K);
    expect_close(got, want, 1e-11, 1e-5, what);
    expect_close(st_got, st_want, 0.0, 0.0, what + " state");
  }
}

TEST(CausalConv, SplitCallsEqualOneCall) {
  const int64_t T = 11, C = 20;
  const int K = 4;
  const auto x = random_vec(size_t(T * C), 4, -2, 2), w = random_vec(size_t(C * K), 5);
  std::vector<float> st_one(size_t((K - 1) * C), 0.0f), one(size_t(T * C));
  cpu::causal_conv1d_silu(x.data(), C, T, C, w.data(), K, st_one.data(), one.data(), C);
  for (int64_t split = 0; split <= T; ++split) {
    for (int64_t step : {int64_t{1}, int64_t{2}, T}) {
      // [0, split) in one call, then the rest `step` tokens at a time.
      std::vector<float> st(size_t((K - 1) * C), 0.0f), out(size_t(T * C));
      cpu::causal_conv1d_silu(x.data(), C, split, C, w.data(), K, st.data(), out.data(), C);
      for (int64_t t = split; t < T; t += step) {
        const int64_t n = std::min(step, T - t);
        cpu::causal_conv1d_silu(x.data() + t * C, C, n, C, w.data(), K, st.data(),
                                out.data() + t * C, C);
      }
      expect_close(out, one, 0.0, 0.0, fmt::format("split={} step={}", split, step));
      expect_close(st, st_one, 0.0, 0.0, fmt::format("state split={} step={}", split, step));
    }
  }
}

}  // namespace
}  // namespace kiln
