// cpu::matmul and embedding_lookup against ref:: on the same stored weights, for every dtype,
// token counts on both sides of the decode/prefill switch, odd widths and strided rows.
// Tolerances: both sides read identical stored values, so only fp32 summation order differs:
// NMSE ≤ 1e-10 and |err| ≤ 1e-4·√cols for every dtype (outputs here are O(√cols)). Where matmul
// quantises the activations (decode-sized products over quantised weights), the reference is
// ref::matmul_int8_activations (same quantised activations, exact products), with the same
// tolerances; a separate test bounds its distance from f32 activations.
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/gemm_int8.h"
#include "kernels/ref/ref.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::check_matmul;
using test::expect_close;
using test::make_matrix;
using test::random_vec;

TEST(Matmul, FloatTypesAwkwardShapes) {
  for (int threads : {1, 2}) {
    cpu::ThreadPool pool(threads);
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (int64_t cols : {1, 7, 8, 33, 100, 256}) {
        for (int64_t rows : {1, 3, 17, 70}) {
          for (int64_t n : {1, 2, 3, 4, 5, 9, 13}) check_matmul(pool, dt, rows, cols, n, cols % 3);
        }
      }
    }
  }
}

TEST(Matmul, Q8AwkwardShapes) {
  for (int threads : {1, 2}) {
    for (bool exact : {false, true}) {
      cpu::ThreadPool pool(threads);
      pool.set_exact_activations(exact);
      for (int64_t cols : {32, 96, 160}) {
        for (int64_t rows : {1, 5, 17, 70}) {
          for (int64_t n : {1, 2, 3, 4, 5, 7, 13}) {
            check_matmul(pool, DType::kQ8_0, rows, cols, n, 1);
          }
        }
      }
    }
  }
}

// The activation quantiser of the integer path is bitwise the reference one (q, d and the
// per-16 sums), including all-zero blocks, ties and a block whose amax sits at its end.
TEST(Matmul, ActivationQuantiserMatchesRef) {
  const int64_t K = 512, n = 3, xs = K + 5;
  auto x = random_vec(size_t(n * xs), 41, -3.0f, 3.0f);
  std::fill_n(x.begin() + 32, 32, 0.0f);                                  // a zero block (block 32)
  for (int i = 0; i < 32; ++i) x[size_t(64 + i)] = 0.5f * float(i - 16);  // halves: ties
  x[size_t(xs + 255)] = -40.0f;                                           // the largest value last
  for (int block : {32, 256}) {
    cpu::gemm_detail::ActBuffer buf;
    const cpu::gemm_detail::ActRows a = buf.quantize(block, x.data(), xs, n, K);
    for (int64_t t = 0; t < n; ++t) {
      std::vector<int8_t> q(K);
      std::vector<float> d(size_t(K / block));
      std::vector<int16_t> bs(size_t(K / 16));
      ref::quantize_activations(block, x.data() + t * xs, K, q.data(), d.data(),
                                block == 256 ? bs.data() : nullptr);
      EXPECT_EQ(std::memcmp(q.data(), a.q + t * a.q_stride, size_t(K)), 0) << block << " " << t;
      EXPECT_EQ(std::memcmp(d.data(), a.d + t * a.d_stride, d.size() * 4), 0) << block << " " << t;
      if (block == 256) {
        EXPECT_EQ(std::memcmp(bs.data(), a.bsums + t * a.bs_stride, bs.size() * 2), 0) << t;
      }
    }
  }
}

