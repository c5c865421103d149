// The GPU kernels at Kimi-Linear-48B's own widths (kimi-linear.md §1), where the other tests use
// small presets: the output head over the full vocabulary (163840 rows of hidden 2304, q6_k as
// GGUF Q4_K_M stores it; GEMV, argmax, top-k, and the embedding lookup of the same table, whole
// and as a vocab shard), and the MoE block's kernels for 256 experts, top 8 (route, group, the
// grouped gate/up/down products at 2304 → 1024 → 2304 in q4_k, SiLU·up, combine) against the CPU
// twins. Token counts stay small (2 rows) so the emulator runs this in seconds. MLA at
// kv_lora_rank 512 + rope 64 is in mla_test.cpp, KDA at head dim 128 in kda_test.cpp.
// Weights are random bytes in the quantised formats with a fixed super-block scale, so both sides
// dequantise identical values; experts that no token chooses hold 0xff bytes (a NaN scale), so a
// read of one shows up as NaN. Tolerances as gemm_test.cpp: NMSE ≤ 1e-7 (fp32 summation order).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/moe.h"
#include "kernels/cuda/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace kiln {
namespace {

using test::DeviceVec;
using test::expect_close;
using test::gpu_context;
using test::random_vec;
using test::to_device;
using test::to_host;

constexpr int64_t kHidden = 2304, kVocab = 163840;
constexpr int64_t kExperts = 256, kTopK = 8, kExpertFf = 1024;
constexpr double kNmse = 1e-7;

cpu::ThreadPool& pool() {
  static cpu::ThreadPool p(2);
  p.set_exact_activations(true);  // f32 activations, as the GPU kernels compute
  return p;
}

// A [rows][cols] q4_k or q6_k matrix: rows [used_begin, used_end) random, the others 0xff.
test::StoredMatrix random_k_quant(DType dt, int64_t rows, int64_t cols, int64_t used_begin,
                                  int64_t used_end, uint64_t seed) {
  test::StoredMatrix m;
  const int64_t stride = dtype_row_bytes(dt, cols);
  m.bytes.assign(static_cast<size_t>(rows * stride), std::byte{0xff});
  std::mt19937_64 rng(seed);
  std::byte* first = m.bytes.data() + used_begin * stride;
  const size_t n = static_cast<size_t>((used_end - used_begin) * stride);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t r = rng();
    std::memcpy(first + i, &r, 8);
  }
  const uint16_t scale = f32_to_f16(1.0f / 1024.0f);  // |w| ≲ 1
  const size_t block = dt == DType::kQ4_K ? sizeof(BlockQ4_K) : sizeof(BlockQ6_K);
  for (size_t b = 0; b < n / block; ++b) {
    std::byte* p = first + b * block;
    if (dt == DType::kQ4_K) {
      auto* q = reinterpret_cast<BlockQ4_K*>(p);
      q->d = scale;
      q->dmin = scale;
    } else {
      reinterpret_cast<BlockQ6_K*>(p)->d = scale;
    }
  }
  m.view = {dt, m.bytes.data(), rows, cols, stride};
  return m;
}

// The lowest index of the largest value of each row (no NaN here).
std::vector<int32_t> host_argmax(const std::vector<float>& v, int64_t rows, int64_t n) {
  std::vector<int32_t> out;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = v.data() + r * n;
    out.push_back(static_cast<int32_t>(std::max_element(row, row + n) - row));
  }
  return out;
}

