// MLA: cpu absorbed == ref absorbed over awkward shapes (1 token, one head, odd R/P, pos0 > 0,
// a 701-position context over eleven position blocks of the online softmax)
// and page sizes (1 row, sizes that do not divide the context, pages scattered in the pool); the
// cpu result is bitwise the same for every page size; and the absorption identity: ref absorbed
// with q̄ = W_UKᵀ q_nope, then W_UV, == ref expanded.
// Tolerances: cpu vs ref NMSE ≤ 1e-10; the identity (double refs, different association)
// NMSE ≤ 1e-10.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/mla.h"
#include "kernels/ref/ref.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::expect_close;
using test::random_vec;

// The rows of a contiguous [n_ctx][W] cache copied into pages of page_tokens rows, which sit in
// a pool in shuffled order (with one spare page), as a paged cache holds them.
struct PagedCopy {
  std::vector<float> pool;
  std::vector<const float*> pages;  // in position order
  PagedCopy(const std::vector<float>& cache, int64_t n_ctx, int64_t W, int64_t page_tokens) {
    const int64_t n_pages = (n_ctx + page_tokens - 1) / page_tokens;
    std::vector<int64_t> order(size_t(n_pages + 1));
    for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(i);
    std::shuffle(order.begin(), order.end(), std::mt19937(unsigned(page_tokens)));
    pool.assign(size_t((n_pages + 1) * page_tokens * W), NAN);  // unused rows poison the result
    for (int64_t tau = 0; tau < n_ctx; ++tau) {
      const int64_t page = order[size_t(tau / page_tokens)];
      float* row = pool.data() + (page * page_tokens + tau % page_tokens) * W;
      std::copy_n(cache.data() + tau * W, W, row);
    }
    for (int64_t i = 0; i < n_pages; ++i) {
      pages.push_back(pool.data() + order[size_t(i)] * page_tokens * W);
    }
  }
};

TEST(Mla, AbsorbedMatchesRef) {
  cpu::ThreadPool pool(2);
  struct Case { int64_t T, H, R, P, pos0; };
  for (const Case c : {Case{1, 1, 8, 0, 0}, Case{1, 3, 33, 7, 10}, Case{4, 9, 64, 16, 5},
                       Case{7, 17, 20, 4, 0}, Case{2, 32, 512, 64, 40}, Case{1, 16, 64, 8, 130},
                       Case{3, 5, 48, 16, 197}, Case{1, 16, 256, 64, 700}}) {
    const int64_t W = c.R + c.P, n_ctx = c.pos0 + c.T;
    const auto q = random_vec(size_t(c.T * c.H * W), 1, -0.5f, 0.5f);
    const auto cache = random_vec(size_t(n_ctx * W), 2, -2, 2);
    const float scale = 1.0f / std::sqrt(float(W));
    const std::vector<float> want = [&] {
      std::vector<float> v(size_t(c.T * c.H * c.R));
      const float* one[] = {cache.data()};
      ref::mla_attention_absorbed(q.data(), c.T, c.H, c.R, c.P, one, n_ctx, c.pos0, scale,
                                  v.data());
      return v;
    }();
    std::vector<float> contiguous;  // the cpu result with the whole cache as one page
    for (const int64_t page_tokens : std::vector<int64_t>{n_ctx + 3, 64, 16, 7, 1}) {
      const std::string what = fmt::format("T={} H={} R={} P={} pos0={} page_tokens={}", c.T, c.H,
                                           c.R, c.P, c.pos0, page_tokens);
      const PagedCopy paged(cache, n_ctx, W, page_tokens);
      std::vector<float> got(want.size()), ref_paged(want.size());
      cpu::mla_attention_absorbed(pool, q.data(), c.T, c.H, c.R, c.P, paged.pages.data(),
                                  page_tokens, c.pos0, scale, got.data());
      ref::mla_attention_absorbed(q.data(), c.T, c.H, c.R, c.P, paged.pages.data(), page_tokens,
                                  c.pos0, scale, ref_paged.data());
      expect_close(got, want, 1e-10, 1e-5, what);
      EXPECT_EQ(ref_paged, want) << what;
      if (contiguous.empty()) {
        contiguous = got;
      } else {
        EXPECT_EQ(std::memcmp(got.data(), contiguous.data(), got.size() * sizeof(float)), 0)
            << "differs from one page: " << what;
      }
    }
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
  const float* one[] = {cache.data()};
  ref::mla_attention_absorbed(q.data(), T, H, R, P, one, pos0 + T, pos0, scale, latent.data());
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
