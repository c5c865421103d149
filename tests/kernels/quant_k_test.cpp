// q4_k / q6_k: the reference quantisers' round-trip error (bounds documented in
// kernels/ref/quant_k.h), degenerate blocks, and cpu::matmul on k-quant weights against ref::matmul
// (dequantise-then-f32) for 1..20 tokens, odd row counts, strided rows and 1–2 threads.
#include "kernels/ref/quant_k.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/gemm.h"
#include "kernels/ref/ref.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::make_matrix;
using test::random_vec;

std::vector<float> gaussian(size_t n, uint32_t seed, float stddev) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// Quantises and dequantises x through `t`.
std::vector<float> round_trip(DType t, const std::vector<float>& x) {
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<std::byte> q(static_cast<size_t>(dtype_row_bytes(t, n)));
  if (t == DType::kQ4_K) {
    ref::quantize_row_q4_k(x.data(), reinterpret_cast<BlockQ4_K*>(q.data()), n);
  } else {
    ref::quantize_row_q6_k(x.data(), reinterpret_cast<BlockQ6_K*>(q.data()), n);
  }
  std::vector<float> y(x.size());
  dequantize_row(t, q.data(), y.data(), n);
  return y;
}

// The bounds are those of kernels/ref/quant_k.h with a small margin; the NMSE is what 4 (6) bits
// per 32- (16-) element sub-block allow on Gaussian data.
struct Bound {
  DType dtype;
  double rel_max;  // max |err| / amax of the element's 256-block
  double nmse;
};

class QuantKRoundTrip : public ::testing::TestWithParam<Bound> {};

TEST_P(QuantKRoundTrip, ErrorWithinDocumentedBound) {
  const Bound b = GetParam();
  for (uint32_t seed : {1u, 2u, 3u}) {
    for (float sd : {0.02f, 0.05f, 3.0f}) {
      std::vector<float> x = gaussian(256 * 64, seed, sd);
      if (seed == 3) {  // uniform, shifted: all-positive and all-negative blocks
        x = random_vec(256 * 64, seed, 0.5f * sd, 2.0f * sd);
        for (size_t i = 0; i < x.size() / 2; ++i) x[i] = -x[i];
      }
      const std::vector<float> y = round_trip(b.dtype, x);
      testing::WorstError worst;  // NaN-proof: a NaN in y is the worst error
      for (size_t blk = 0; blk < x.size() / 256; ++blk) {
        float amax = 0.0f;
        for (size_t i = 0; i < 256; ++i) amax = std::max(amax, std::fabs(x[blk * 256 + i]));
        for (size_t i = 0; i < 256; ++i) {
          const size_t k = blk * 256 + i;
          worst.add(testing::abs_diff(y[k], x[k]) / amax, int64_t(k));
        }
      }
      const test::ErrorStats s = test::compare(y.data(), x.data(), int64_t(x.size()));
      std::printf("[quant] %s seed %u sd %g: max |err|/amax = %.4f, nmse = %.3g\n",
                  std::string(dtype_name(b.dtype)).c_str(), seed, double(sd), worst.value, s.nmse);
      EXPECT_LE(worst.value, b.rel_max) << dtype_name(b.dtype) << " seed " << seed << " sd " << sd;
      EXPECT_LE(s.nmse, b.nmse) << dtype_name(b.dtype) << " seed " << seed << " sd " << sd;
    }
  }
}

TEST_P(QuantKRoundTrip, DegenerateBlocks) {
  const DType t = GetParam().dtype;
  std::vector<float> zeros(512, 0.0f);
  EXPECT_EQ(round_trip(t, zeros), zeros);
  // One large outlier per block: small values may collapse, the outlier must survive.
  std::vector<float> spike(512, 1e-3f);
  spike[17] = 100.0f, spike[300] = -50.0f;
  const std::vector<float> y = round_trip(t, spike);
  EXPECT_NEAR(y[17], 100.0f, 2.0f);
  EXPECT_NEAR(y[300], -50.0f, 1.0f);
  for (float v : y) EXPECT_TRUE(std::isfinite(v));
}

INSTANTIATE_TEST_SUITE_P(Types, QuantKRoundTrip,
                         ::testing::Values(Bound{DType::kQ4_K, 0.075, 7e-3},
                                           Bound{DType::kQ6_K, 0.03, 5e-4}),
                         [](const ::testing::TestParamInfo<Bound>& p) {
                           return std::string(dtype_name(p.param.dtype));
                         });

// Both sides read identical stored blocks (cpu converts rows with the same dequantiser, or takes
// integer products with the same quantised activations as ref::matmul_int8_activations), so only
// fp32 summation order differs: NMSE ≤ 1e-10, |err| ≤ 1e-4·√cols as for the other dtypes.
TEST(Matmul, KQuantsAwkwardShapes) {
  for (int threads : {1, 2}) {
    for (bool exact : {false, true}) {
      cpu::ThreadPool pool(threads);
      pool.set_exact_activations(exact);
      for (DType dt : {DType::kQ4_K, DType::kQ6_K}) {
        for (int64_t cols : {256, 768}) {
          for (int64_t rows : {1, 5, 17, 70}) {
            for (int64_t n = 1; n <= 20; ++n) test::check_matmul(pool, dt, rows, cols, n, rows % 2);
          }
        }
      }
    }
  }
}

TEST(EmbeddingLookup, KQuantsMatchRef) {
  for (DType dt : {DType::kQ4_K, DType::kQ6_K}) {
    const int64_t rows = 7, cols = 512;
    const auto wf = random_vec(size_t(rows * cols), 9);
    const auto m = make_matrix(dt, rows, cols, wf.data(), 1);
    const std::vector<int32_t> ids = {6, 0, 3, 6};
    std::vector<float> got(ids.size() * cols), want(ids.size() * cols);
    cpu::embedding_lookup(m.view, ids.data(), int64_t(ids.size()), got.data());
    ref::embedding_lookup(m.view, ids.data(), int64_t(ids.size()), want.data());
    test::expect_close(got, want, 0.0, 0.0, std::string(dtype_name(dt)));
  }
}

}  // namespace
}  // namespace kiln