// Decode-sized q8_0/q4_k/q6_k products do take the integer path by default, and the quantised
// activations stay close to f32 ones: per-block int8 rounding of activations uniform in
// [−1, 1] gives NMSE ≈ 1.5e-5 (expected (amax/127)²/12 over E[x²]); the bound is 1e-4.
TEST(Matmul, Int8ActivationsStayCloseToF32) {
  cpu::ThreadPool pool(2);
  for (DType dt : {DType::kQ8_0, DType::kQ4_K, DType::kQ6_K}) {
    ASSERT_EQ(cpu::matmul_int8_tokens(pool, dt, 1), 1) << dtype_name(dt);
    const int64_t rows = 96, cols = 1024, n = 2;
    const auto wf = random_vec(size_t(rows * cols), 7);
    const auto m = make_matrix(dt, rows, cols, wf.data());
    const auto x = random_vec(size_t(n * cols), 8);
    std::vector<float> got(size_t(n * rows)), want(size_t(n * rows));
    cpu::matmul(pool, m.view, x.data(), cols, n, got.data(), rows);
    ref::matmul(m.view, x.data(), cols, n, want.data(), rows);
    double err = 0.0, ref2 = 0.0;
    for (size_t i = 0; i < got.size(); ++i) {
      err += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
      ref2 += double(want[i]) * want[i];
    }
    EXPECT_LE(err / ref2, 1e-4) << dtype_name(dt);
    EXPECT_GT(err / ref2, 0.0) << dtype_name(dt) << ": the activations were not quantised";
  }
}

// A call's first int8_tokens tokens take the integer path, the others f32 activations, and every
// token's output has the same bits as when it is computed alone (with its own path) on another
// thread count: the guarantee the model's batch invariance rests on.
TEST(Matmul, TokenResultDoesNotDependOnTheCall) {
  cpu::ThreadPool two(2), one(1);
  const int64_t rows = 37, cols = 512, n = 9, n_int = 3;
  for (DType dt :
       {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0, DType::kQ4_K, DType::kQ6_K}) {
    const auto wf = random_vec(size_t(rows * cols), 3);
    const auto m = make_matrix(dt, rows, cols, wf.data());
    const auto x = random_vec(size_t(n * cols), 4);
    std::vector<float> all(static_cast<size_t>(n * rows)), alone(static_cast<size_t>(rows));
    cpu::matmul(two, m.view, x.data(), cols, n, all.data(), rows, n_int);
    const bool quantized = dt == DType::kQ8_0 || dt == DType::kQ4_K || dt == DType::kQ6_K;
    EXPECT_EQ(cpu::matmul_int8_tokens(two, dt, n, n_int), quantized ? n_int : 0);
    for (int64_t t = 0; t < n; ++t) {
      cpu::matmul(one, m.view, x.data() + t * cols, cols, 1, alone.data(), rows, t < n_int ? 1 : 0);
      EXPECT_EQ(std::memcmp(alone.data(), all.data() + t * rows, alone.size() * 4), 0)
          << dtype_name(dt) << " token " << t;
      std::vector<float> want(static_cast<size_t>(rows));
      if (quantized && t < n_int) {
        ref::matmul_int8_activations(m.view, x.data() + t * cols, cols, 1, want.data(), rows);
      } else {
        ref::matmul(m.view, x.data() + t * cols, cols, 1, want.data(), rows);
      }
      expect_close(alone, want, 1e-10, 1e-4 * std::sqrt(double(cols)),
                   fmt::format("{} token {}", dtype_name(dt), t));
    }
  }
}

TEST(Matmul, LargerShapesAllDtypes) {
  cpu::ThreadPool pool(2);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0}) {
    for (int64_t n : {1, 64, 130}) check_matmul(pool, dt, 257, 512, n, 0);
  }
  // A token block smaller than n (wide rows), so blocking over tokens is exercised.
  check_matmul(pool, DType::kBF16, 9, 8192, 40, 0);
  check_matmul(pool, DType::kF32, 9, 8192, 40, 0);
}

// Widths around the 16-element groups of the bf16 tiles (whole groups, a group of 8 left, a
// scalar tail) and token counts on both sides of the decode/prefill switch.
TEST(Matmul, FloatTypesGroupTails) {
  for (int threads : {1, 2}) {
    cpu::ThreadPool pool(threads);
    for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
      for (int64_t cols : {16, 24, 40, 1000, 1032, 1035}) {
        for (int64_t n : {1, 2, 3, 4, 7, 16, 17, 33}) check_matmul(pool, dt, 21, cols, n, 1);
      }
    }
  }
}

