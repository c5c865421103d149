// Helpers shared by the kernel parity tests: seeded random data, stored-dtype weight matrices,
// and an error report (max abs error, NMSE, first mismatch) for cpu-vs-ref comparisons.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>

#include "kernels/base/dtype.h"
#include "kernels/base/matrix.h"
#include "kernels/cpu/gemm.h"
#include "kernels/ref/quant_k.h"
#include "kernels/ref/ref.h"
#include "tests/common/compare.h"

namespace kiln::test {

inline std::vector<float> random_vec(size_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

// A [rows][cols] weight matrix stored in `dtype`, with `pad` extra elements (or q8 blocks) per
// row so rows are strided. Owns its bytes.
struct StoredMatrix {
  std::vector<std::byte> bytes;
  MatrixView view;
};

inline StoredMatrix make_matrix(DType dtype, int64_t rows, int64_t cols, const float* src,
                                int64_t pad = 0) {
  StoredMatrix m;
  const int64_t stride = dtype_row_bytes(dtype, cols) + pad * dtype_block_bytes(dtype);
  m.bytes.resize(static_cast<size_t>(rows * stride + 64));
  for (int64_t r = 0; r < rows; ++r) {
    std::byte* dst = m.bytes.data() + r * stride;
    const float* s = src + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      switch (dtype) {
        case DType::kF32:
          std::memcpy(dst + 4 * c, &s[c], 4);
          break;
        case DType::kF16: {
          const uint16_t h = f32_to_f16(s[c]);
          std::memcpy(dst + 2 * c, &h, 2);
          break;
        }
        case DType::kBF16: {
          const uint16_t h = f32_to_bf16(s[c]);
          std::memcpy(dst + 2 * c, &h, 2);
          break;
        }
        case DType::kQ8_0:
        case DType::kQ4_K:
        case DType::kQ6_K:
          break;  // whole rows below
      }
    }
    if (dtype == DType::kQ8_0) quantize_row_q8_0(s, reinterpret_cast<BlockQ8_0*>(dst), cols);
    if (dtype == DType::kQ4_K) ref::quantize_row_q4_k(s, reinterpret_cast<BlockQ4_K*>(dst), cols);
    if (dtype == DType::kQ6_K) ref::quantize_row_q6_k(s, reinterpret_cast<BlockQ6_K*>(dst), cols);
  }
  m.view = {dtype, m.bytes.data(), rows, cols, stride};
  return m;
}

struct ErrorStats {
  double max_abs = 0.0;
  double nmse = 0.0;  // Σ(a−b)² / Σb²
  int64_t worst = -1;
  std::string describe(const float* got, const float* want) const {
    if (worst < 0) return fmt::format("max_abs={:.3g} nmse={:.3g}", max_abs, nmse);
    return fmt::format("max_abs={:.3g} nmse={:.3g} worst index {}: got {} want {}", max_abs, nmse,
                       worst, got[worst], want[worst]);
  }
};

// NaN-proof (tests/common/compare.h): a NaN on either side, or any non-finite reference value
// (it would make the NMSE and a tolerance scaled by it meaningless), makes max_abs and nmse NaN and
// worst the first such index; an infinity against a finite reference makes them +inf.
inline ErrorStats compare(const float* got, const float* want, int64_t n) {
  ErrorStats s;
  testing::WorstError w;
  double num = 0.0, den = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = std::isfinite(want[i]) ? testing::abs_diff(got[i], want[i])
                                            : std::numeric_limits<double>::quiet_NaN();
    w.add(d, i);
    num += d * d;
    den += double(want[i]) * want[i];
  }
  s.max_abs = w.value;
  s.worst = w.index;
  s.nmse = den > 0 ? num / den : num;
  return s;
}

// Fails with the full error report unless NMSE ≤ max_nmse and max_abs ≤ max_abs_err.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& want,
                         double max_nmse, double max_abs_err, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const ErrorStats s = compare(got.data(), want.data(), static_cast<int64_t>(got.size()));
  EXPECT_TRUE(s.nmse <= max_nmse && s.max_abs <= max_abs_err)
      << what << ": " << s.describe(got.data(), want.data()) << " (limits nmse " << max_nmse
      << ", abs " << max_abs_err << ")";
}

// cpu::matmul against its ref twin on a random [rows][cols] matrix stored in dt (pad elements or
// blocks per row) and n strided tokens: ref::matmul_int8_activations where matmul takes the
// tokens through its integer path, else ref::matmul. Both read identical stored values, so only
// fp32 summation order differs: NMSE ≤ 1e-10 and |err| ≤ 1e-4·√cols (outputs are O(√cols)).
inline void check_matmul(cpu::ThreadPool& pool, DType dt, int64_t rows, int64_t cols, int64_t n,
                         int64_t pad) {
  SCOPED_TRACE(fmt::format("exact activations: {}", pool.exact_activations()));
  const auto wf = random_vec(size_t(rows * cols), uint32_t(rows * 31 + cols));
  const auto m = make_matrix(dt, rows, cols, wf.data(), pad);
  const int64_t xs = cols + 3, ys = rows + 5;  // strided token rows on both sides
  const auto x = random_vec(size_t(n * xs), uint32_t(n + 7));
  std::vector<float> got(size_t(n * ys), 0.0f), want(size_t(n * ys), 0.0f);
  cpu::matmul(pool, m.view, x.data(), xs, n, got.data(), ys);
  if (cpu::matmul_int8_tokens(pool, dt, n) == n) {
    ref::matmul_int8_activations(m.view, x.data(), xs, n, want.data(), ys);
  } else {
    ref::matmul(m.view, x.data(), xs, n, want.data(), ys);
  }
  expect_close(got, want, 1e-10, 1e-4 * std::sqrt(double(cols)),
               fmt::format("{} rows={} cols={} n={} pad={} threads={}", dtype_name(dt), rows, cols,
                           n, pad, pool.size()));
}

}  // namespace kiln::test
