// MLA: cpu absorbed == ref absorbed over awkward shapes (1 token, one head, odd R/P, pos0 > 0);
// and the absorption identity: ref absorbed with q̄ = W_UKᵀ q_nope, then W_UV, == ref expanded.
// Tolerances: cpu vs ref NMSE ≤ 1e-10; the identity (double refs, different association)
// NMSE ≤ 1e-10.
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/mla.h"
#include "kernels/ref/ref.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::expect_close;
using test::random_vec;

TEST(Mla, AbsorbedMatchesRef) {
  cpu::ThreadPool pool(2);
  struct Case { int64_t T, H, R, P, pos0; };
  for (const Case c : {Case{1, 1, 8, 0, 0}, Case{1, 3, 33, 7, 10}, Case{4, 9, 64, 16, 5},
                       Case{7, 17, 20, 4, 0}, Case{2, 32, 512, 64, 40}}) {
    const int64_t W = c.R + c.P, n_ctx = c.pos0 + c.T + 3;  // rows past the end are unused
    const auto q = random_vec(size_t(c.T * c.H * W), 1, -0.5f, 0.5f);
    const auto cache = random_vec(size_t(n_ctx * W), 2, -2, 2);
    const float scale = 1.0f / std::sqrt(float(W));
    std::vector<float> got(size_t(c.T * c.H * c.R)), want(got.size());
    cpu::mla_attention_absorbed(pool, q.data(), c.T, c.H, c.R, c.P, cache.data(), c.pos0, scale,
                                got.data());
    ref::mla_attention_absorbed(q.data(), c.T, c.H, c.R, c.P, cache.data(), c.pos0, scale,
                                want.data());
    expect_close(got, want, 1e-10, 1e-5,
                 fmt::format("T={} H={} R={} P={} pos0={}", c.T, c.H, c.R, c.P, c.pos0));
  }
}

TEST(Mla, AbsorbedThenUvEqualsExpanded) {
  const int64_t T = 3, H = 2, N = 6, P = 5, R = 12, V = 7, pos0 = 4, W = R + P;
  const auto q_nope = random_vec(size_t(T * H * N), 3), q_pe = random_vec(size_t(T * H * P), 4);
  const auto cache = random_vec(size_t((pos0 + T) * W), 5);
  const auto w_uk = random_vec(size_t(H * N * R), 6), w_uv = random_vec(size_t(H * V * R), 7);
  const float scale = 1.0f / std::sqrt(float(N + P));
  std::vector<float> expanded(size_t(T * H * V));
  ref::mla_attention_expanded(q_nope.data(), q_pe.data(), T, H, N, P, cache.data(), R,
                              w_uk.data(), w_uv.data(), V, pos0, scale, expanded.data());
  // q = [W_UKᵀ q_nope | q_pe] per head.
  std::vector<float> q(size_t(T * H * W), 0.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) {
      float* qh = q.data() + (t * H + h) * W;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t i = 0; i < N; ++i)
          qh[r] += w_uk[size_t((h * N + i) * R + r)] * q_nope[size_t((t * H + h) * N + i)];
      for (int64_t i = 0; i < P; ++i) qh[R + i] = q_pe[size_t((t * H + h) * P + i)];
    }
  std::vector<float> latent(size_t(T * H * R)), absorbed(size_t(T * H * V), 0.0f);
  ref::mla_attention_absorbed(q.data(), T, H, R, P, cache.data(), pos0, scale, latent.data());
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t j = 0; j < V; ++j) {
        double s = 0.0;
        for (int64_t r = 0; r < R; ++r)
          s += double(w_uv[size_t((h * V + j) * R + r)]) * latent[size_t((t * H + h) * R + r)];
        absorbed[size_t((t * H + h) * V + j)] = float(s);
      }
  expect_close(absorbed, expanded, 1e-10, 1e-5, "absorbed+W_UV vs expanded");
}

}  // namespace
}  // namespace kiln
