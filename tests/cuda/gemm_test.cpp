// cuda::matmul, grouped_matmul and embedding_lookup against the CPU twins (cpu::matmul,
// cpu::embedding_lookup) on the same stored weights, for f32/f16/bf16/q8_0/q4_k/q6_k, token
// counts on both sides of the GEMV/cuBLAS switch, odd widths, padded weight rows and strided x/y.
// Tolerances (NMSE = Σ(got−want)²/Σwant²; outputs here are O(√cols), so abs limits scale by √cols),
// the same for every dtype and path: NMSE ≤ 1e-7, |err| ≤ 1e-4·√cols.
//  - GEMV path (n ≤ 16) and grouped_matmul: weights decoded exactly, activations f32, only the
//    fp32 summation order differs.
//  - cuBLAS path (n > 16), f32 and q8_0/q4_k/q6_k (dequantised exactly to f32): f32 GEMM, no TF32.
//  - cuBLAS path, f16/bf16: x split into 16-bit hi + lo (error ≤ 2^-16·|x|), two GEMMs.
//  Measured worst NMSE in the emulator (cuBLAS emulated with double accumulation; printed by
//  CudaMatmul.AllDtypesAwkwardShapes): GEMV ≤ 2e-12 for f32/f16/bf16/q8_0/q4_k, 2e-11 for q6_k;
//  cuBLAS ≈ 2e-13 for f32/f16/q8_0/q4_k/q6_k and 6e-12 for bf16 (rounding x to bf16 once, as a
//  single 16-bit GEMM would, gives ≈ 3e-6).
//  - embedding_lookup: exact.
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cuda/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace kiln {
namespace {

using test::DeviceVec;
using test::expect_close;
using test::gpu_context;
using test::make_matrix;
using test::random_vec;
using test::to_device;
using test::to_host;

// The CPU twin with f32 activations throughout, as the GPU kernels compute.
cpu::ThreadPool& pool() {
  static cpu::ThreadPool p(4);
  p.set_exact_activations(true);
  return p;
}

constexpr double kMaxNmse = 1e-7;
constexpr double kAbsPerSqrtCols = 1e-4;

constexpr DType kDtypes[] = {DType::kF32,  DType::kF16,  DType::kBF16,
                             DType::kQ8_0, DType::kQ4_K, DType::kQ6_K};

bool is_k_quant(DType dt) { return dt == DType::kQ4_K || dt == DType::kQ6_K; }

// Row widths of the sweeps: the k-quants need multiples of 256 (their super-block).
std::vector<int64_t> sweep_cols(DType dt) {
  if (is_k_quant(dt)) return {256, 512, 4352};
  return {32, 96, 4128};
}

// The worst NMSE seen per dtype and matmul path (0: GEMV, 1: cuBLAS), printed by the sweep.
double worst_nmse[std::size(kDtypes)][2] = {};

void record_nmse(DType dt, int64_t n, double nmse) {
  double& w = worst_nmse[static_cast<size_t>(dt)][n > cuda::kGemvMaxRows ? 1 : 0];
  if (testing::worse(nmse, w)) w = nmse;  // a NaN is kept, not dropped as std::max would
}

// One matmul case: weight rows padded by `pad` elements (blocks for the quantised dtypes); x and
// y rows strided
// by x_extra / y_extra floats beyond their packed width. The gaps of y start at zero on both sides,
// so a write outside [n][rows] shows up as an error.
void check_matmul(DType dt, int64_t rows, int64_t cols, int64_t n, int64_t pad, int64_t x_extra,
                  int64_t y_extra) {
  const std::string what = fmt::format("{} rows={} cols={} n={} pad={} xs+={} ys+={}",
                                       dtype_name(dt), rows, cols, n, pad, x_extra, y_extra);
  const auto wf = random_vec(size_t(rows * cols), uint32_t(rows * 31 + cols));
  const auto m = make_matrix(dt, rows, cols, wf.data(), pad);
  const int64_t xs = cols + x_extra, ys = rows + y_extra;
  const auto x = random_vec(size_t(n * xs), uint32_t(n * 7 + cols));
  std::vector<float> want(size_t(n * ys), 0.0f);
  cpu::matmul(pool(), m.view, x.data(), xs, n, want.data(), ys);

  const auto dw = to_device(m.view);
  const DeviceVec<float> dx = to_device(x);
  const DeviceVec<float> dy = test::device_zeros<float>(n * ys);
  const Status s = gpu_context()->reserve_scratch(cuda::matmul_scratch_bytes(dw.m, n));
  ASSERT_TRUE(s.ok()) << s.message();
  cuda::matmul(*gpu_context(), dw.m, dx.get(), xs, n, dy.get(), ys);
  const std::vector<float> got = to_host(dy);
  record_nmse(dt, n, test::compare(got.data(), want.data(), int64_t(got.size())).nmse);
  expect_close(got, want, kMaxNmse, kAbsPerSqrtCols * std::sqrt(double(cols)), what);
}

TEST(CudaMatmul, AllDtypesAwkwardShapes) {
  KILN_REQUIRE_GPU();
  for (DType dt : kDtypes) {
    for (int64_t rows : {1, 7, 33, 300}) {
      for (int64_t cols : sweep_cols(dt)) {
        for (int64_t n : {1, 2, 5, 16, 17, 64, 300}) {
          // Odd row counts get padded weight rows and strided x/y; the others are packed.
          const bool strided = rows % 2 == 1;
          check_matmul(dt, rows, cols, n, strided ? 1 : 0, strided ? 3 : 0, strided ? 5 : 0);
        }
      }
    }
  }
  for (DType dt : kDtypes) {
    std::printf("worst NMSE %-5s GEMV %.2e  cuBLAS %.2e\n", std::string(dtype_name(dt)).c_str(),
                worst_nmse[static_cast<size_t>(dt)][0], worst_nmse[static_cast<size_t>(dt)][1]);
  }
}

TEST(CudaMatmul, PlainTypesColumnTails) {
  KILN_REQUIRE_GPU();
  // Widths that are not a multiple of the warp (32) or of 8, on both paths.
  for (DType dt : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t cols : {1, 7, 33, 100}) {
      for (int64_t n : {1, 3, 16, 20}) check_matmul(dt, 9, cols, n, cols % 3, 2, 1);
    }
  }
}

TEST(CudaMatmul, QuantSeveralDequantChunks) {
  KILN_REQUIRE_GPU();
  // More rows than one f32 dequantisation chunk (4096 rows), with a short last chunk.
  check_matmul(DType::kQ8_0, 4096 + 300, 64, 40, 1, 3, 5);
  check_matmul(DType::kQ4_K, 4096 + 300, 256, 40, 1, 3, 5);
  check_matmul(DType::kQ6_K, 4096 + 300, 256, 40, 1, 3, 5);
}

TEST(CudaMatmul, SplitKeepsLargeAndSmallActivations) {
  KILN_REQUIRE_GPU();
  // Activations far from O(1) on the cuBLAS path: the hi + lo split of x keeps its relative
  // precision over bf16's range, and over f16's normal range.
  const int64_t rows = 40, cols = 96, n = 24;
  for (DType dt : {DType::kF16, DType::kBF16}) {
    for (float scale : {1e-3f, 1e3f}) {
      const auto wf = random_vec(size_t(rows * cols), 3);
      const auto m = make_matrix(dt, rows, cols, wf.data());
      auto x = random_vec(size_t(n * cols), 4);
      for (float& v : x) v *= scale;
      std::vector<float> want(size_t(n * rows));
      cpu::matmul(pool(), m.view, x.data(), cols, n, want.data(), rows);
      const auto dw = to_device(m.view);
      const DeviceVec<float> dx = to_device(x);
      const DeviceVec<float> dy = test::device_zeros<float>(n * rows);
      const Status s = gpu_context()->reserve_scratch(cuda::matmul_scratch_bytes(dw.m, n));
      ASSERT_TRUE(s.ok()) << s.message();
      cuda::matmul(*gpu_context(), dw.m, dx.get(), cols, n, dy.get(), rows);
      expect_close(to_host(dy), want, kMaxNmse,
                   double(scale) * kAbsPerSqrtCols * std::sqrt(double(cols)),
                   fmt::format("{} x scale {}", dtype_name(dt), scale));
    }
  }
}

// The assignment → expert map of the grouped tests: experts 1 and 3 get nothing, the others get
// more than one tile of 8 assignments.
std::vector<int32_t> assignment_experts(int64_t n_assign) {
  static constexpr int32_t kUsed[] = {0, 2, 4};
  std::vector<int32_t> ids(static_cast<size_t>(n_assign));
  for (int64_t a = 0; a < n_assign; ++a) ids[size_t(a)] = kUsed[(a * 5 + a / 3) % 3];
  return ids;
}

void check_grouped(DType dt, int64_t rows, int64_t cols, int64_t T, int64_t k, int64_t x_row_div) {
  constexpr int64_t E = 5;
  const std::string what = fmt::format("{} rows={} cols={} T={} k={} x_row_div={}", dtype_name(dt),
                                       rows, cols, T, k, x_row_div);
  const int64_t n_assign = T * k;
  const auto ids = assignment_experts(n_assign);
  // Stable counting sort by expert (what cuda::moe_group produces).
  std::vector<int32_t> offsets(E + 1, 0), order;
  for (int32_t e : ids) ++offsets[size_t(e) + 1];
  for (int64_t e = 0; e < E; ++e) offsets[size_t(e) + 1] += offsets[size_t(e)];
  for (int64_t e = 0; e < E; ++e)
    for (int64_t a = 0; a < n_assign; ++a)
      if (ids[size_t(a)] == e) order.push_back(int32_t(a));

  // All experts in one matrix of E·rows rows (padded by one element or block), expert e at rows
  // [e·rows, (e+1)·rows).
  const auto wf = random_vec(size_t(E * rows * cols), uint32_t(rows + cols));
  const auto m = make_matrix(dt, E * rows, cols, wf.data(), 1);
  const int64_t x_rows = n_assign / x_row_div;
  const int64_t xs = cols + 3, ys = rows + 2;
  const auto x = random_vec(size_t(x_rows * xs), uint32_t(T * 3 + k));

  // Reference: gather each expert's x rows, cpu::matmul, scatter to the assignments' y rows.
  std::vector<float> want(size_t(n_assign * ys), 0.0f);
  for (int64_t e = 0; e < E; ++e) {
    const int64_t cnt = offsets[size_t(e) + 1] - offsets[size_t(e)];
    if (cnt == 0) continue;
    std::vector<float> xg(size_t(cnt * cols)), yg(size_t(cnt * rows));
    for (int64_t j = 0; j < cnt; ++j) {
      const int64_t a = order[size_t(offsets[size_t(e)] + j)];
      std::copy_n(x.data() + (a / x_row_div) * xs, cols, xg.data() + j * cols);
    }
    cpu::matmul(pool(), m.view.slice_rows(e * rows, rows), xg.data(), cols, cnt, yg.data(), rows);
    for (int64_t j = 0; j < cnt; ++j) {
      const int64_t a = order[size_t(offsets[size_t(e)] + j)];
      std::copy_n(yg.data() + j * rows, rows, want.data() + a * ys);
    }
  }

  const auto dw = to_device(m.view);
  cuda::DeviceMatrix w0 = dw.m;
  w0.rows = rows;
  const DeviceVec<int32_t> doff = to_device(offsets), dord = to_device(order);
  const DeviceVec<float> dx = to_device(x);
  const DeviceVec<float> dy = test::device_zeros<float>(n_assign * ys);
  cuda::grouped_matmul(*gpu_context(), w0, rows * m.view.row_stride, E, doff.get(), dord.get(),
                       n_assign, dx.get(), xs, x_row_div, dy.get(), ys);
  expect_close(to_host(dy), want, kMaxNmse, kAbsPerSqrtCols * std::sqrt(double(cols)), what);
}

TEST(CudaGroupedMatmul, MatchesPerExpertCpuMatmul) {
  KILN_REQUIRE_GPU();
  for (DType dt : kDtypes) {
    for (int64_t cols : sweep_cols(dt)) {
      for (int64_t rows : {1, 33, 300}) {
        check_grouped(dt, rows, cols, 13, 2, 2);  // gate/up: x row = assignment / k
        check_grouped(dt, rows, cols, 13, 2, 1);  // down: x row = assignment
      }
    }
    // One token: every expert has ≤ one short tile.
    check_grouped(dt, 7, sweep_cols(dt)[0], 1, 2, 2);
  }
}

TEST(CudaGroupedMatmul, NoAssignmentsLeavesOutputAlone) {
  KILN_REQUIRE_GPU();
  const auto wf = random_vec(5 * 8 * 32, 1);
  const auto m = make_matrix(DType::kBF16, 5 * 8, 32, wf.data());
  const auto dw = to_device(m.view);
  cuda::DeviceMatrix w0 = dw.m;
  w0.rows = 8;
  const DeviceVec<int32_t> doff = to_device(std::vector<int32_t>(6, 0));
  const DeviceVec<int32_t> dord = test::device_zeros<int32_t>(1);
  const DeviceVec<float> dx = test::device_zeros<float>(32);
  const DeviceVec<float> dy = to_device(std::vector<float>(8, 1.5f));
  cuda::grouped_matmul(*gpu_context(), w0, 8 * m.view.row_stride, 5, doff.get(), dord.get(), 0,
                       dx.get(), 32, 1, dy.get(), 8);
  expect_close(to_host(dy), std::vector<float>(8, 1.5f), 0.0, 0.0, "n_assign = 0");
}

TEST(CudaEmbeddingLookup, VocabShardMatchesCpu) {
  KILN_REQUIRE_GPU();
  const int64_t vocab = 11, begin = 3, end = 9;
  const std::vector<int32_t> ids = {3, 0, 8, 9, 5, 10, 2, 3};
  for (DType dt : kDtypes) {
    const int64_t cols = is_k_quant(dt) ? 512 : 96;
    const auto wf = random_vec(size_t(vocab * cols), 5);
    const auto full = make_matrix(dt, vocab, cols, wf.data(), 2);
    // Reference: the full table's row for ids in [begin, end), zeros elsewhere.
    std::vector<float> want(ids.size() * size_t(cols), 0.0f);
    for (size_t t = 0; t < ids.size(); ++t) {
      if (ids[t] >= begin && ids[t] < end) {
        cpu::embedding_lookup(full.view, &ids[t], 1, want.data() + t * size_t(cols));
      }
    }
    // The device holds only the shard's rows [begin, end).
    const auto dw = to_device(full.view.slice_rows(begin, end - begin));
    const DeviceVec<int32_t> dids = to_device(ids);
    const DeviceVec<float> dout = to_device(std::vector<float>(want.size(), 7.0f));
    cuda::embedding_lookup(*gpu_context(), dw.m, dids.get(), int64_t(ids.size()), begin, end,
                           dout.get());
    expect_close(to_host(dout), want, 0.0, 0.0, std::string(dtype_name(dt)));
  }
}

}  // namespace
}  // namespace kiln
