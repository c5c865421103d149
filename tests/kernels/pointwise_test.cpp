// Norms and element-wise ops against ref:: over odd widths (1, 7, 33, 100, 128) and row counts.
// Tolerance (f32, fp32 vs double accumulation and the vector exp): NMSE ≤ 1e-11, |err| ≤ 1e-5.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/norm.h"
#include "kernels/ref/ref.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::expect_close;
using test::random_vec;

constexpr double kNmse = 1e-11, kAbs = 1e-5;
const int64_t kDims[] = {1, 7, 8, 33, 100, 128};

TEST(Norm, RmsNormAndFusedAdd) {
  for (int64_t dim : kDims) {
    for (int64_t rows : {1, 3}) {
      const auto x = random_vec(size_t(rows * dim), 1, -3, 3), w = random_vec(size_t(dim), 2);
      std::vector<float> got(x.size()), want(x.size());
      cpu::rms_norm(x.data(), w.data(), rows, dim, 1e-5f, got.data());
      ref::rms_norm(x.data(), w.data(), rows, dim, 1e-5f, want.data());
      expect_close(got, want, kNmse, kAbs, fmt::format("rms_norm dim={} rows={}", dim, rows));
      // In place (y aliases x).
      auto inplace = x;
      cpu::rms_norm(inplace.data(), w.data(), rows, dim, 1e-5f, inplace.data());
      expect_close(inplace, want, kNmse, kAbs, fmt::format("rms_norm in place dim={}", dim));

      const auto d = random_vec(x.size(), 3);
      auto h_got = x, h_want = x;
      cpu::add_rms_norm(h_got.data(), d.data(), w.data(), rows, dim, 1e-6f, got.data());
      ref::add_rms_norm(h_want.data(), d.data(), w.data(), rows, dim, 1e-6f, want.data());
      expect_close(h_got, h_want, 0.0, 0.0, fmt::format("add_rms_norm residual dim={}", dim));
      expect_close(got, want, kNmse, kAbs, fmt::format("add_rms_norm dim={}", dim));
    }
  }
}

TEST(Norm, L2NormScaled) {
  for (int64_t dim : kDims) {
    auto got = random_vec(size_t(4 * dim), 4, -2, 2);
    auto want = got;
    cpu::l2_norm(got.data(), 4, dim, 1e-6f, 0.125f);
    ref::l2_norm(want.data(), 4, dim, 1e-6f, 0.125f);
    expect_close(got, want, kNmse, kAbs, fmt::format("l2_norm dim={}", dim));
  }
  // A zero row stays finite (eps inside the sqrt).
  std::vector<float> z(16, 0.0f);
  cpu::l2_norm(z.data(), 1, 16, 1e-6f, 1.0f);
  for (float v : z) EXPECT_EQ(v, 0.0f);
}

TEST(Norm, GatedRmsNormSigmoid) {
  for (int64_t dim : kDims) {
    const auto o = random_vec(size_t(5 * dim), 5, -2, 2), z = random_vec(size_t(5 * dim), 6, -8, 8);
    const auto w = random_vec(size_t(dim), 7);
    std::vector<float> got(o.size()), want(o.size());
    cpu::gated_rms_norm_sigmoid(o.data(), z.data(), w.data(), 5, dim, 1e-5f, got.data());
    ref::gated_rms_norm_sigmoid(o.data(), z.data(), w.data(), 5, dim, 1e-5f, want.data());
    expect_close(got, want, kNmse, kAbs, fmt::format("gated_rms_norm dim={}", dim));
  }
}

TEST(Elementwise, SiluMulAxpySigmoid) {
  for (int64_t n : {1, 7, 8, 33, 100, 1000}) {
    const auto g = random_vec(size_t(n), 8, -30, 30), u = random_vec(size_t(n), 9);
    std::vector<float> got(static_cast<size_t>(n)), want(static_cast<size_t>(n));
    cpu::silu_mul(g.data(), u.data(), n, got.data());
    ref::silu_mul(g.data(), u.data(), n, want.data());
    expect_close(got, want, kNmse, kAbs, fmt::format("silu_mul n={}", n));
    auto alias = g;  // out aliases gate
    cpu::silu_mul(alias.data(), u.data(), n, alias.data());
    expect_close(alias, want, kNmse, kAbs, fmt::format("silu_mul aliased n={}", n));

    auto y = u;
    cpu::axpy(0.5f, g.data(), n, y.data());
    for (int64_t i = 0; i < n; ++i) ASSERT_FLOAT_EQ(y[size_t(i)], u[size_t(i)] + 0.5f * g[size_t(i)]);

    auto s = g;
    cpu::sigmoid_inplace(s.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_NEAR(s[size_t(i)], 1.0 / (1.0 + std::exp(-double(g[size_t(i)]))), 1e-6) << i;
    }
  }
}

}  // namespace
}  // namespace kiln