TEST(CudaModelShapes, LogitsArgmaxTopkAndEmbeddingOverTheFullVocab) {
  KILN_REQUIRE_GPU();
  cuda::Context& ctx = *gpu_context();
  const int64_t n = 2;
  const auto table = random_k_quant(DType::kQ6_K, kVocab, kHidden, 0, kVocab, 1);
  const auto x = random_vec(size_t(n * kHidden), 2);
  std::vector<float> want(size_t(n * kVocab));
  cpu::matmul(pool(), table.view, x.data(), kHidden, n, want.data(), kVocab);

  const auto dw = to_device(table.view);
  const DeviceVec<float> dx = to_device(x);
  DeviceVec<float> logits = test::device_zeros<float>(n * kVocab);
  ASSERT_TRUE(ctx.reserve_scratch(cuda::matmul_scratch_bytes(dw.m, n)).ok());
  cuda::matmul(ctx, dw.m, dx.get(), kHidden, n, logits.get(), kVocab);
  const auto got = to_host(logits);
  expect_close(got, want, kNmse, 1e-4 * std::sqrt(double(kHidden)), "lm_head q6_k 163840x2304");

  // Selection over the GPU's own logits: exact.
  auto ids = test::device_zeros<int32_t>(n);
  cuda::argmax_rows(ctx, logits.get(), n, kVocab, ids.get());
  EXPECT_EQ(to_host(ids), host_argmax(got, n, kVocab));
  constexpr int kK = 8;
  auto top_ids = test::device_zeros<int32_t>(n * kK);
  auto top_vals = test::device_zeros<float>(n * kK);
  cuda::topk_rows(ctx, logits.get(), n, kVocab, kK, top_ids.get(), top_vals.get());
  std::vector<int32_t> want_ids;
  for (int64_t r = 0; r < n; ++r) {
    std::vector<int32_t> idx(static_cast<size_t>(kVocab));
    std::iota(idx.begin(), idx.end(), 0);
    const float* row = got.data() + r * kVocab;
    std::partial_sort(idx.begin(), idx.begin() + kK, idx.end(), [&](int32_t a, int32_t b) {
      return row[a] != row[b] ? row[a] > row[b] : a < b;
    });
    want_ids.insert(want_ids.end(), idx.begin(), idx.begin() + kK);
  }
  EXPECT_EQ(to_host(top_ids), want_ids);

  // The embedding of the same table, whole and as the upper vocab shard (rows from 81920 on).
  const std::vector<int32_t> tokens = {0, kVocab - 1, 81920, 81919, 100003};
  const auto d_tokens = to_device(tokens);
  std::vector<float> rows(tokens.size() * size_t(kHidden));
  cpu::embedding_lookup(table.view, tokens.data(), int64_t(tokens.size()), rows.data());
  auto out = test::device_zeros<float>(int64_t(rows.size()));
  cuda::embedding_lookup(ctx, dw.m, d_tokens.get(), int64_t(tokens.size()), 0, kVocab, out.get());
  expect_close(to_host(out), rows, 0.0, 0.0, "embedding, whole vocab");
  const int64_t begin = kVocab / 2;
  cuda::DeviceMatrix shard = dw.m;
  shard.data = static_cast<const std::byte*>(dw.m.data) + begin * dw.m.row_stride;
  shard.rows = kVocab - begin;
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (tokens[t] < begin) std::fill_n(rows.begin() + t * kHidden, kHidden, 0.0f);
  }
  cuda::embedding_lookup(ctx, shard, d_tokens.get(), int64_t(tokens.size()), begin, kVocab,
                         out.get());
  expect_close(to_host(out), rows, 0.0, 0.0, "embedding, vocab shard [81920, 163840)");
}

// The experts of one projection: E matrices of [rows][cols] q4_k back to back, random where
// `used`, 0xff elsewhere; copied to the device, the used ones kept on the host for the twin.
struct Experts {
  int64_t rows, cols, stride;  // stride: bytes per expert
  std::vector<test::StoredMatrix> host;  // per expert, empty when unused
  test::DeviceWeight dev;
};

Experts make_experts(int64_t rows, int64_t cols, const std::vector<bool>& used, uint64_t seed) {
  Experts ex{rows, cols, rows * dtype_row_bytes(DType::kQ4_K, cols), {}, {}};
  ex.host.resize(used.size());
  auto all = random_k_quant(DType::kQ4_K, kExperts * rows, cols, 0, 0, seed);
  for (int64_t e = 0; e < kExperts; ++e) {
    if (!used[size_t(e)]) continue;
    ex.host[size_t(e)] = random_k_quant(DType::kQ4_K, rows, cols, 0, rows, seed + uint64_t(e));
    std::memcpy(all.bytes.data() + e * ex.stride, ex.host[size_t(e)].bytes.data(),
                size_t(ex.stride));
  }
  ex.dev = to_device(all.view);
  ex.dev.m.rows = rows;  // expert 0; expert e at e · stride bytes
  return ex;
}

