// The GPU element-wise ops, norms, causal conv and kda_prepare against their CPU twins over
// awkward shapes (dims 1, 31, 64, 100, 1027, 4096, 8192; rows 1, 3, 257). Tolerance for every f32
// result: NMSE ≤ 1e-7 and |err| ≤ 1e-5 · max(1, max|want|) (fp32 on both sides; the GPU reduces
// in another order and uses CUDA's expf/log1pf where the CPU uses its AVX2 polynomial). Copies
// (the residual add, v, the conv state) must match exactly.
#include <algorithm>
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/conv.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/kda.h"
#include "kernels/cpu/norm.h"
#include "kernels/cuda/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace kiln {
namespace {

using test::expect_close;
using test::gpu_context;
using test::random_vec;
using test::to_device;
using test::to_host;

constexpr double kNmse = 1e-7;
const int64_t kDims[] = {1, 31, 64, 100, 1027, 4096};
const int64_t kRows[] = {1, 3, 257};

void expect_f32(const std::vector<float>& got, const std::vector<float>& want,
                const std::string& what) {
  float peak = 1.0f;
  for (float v : want) peak = std::max(peak, std::fabs(v));
  expect_close(got, want, kNmse, 1e-5 * peak, what);
}

TEST(CudaElementwise, MatchCpu) {
  KILN_REQUIRE_GPU();
  cuda::Context& ctx = *gpu_context();
  for (int64_t n : {1, 31, 64, 100, 1027, 4096, 257 * 100}) {
    const auto g = random_vec(size_t(n), 1, -12, 12), u = random_vec(size_t(n), 2, -3, 3);
    std::vector<float> want(static_cast<size_t>(n));
    cpu::silu_mul(g.data(), u.data(), n, want.data());
    auto dg = to_device(g), du = to_device(u);
    auto dout = test::device_zeros<float>(n);
    cuda::silu_mul(ctx, dg.get(), du.get(), n, dout.get());
    expect_f32(to_host(dout), want, fmt::format("silu_mul n={}", n));
    cuda::silu_mul(ctx, dg.get(), du.get(), n, dg.get());  // out aliases gate
    expect_f32(to_host(dg), want, fmt::format("silu_mul in place n={}", n));

    auto s_want = g;
    cpu::sigmoid_inplace(s_want.data(), n);
    auto ds = to_device(g);
    cuda::sigmoid_inplace(ctx, ds.get(), n);
    expect_f32(to_host(ds), s_want, fmt::format("sigmoid n={}", n));

    std::vector<float> sum(static_cast<size_t>(n));
    for (size_t i = 0; i < sum.size(); ++i) sum[i] = g[i] + u[i];
    auto dy = to_device(g);
    cuda::add_inplace(ctx, dy.get(), du.get(), n);
    expect_close(to_host(dy), sum, 0.0, 0.0, fmt::format("add_inplace n={}", n));
  }
}

TEST(CudaNorm, RmsNormAndFusedAdd) {
  KILN_REQUIRE_GPU();
  cuda::Context& ctx = *gpu_context();
  for (int64_t dim : kDims) {
    for (int64_t rows : kRows) {
      const auto what = fmt::format("dim={} rows={}", dim, rows);
      const size_t n = size_t(rows * dim);
      const auto x = random_vec(n, 1, -3, 3), w = random_vec(size_t(dim), 2);
      std::vector<float> want(n);
      cpu::rms_norm(x.data(), w.data(), rows, dim, 1e-5f, want.data());
      auto dx = to_device(x), dw = to_device(w);
      auto dy = test::device_zeros<float>(int64_t(n));
      cuda::rms_norm(ctx, dx.get(), dw.get(), rows, dim, 1e-5f, dy.get());
      expect_f32(to_host(dy), want, "rms_norm " + what);
      cuda::rms_norm(ctx, dx.get(), dw.get(), rows, dim, 1e-5f, dx.get());  // y aliases x
      expect_f32(to_host(dx), want, "rms_norm in place " + what);

      const auto d = random_vec(n, 3);
      auto h_want = x;
      cpu::add_rms_norm(h_want.data(), d.data(), w.data(), rows, dim, 1e-6f, want.data());
      auto dh = to_device(x), dd = to_device(d);
      cuda::add_rms_norm(ctx, dh.get(), dd.get(), dw.get(), rows, dim, 1e-6f, dy.get());
      expect_close(to_host(dh), h_want, 0.0, 0.0, "add_rms_norm residual " + what);
      expect_f32(to_host(dy), want, "add_rms_norm " + what);
    }
  }
}

TEST(CudaNorm, RmsNormRowsUpTo8192) {
  KILN_REQUIRE_GPU();
  cuda::Context& ctx = *gpu_context();
  for (int64_t dim : {int64_t{1}, int64_t{100}, int64_t{4096}, int64_t{8192}}) {
    const int64_t n_src = 7;
    const std::vector<int32_t> rows = {6, 0, 3, 3, 1};  // out of order, one repeated
    const auto x = random_vec(size_t(n_src * dim), 4, -3, 3), w = random_vec(size_t(dim), 5);
    std::vector<float> want(rows.size() * size_t(dim));
    for (size_t i = 0; i < rows.size(); ++i) {
      cpu::rms_norm(x.data() + rows[i] * dim, w.data(), 1, dim, 1e-6f, want.data() + i * dim);
    }
    auto dx = to_device(x), dw = to_device(w);
    auto dr = to_device(rows);
    auto dy = test::device_zeros<float>(int64_t(want.size()));
    cuda::rms_norm_rows(ctx, dx.get(), dr.get(), int64_t(rows.size()), dw.get(), dim, 1e-6f,
                        dy.get());
    expect_f32(to_host(dy), want, fmt::format("rms_norm_rows dim={}", dim));
  }
}

TEST(CudaNorm, L2NormAndGated) {
  KILN_REQUIRE_GPU();
  cuda::Context& ctx = *gpu_context();
  for (int64_t dim : kDims) {
    for (int64_t rows : kRows) {
      const auto what = fmt::format("dim={} rows={}", dim, rows);
      const size_t n = size_t(rows * dim);
      auto want = random_vec(n, 6, -2, 2);
      auto dx = to_device(want);
      cpu::l2_norm(want.data(), rows, dim, 1e-6f, 0.125f);
      cuda::l2_norm(ctx, dx.get(), rows, dim, 1e-6f, 0.125f);
      expect_f32(to_host(dx), want, "l2_norm " + what);

      const auto o = random_vec(n, 7, -3, 3), z = random_vec(n, 8, -6, 6);
      const auto w = random_vec(size_t(dim), 9);
      std::vector<float> g_want(n);
      cpu::gated_rms_norm_sigmoid(o.data(), z.data(), w.data(), rows, dim, 1e-5f, g_want.data());
      auto d_o = to_device(o), dz = to_device(z), dw = to_device(w);
      cuda::gated_rms_norm_sigmoid(ctx, d_o.get(), dz.get(), dw.get(), rows, dim, 1e-5f,
                                   d_o.get());  // y aliases o
      expect_f32(to_host(d_o), g_want, "gated_rms_norm_sigmoid " + what);
    }
  }
  // A zero row stays zero (eps inside the sqrt).
  auto dz = test::device_zeros<float>(100);
  cuda::l2_norm(ctx, dz.get(), 1, 100, 1e-6f, 1.0f);
  for (float v : to_host(dz)) EXPECT_EQ(v, 0.0f);
}

// Five sequences of lengths {1, 2, 3, 17, 40} in slots {5, 0, 3, 7, 1} of 8, processed in two
// batched calls (the first part of each, then the rest; one second part is empty), against
// cpu::causal_conv1d_silu run per sequence on the same data with the same carried state.
void check_conv(int64_t C, int taps) {
  const std::vector<int32_t> slot = {5, 0, 3, 7, 1}, len = {1, 2, 3, 17, 40};
  const std::vector<int32_t> first = {1, 1, 2, 9, 23};
  const int64_t n_slots = 8, keep = taps - 1;
  const int64_t slot_stride = keep * C + 5;  // padded: the padding must stay untouched
  const int64_t xs = C + 3, ys = C + 2;      // strided rows
  const auto w = random_vec(size_t(C * taps), 10);
  std::vector<float> state = random_vec(size_t(n_slots * slot_stride), 11, -2, 2);
  std::vector<float> cpu_state = state;
  auto d_state = to_device(state), dw = to_device(w);
  cuda::Context& ctx = *gpu_context();
  for (int part = 0; part < 2; ++part) {
    std::vector<cuda::Span> spans;
    int64_t rows = 0;
    for (size_t s = 0; s < slot.size(); ++s) {
      const int32_t pos0 = part == 0 ? 0 : first[s];
      const int32_t n = part == 0 ? first[s] : len[s] - first[s];
      spans.push_back({slot[s], pos0, int32_t(rows), n});
      rows += n;
    }
    const auto x = random_vec(size_t(rows * xs), 12 + uint32_t(part), -2, 2);
    std::vector<float> want(size_t(rows * ys), 0.0f);
    for (const cuda::Span& s : spans) {
      cpu::causal_conv1d_silu(x.data() + s.begin * xs, xs, s.n, C, w.data(), taps,
                              cpu_state.data() + s.slot * slot_stride, want.data() + s.begin * ys,
                              ys);
    }
    auto dx = to_device(x);
    auto dspans = to_device(spans);
    auto dy = test::device_zeros<float>(int64_t(want.size()));
    cuda::causal_conv1d_silu(ctx, dx.get(), xs, dspans.get(), int64_t(spans.size()), rows, C,
                             dw.get(), taps, d_state.get(), slot_stride, dy.get(), ys);
    const auto what = fmt::format("C={} taps={} part={}", C, taps, part);
    expect_f32(to_host(dy), want, "conv " + what);
    expect_close(to_host(d_state), cpu_state, 0.0, 0.0, "conv state " + what);
  }
}

TEST(CudaConv, BatchedSpansWithCarriedState) {
  KILN_REQUIRE_GPU();
  for (int64_t C : {1, 31, 100, 300}) check_conv(C, 4);
  check_conv(64, 1);
  check_conv(64, 2);
  check_conv(31, 16);
}

TEST(CudaKda, PrepareMatchesCpuComposition) {
  KILN_REQUIRE_GPU();
  cuda::Context& ctx = *gpu_context();
  for (int64_t T : kRows) {
    for (int64_t H : {1, 3}) {
      for (int64_t K : {1, 31, 64, 100, 128}) {
        const int64_t C = H * K;
        const auto qkv = random_vec(size_t(T * 3 * C), 13, -2, 2);
        const auto f = random_vec(size_t(T * C), 14, -10, 25);  // both softplus branches
        const auto beta = random_vec(size_t(T * H), 15, -6, 6);
        const auto dt_bias = random_vec(size_t(C), 16);
        std::vector<float> a_neg = random_vec(size_t(H), 17);
        for (float& a : a_neg) a = -std::exp(a);
        // The CPU path of shard/kda_block.cpp.
        auto f_want = f, beta_want = beta;
        cpu::kda_gate(f_want.data(), T, H, K, a_neg.data(), dt_bias.data());
        cpu::sigmoid_inplace(beta_want.data(), T * H);
        std::vector<float> q_want(size_t(T * C)), k_want(q_want.size()), v_want(q_want.size());
        for (int64_t t = 0; t < T; ++t) {
          std::copy_n(qkv.data() + t * 3 * C, C, q_want.data() + t * C);
          std::copy_n(qkv.data() + t * 3 * C + C, C, k_want.data() + t * C);
          std::copy_n(qkv.data() + t * 3 * C + 2 * C, C, v_want.data() + t * C);
        }
        cpu::l2_norm(q_want.data(), T * H, K, 1e-6f, 1.0f / std::sqrt(static_cast<float>(K)));
        cpu::l2_norm(k_want.data(), T * H, K, 1e-6f, 1.0f);

        auto d_qkv = to_device(qkv), df = to_device(f), dbeta = to_device(beta);
        auto d_dt = to_device(dt_bias), d_a = to_device(a_neg);
        auto dq = test::device_zeros<float>(T * C), dk = test::device_zeros<float>(T * C);
        auto dv = test::device_zeros<float>(T * C);
        cuda::kda_prepare(ctx, d_qkv.get(), T, H, K, d_a.get(), d_dt.get(), 1e-6f, dq.get(),
                          dk.get(), dv.get(), df.get(), dbeta.get());
        const auto what = fmt::format("T={} H={} K={}", T, H, K);
        expect_f32(to_host(dq), q_want, "kda q " + what);
        expect_f32(to_host(dk), k_want, "kda k " + what);
        expect_close(to_host(dv), v_want, 0.0, 0.0, "kda v " + what);
        expect_f32(to_host(df), f_want, "kda g " + what);
        expect_f32(to_host(dbeta), beta_want, "kda beta " + what);
      }
    }
  }
}

}  // namespace
}  // namespace kiln