// A token's outputs do not depend on the rest of the batch: alone, in a batch of ≤ 16 (weights
// converted in registers) and in a batch of 20 (weights converted to an f32 buffer) the bits are
// the same, for matmul with 1 or 2 threads and for matmul_serial.
TEST(Matmul, TokenOutputsIndependentOfBatch) {
  constexpr int64_t kBatch = 20, kRows = 37;
  cpu::ThreadPool pool1(1), pool2(2);
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t cols : {7, 16, 24, 33, 40, 1000, 1032}) {
      const auto wf = random_vec(size_t(kRows * cols), uint32_t(cols));
      const auto m = make_matrix(dt, kRows, cols, wf.data(), 1);
      const int64_t xs = cols + 5;
      const auto x = random_vec(size_t(kBatch * xs), uint32_t(cols + 1));
      std::vector<float> all(size_t(kBatch * kRows));
      cpu::matmul(pool2, m.view, x.data(), xs, kBatch, all.data(), kRows);
      for (int64_t n : {1, 2, 3, 7, 16}) {
        for (int64_t t0 = 0; t0 + n <= kBatch; t0 += n) {
          std::vector<float> part(size_t(n * kRows)), serial(size_t(n * kRows));
          for (cpu::ThreadPool* pool : {&pool1, &pool2}) {
            cpu::matmul(*pool, m.view, x.data() + t0 * xs, xs, n, part.data(), kRows);
            ASSERT_EQ(std::memcmp(part.data(), all.data() + t0 * kRows, part.size() * 4), 0)
                << dtype_name(dt) << " cols=" << cols << " n=" << n << " t0=" << t0;
          }
          cpu::matmul_serial(pool1, m.view, x.data() + t0 * xs, xs, n, serial.data(), kRows);
          ASSERT_EQ(std::memcmp(serial.data(), part.data(), part.size() * 4), 0)
              << dtype_name(dt) << " serial cols=" << cols << " n=" << n << " t0=" << t0;
        }
      }
    }
  }
}

// matmul_serial runs on several threads at once (the MoE): each keeps its own scratch.
TEST(Matmul, SerialConcurrentThreads) {
  constexpr int64_t kRows = 64, kCols = 1032;
  const auto wf = random_vec(size_t(kRows * kCols), 3);
  const auto m = make_matrix(DType::kBF16, kRows, kCols, wf.data(), 0);
  cpu::ThreadPool pool(1);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      const int64_t n = i == 3 ? 20 : i + 1;  // direct and buffered paths
      const auto x = random_vec(size_t(n * kCols), uint32_t(i + 10));
      std::vector<float> got(size_t(n * kRows)), want(size_t(n * kRows));
      bool same = true;
      for (int rep = 0; rep < 50 && same; ++rep) {
        cpu::matmul_serial(pool, m.view, x.data(), kCols, n, got.data(), kRows);
        if (rep == 0) want = got;
        same = std::memcmp(got.data(), want.data(), got.size() * 4) == 0;
      }
      ok[size_t(i)] = same;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(ok[size_t(i)]) << "thread " << i;
}

TEST(EmbeddingLookup, MatchesRefAllDtypes) {
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16, DType::kQ8_0}) {
    const int64_t rows = 11, cols = 96;
    const auto wf = random_vec(size_t(rows * cols), 5);
    const auto m = make_matrix(dt, rows, cols, wf.data(), 2);
    const std::vector<int32_t> ids = {3, 0, 10, 3};
    std::vector<float> got(ids.size() * cols), want(ids.size() * cols);
    cpu::embedding_lookup(m.view, ids.data(), int64_t(ids.size()), got.data());
    ref::embedding_lookup(m.view, ids.data(), int64_t(ids.size()), want.data());
    expect_close(got, want, 0.0, 0.0, std::string(dtype_name(dt)));
  }
}

}  // namespace
}  // namespace kiln
