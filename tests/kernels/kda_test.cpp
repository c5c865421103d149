// KDA: gate vs ref; cpu recurrence vs ref recurrence; chunked == recurrence for every length up to
// 3 chunks (chunk 16, and 64, 40, 7 for a few lengths), from zero and non-zero initial states, with
// decays down to −20 per step (overflow safety, §8.2); prefill-then-continue at every split.
// Tolerances (all fp32 algebra, different association orders): NMSE ≤ 1e-9, |err| ≤ 2e-4 on
// outputs and states of magnitude O(1).
#include <cmath>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/kda.h"
#include "kernels/ref/ref.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln {
namespace {

using test::expect_close;
using test::random_vec;

constexpr double kNmse = 1e-9, kAbs = 2e-4;

// Inputs for one sequence as the model produces them: k L2-normed, q L2-normed and scaled,
// beta in (0, 1), g ≤ 0 with occasional very strong decay.
struct KdaInputs {
  int64_t T, H, K, V;
  std::vector<float> q, k, v, g, beta, state0;
  KdaInputs(int64_t T_, int64_t H_, int64_t K_, int64_t V_, uint32_t seed, bool strong_decay)
      : T(T_), H(H_), K(K_), V(V_) {
    q = random_vec(size_t(T * H * K), seed);
    k = random_vec(size_t(T * H * K), seed + 1);
    v = random_vec(size_t(T * H * V), seed + 2, -2, 2);
    beta = random_vec(size_t(T * H), seed + 3, 0.0f, 1.0f);
    g = random_vec(size_t(T * H * K), seed + 4, -0.3f, 0.0f);
    if (strong_decay) {
      const auto pick = random_vec(g.size(), seed + 5, 0.0f, 1.0f);
      for (size_t i = 0; i < g.size(); ++i)
        if (pick[i] < 0.15f) g[i] = -20.0f * pick[i] / 0.15f;
    }
    state0 = random_vec(size_t(H * K * V), seed + 6, -0.5f, 0.5f);
    ref::l2_norm(k.data(), T * H, K, 1e-6f, 1.0f);
    ref::l2_norm(q.data(), T * H, K, 1e-6f, 1.0f / std::sqrt(float(K)));
  }
  // Pointers to token t of each input.
  const float* qt(int64_t t) const { return q.data() + t * H * K; }
  const float* kt(int64_t t) const { return k.data() + t * H * K; }
  const float* vt(int64_t t) const { return v.data() + t * H * V; }
  const float* gt(int64_t t) const { return g.data() + t * H * K; }
  const float* bt(int64_t t) const { return beta.data() + t * H; }
};

// Reference output and final state for tokens [0, T) from in.state0 (or zeros).
void run_ref(const KdaInputs& in, bool from_state, std::vector<float>& o, std::vector<float>& st) {
  st = from_state ? in.state0 : std::vector<float>(in.state0.size(), 0.0f);
  o.assign(size_t(in.T * in.H * in.V), 0.0f);
  ref::kda_recurrent(in.qt(0), in.kt(0), in.vt(0), in.gt(0), in.bt(0), in.T, in.H, in.K, in.V,
                     st.data(), o.data());
}

TEST(Kda, GateMatchesRef) {
  const int64_t T = 3, H = 2, K = 12;
  auto f = random_vec(size_t(T * H * K), 1, -30, 30);
  const auto dt = random_vec(size_t(H * K), 2), a = std::vector<float>{-0.5f, -16.0f};
  auto f_ref = f;
  cpu::kda_gate(f.data(), T, H, K, a.data(), dt.data());
  ref::kda_gate(f_ref.data(), T, H, K, a.data(), dt.data());
  expect_close(f, f_ref, 1e-12, 1e-4, "kda_gate");  // values up to ~500
  for (float x : f) EXPECT_LE(x, 0.0f);
}

TEST(Kda, RecurrentMatchesRef) {
  cpu::ThreadPool pool(2);
  for (auto [H, K, V] : {std::tuple{1, 8, 8}, std::tuple{3, 12, 20}, std::tuple{4, 32, 16}}) {
    const KdaInputs in(9, H, K, V, 10, true);
    std::vector<float> o_ref, st_ref;
    run_ref(in, true, o_ref, st_ref);
    auto st = in.state0;
    std::vector<float> o(o_ref.size());
    cpu::kda_recurrent(pool, in.qt(0), in.kt(0), in.vt(0), in.gt(0), in.bt(0), in.T, H, K, V,
                       st.data(), o.data());
    const auto what = fmt::format("H={} K={} V={}", H, K, V);
    expect_close(o, o_ref, kNmse, kAbs, what + " out");
    expect_close(st, st_ref, kNmse, kAbs, what + " state");
  }
}

void check_chunked(cpu::ThreadPool& pool, const KdaInputs& in, int64_t chunk, bool from_state) {
  std::vector<float> o_ref, st_ref;
  run_ref(in, from_state, o_ref, st_ref);
  auto st = from_state ? in.state0 : std::vector<float>(in.state0.size(), 0.0f);
  std::vector<float> o(o_ref.size());
  cpu::kda_chunked(pool, in.qt(0), in.kt(0), in.vt(0), in.gt(0), in.bt(0), in.T, in.H, in.K,
                   in.V, chunk, st.data(), o.data());
  const auto what = fmt::format("T={} H={} K={} V={} chunk={} from_state={}", in.T, in.H, in.K,
                                in.V, chunk, from_state);
  expect_close(o, o_ref, kNmse, kAbs, what + " out");
  expect_close(st, st_ref, kNmse, kAbs, what + " state");
}

TEST(Kda, ChunkedEqualsRecurrentChunk16AllLengths) {
  cpu::ThreadPool pool(2);
  for (int64_t T = 1; T <= 48; ++T) {
    const KdaInputs in(T, 2, 16, 24, uint32_t(100 + T), true);
    check_chunked(pool, in, 16, T % 2 == 0);
  }
}

TEST(Kda, ChunkedOddShapesAndChunk64) {
  cpu::ThreadPool pool(2);
  for (int64_t T : {1, 5, 63, 64, 65, 150}) {
    check_chunked(pool, KdaInputs(T, 3, 12, 20, uint32_t(T), true), 64, true);
    check_chunked(pool, KdaInputs(T, 1, 32, 32, uint32_t(T + 1), false), 64, false);
  }
  check_chunked(pool, KdaInputs(37, 1, 7, 9, 3, true), 16, true);
  // Chunks that are not a multiple of the 16-row sub-block.
  check_chunked(pool, KdaInputs(95, 2, 12, 8, 5, true), 40, true);
  check_chunked(pool, KdaInputs(30, 2, 12, 8, 6, true), 7, true);
  check_chunked(pool, KdaInputs(37, 5, 128, 128, 4, true), 16, true);
}

TEST(Kda, PrefillThenContinueAtEverySplit) {
  cpu::ThreadPool pool(2);
  const int64_t T = 40, chunk = 16;
  const KdaInputs in(T, 2, 16, 16, 77, true);
  std::vector<float> o_ref, st_ref;
  run_ref(in, true, o_ref, st_ref);
  for (int64_t s = 0; s <= T; ++s) {
    for (bool second_recurrent : {false, true}) {
      auto st = in.state0;
      std::vector<float> o(o_ref.size());
      cpu::kda_chunked(pool, in.qt(0), in.kt(0), in.vt(0), in.gt(0), in.bt(0), s, in.H, in.K,
                       in.V, chunk, st.data(), o.data());
      float* o2 = o.data() + s * in.H * in.V;
      if (second_recurrent) {
        cpu::kda_recurrent(pool, in.qt(s), in.kt(s), in.vt(s), in.gt(s), in.bt(s), T - s, in.H,
                           in.K, in.V, st.data(), o2);
      } else {
        cpu::kda_chunked(pool, in.qt(s), in.kt(s), in.vt(s), in.gt(s), in.bt(s), T - s, in.H,
                         in.K, in.V, chunk, st.data(), o2);
      }
      const auto what = fmt::format("split={} then {}", s, second_recurrent ? "recurrent" : "chunked");
      expect_close(o, o_ref, kNmse, kAbs, what + " out");
      expect_close(st, st_ref, kNmse, kAbs, what + " state");
    }
  }
}

TEST(Kda, ExtremeDecayStaysFinite) {
  cpu::ThreadPool pool(1);
  KdaInputs in(64, 1, 16, 16, 9, false);
  for (auto& x : in.g) x = -20.0f;  // cumulative log decay reaches −1280 within one chunk
  check_chunked(pool, in, 64, true);
}

}  // namespace
}  // namespace kiln