TEST(CudaModelShapes, MoeTop8Of256ExpertsAtTheModelWidths) {
  KILN_REQUIRE_GPU();
  cuda::Context& ctx = *gpu_context();
  const int64_t T = 2, A = T * kTopK;
  auto logits = random_vec(size_t(T * kExperts), 3, -2, 2);
  logits[kExperts - 1] = logits[kExperts - 2] = 3.0f;  // the last experts' offsets are used
  const auto bias = random_vec(size_t(kExperts), 4, -0.1f, 0.1f);
  const auto x = random_vec(size_t(T * kHidden), 5, -0.2f, 0.2f);
  constexpr float kScale = 2.446f;  // expert_weights_scale

  // CPU: route, then each token through its experts in rank order.
  std::vector<int32_t> ids(static_cast<size_t>(A));
  std::vector<float> w(static_cast<size_t>(A));
  cpu::moe_route(logits.data(), T, kExperts, bias.data(), kTopK, true, kScale, ids.data(),
                 w.data());
  std::vector<bool> used(size_t(kExperts), false);
  for (int32_t e : ids) used[size_t(e)] = true;
  ASSERT_TRUE(used[kExperts - 1] && used[kExperts - 2]);
  const Experts gate = make_experts(kExpertFf, kHidden, used, 100);
  const Experts up = make_experts(kExpertFf, kHidden, used, 400);
  const Experts down = make_experts(kHidden, kExpertFf, used, 700);
  auto want = random_vec(size_t(T * kHidden), 6);  // combine adds to what is there
  const auto out0 = want;
  for (int64_t a = 0; a < A; ++a) {
    const size_t e = size_t(ids[size_t(a)]);
    const float* xt = x.data() + (a / kTopK) * kHidden;
    std::vector<float> g(static_cast<size_t>(kExpertFf)), u(g.size());
    std::vector<float> y(static_cast<size_t>(kHidden));
    cpu::matmul(pool(), gate.host[e].view, xt, kHidden, 1, g.data(), kExpertFf);
    cpu::matmul(pool(), up.host[e].view, xt, kHidden, 1, u.data(), kExpertFf);
    for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    cpu::matmul(pool(), down.host[e].view, g.data(), kExpertFf, 1, y.data(), kHidden);
    for (int64_t d = 0; d < kHidden; ++d) {
      float& o = want[size_t((a / kTopK) * kHidden + d)];
      o = std::fma(w[size_t(a)], y[size_t(d)], o);
    }
  }

  // GPU: the same chain without a host round trip.
  const auto d_logits = to_device(logits), d_bias = to_device(bias), d_x = to_device(x);
  auto d_ids = test::device_zeros<int32_t>(A);
  auto d_w = test::device_zeros<float>(A);
  auto d_off = test::device_zeros<int32_t>(kExperts + 1);
  auto d_order = test::device_zeros<int32_t>(A);
  auto d_g = test::device_zeros<float>(A * kExpertFf), d_u = test::device_zeros<float>(A * kExpertFf);
  auto d_y = test::device_zeros<float>(A * kHidden);
  auto d_out = to_device(out0);
  cuda::moe_route(ctx, d_logits.get(), T, kExperts, d_bias.get(), kTopK, true, kScale,
                  d_ids.get(), d_w.get());
  cuda::moe_group(ctx, d_ids.get(), A, kExperts, d_off.get(), d_order.get());
  for (const auto& [ex, y] : {std::pair{&gate, &d_g}, std::pair{&up, &d_u}}) {
    cuda::grouped_matmul(ctx, ex->dev.m, ex->stride, kExperts, d_off.get(), d_order.get(), A,
                         d_x.get(), kHidden, kTopK, y->get(), kExpertFf);
  }
  cuda::silu_mul(ctx, d_g.get(), d_u.get(), A * kExpertFf, d_g.get());
  cuda::grouped_matmul(ctx, down.dev.m, down.stride, kExperts, d_off.get(), d_order.get(), A,
                       d_g.get(), kExpertFf, 1, d_y.get(), kHidden);
  cuda::moe_combine(ctx, d_y.get(), d_w.get(), T, kTopK, kHidden, d_out.get());

  EXPECT_EQ(to_host(d_ids), ids);
  expect_close(to_host(d_w), w, kNmse, 1e-5, "routing weights");
  const auto got = to_host(d_out);
  double peak = 0.0;
  for (float v : want) peak = std::max(peak, double(std::fabs(v)));
  expect_close(got, want, kNmse, 1e-5 * peak, "MoE block output, T=2 E=256 k=8 2304/1024 q4_k");
}

}  // namespace
}  // namespace kiln
