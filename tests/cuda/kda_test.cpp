// KDA on the GPU (kernels/cuda/kda.cu) against the CPU twins: the recurrence vs
// cpu::kda_recurrent, the chunked form vs cpu::kda_chunked and vs the GPU recurrence, for batches
// of several spans (lengths 1, 15, 16, 17, 100, and empty ones) in non-consecutive slots of a
// padded state pool from a non-zero state, K = V ∈ {32, 64, 128} (128: the model's head dim, with
// chunk 64 the largest shared-memory layout), odd shapes, H = 64, chunk
// ∈ {16, 32, 64}; and a chunked prefill followed by token-by-token recurrent decode == one
// chunked prefill. Inputs as the model makes them: q, k L2-normed, β ∈ (0, 1), log decays ≤ 0
// with some down to −20 per step.
// Tolerances: NMSE ≤ 1e-7 (f32) on outputs and whole state pools; |err| ≤ 1e-3 on values of
// magnitude O(1) (different summation orders and exp implementations, a few ulps per step).
#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/kda.h"
#include "kernels/cuda/ops.h"
#include "kernels/ref/ref.h"
#include "tests/cuda/cuda_test_util.h"

namespace kiln {
namespace {

using test::expect_close;
using test::random_vec;

constexpr double kNmse = 1e-7, kAbs = 1e-3;
constexpr int64_t kSlots = 8;

// One batch: spans of rows in row order, each in its own slot; inputs [T][H][K] / [T][H][V].
struct KdaBatch {
  int64_t H, K, V, T = 0, max_n = 0;
  std::vector<cuda::Span> spans;
  std::vector<float> q, k, v, g, beta;

  KdaBatch(int64_t H_, int64_t K_, int64_t V_) : H(H_), K(K_), V(V_) {}
  void add_span(int32_t slot, int32_t pos0, int32_t n) {
    spans.push_back({slot, pos0, static_cast<int32_t>(T), n});
    T += n;
    max_n = std::max<int64_t>(max_n, n);
  }
  void fill_random(uint32_t seed) {
    q = random_vec(size_t(T * H * K), seed);
    k = random_vec(size_t(T * H * K), seed + 1);
    v = random_vec(size_t(T * H * V), seed + 2, -2, 2);
    beta = random_vec(size_t(T * H), seed + 3, 0.0f, 1.0f);
    g = random_vec(size_t(T * H * K), seed + 4, -0.3f, 0.0f);
    const auto pick = random_vec(g.size(), seed + 5, 0.0f, 1.0f);
    for (size_t i = 0; i < g.size(); ++i)
      if (pick[i] < 0.15f) g[i] = -20.0f * pick[i] / 0.15f;  // strong decay, §8.2
    ref::l2_norm(k.data(), T * H, K, 1e-6f, 1.0f);
    ref::l2_norm(q.data(), T * H, K, 1e-6f, 1.0f / std::sqrt(float(K)));
  }
  int64_t slot_stride() const { return H * K * V + 3; }  // padded: slots are not back to back
  std::vector<float> initial_state(uint32_t seed) const {
    return random_vec(size_t(kSlots * slot_stride()), seed, -0.5f, 0.5f);
  }
};

// The batch with rows of `lens` in slots `slots` (non-consecutive), random inputs.
KdaBatch make_batch(int64_t H, int64_t K, int64_t V, const std::vector<int32_t>& lens,
                    const std::vector<int32_t>& slots, uint32_t seed) {
  KdaBatch b(H, K, V);
  for (size_t i = 0; i < lens.size(); ++i) b.add_span(slots[i], 0, lens[i]);
  b.fill_random(seed);
  return b;
}

// The CPU twin span by span (chunk 0: recurrent), advancing `state` in place.
std::vector<float> run_cpu(const KdaBatch& b, int64_t chunk, std::vector<float>& state) {
  cpu::ThreadPool pool(2);
  std::vector<float> o(size_t(b.T * b.H * b.V), 0.0f);
  for (const cuda::Span& s : b.spans) {
    const int64_t qk = s.begin * b.H * b.K, vo = s.begin * b.H * b.V;
    float* st = state.data() + s.slot * b.slot_stride();
    if (chunk == 0) {
      cpu::kda_recurrent(pool, b.q.data() + qk, b.k.data() + qk, b.v.data() + vo,
                         b.g.data() + qk, b.beta.data() + s.begin * b.H, s.n, b.H, b.K, b.V, st,
                         o.data() + vo);
    } else {
      cpu::kda_chunked(pool, b.q.data() + qk, b.k.data() + qk, b.v.data() + vo, b.g.data() + qk,
                       b.beta.data() + s.begin * b.H, s.n, b.H, b.K, b.V, chunk, st,
                       o.data() + vo);
    }
  }
  return o;
}

// The GPU op (chunk 0: kda_recurrent) on the batch, advancing the device state pool; the output
// starts as NaN so a row the kernel misses fails the comparison.
std::vector<float> run_gpu(const KdaBatch& b, int64_t chunk, test::DeviceVec<float>& state) {
  cuda::Context& ctx = *test::gpu_context();
  const auto q = test::to_device(b.q), k = test::to_device(b.k), v = test::to_device(b.v);
  const auto g = test::to_device(b.g), beta = test::to_device(b.beta);
  const auto spans = test::to_device(b.spans);
  auto o = test::to_device(std::vector<float>(size_t(b.T * b.H * b.V), NAN));
  const auto n_spans = static_cast<int64_t>(b.spans.size());
  if (chunk == 0) {
    cuda::kda_recurrent(ctx, q.get(), k.get(), v.get(), g.get(), beta.get(), spans.get(), n_spans,
                        b.H, b.K, b.V, state.get(), b.slot_stride(), o.get());
  } else {
    cuda::kda_chunked(ctx, q.get(), k.get(), v.get(), g.get(), beta.get(), spans.get(), n_spans,
                      b.max_n, b.H, b.K, b.V, chunk, state.get(), b.slot_stride(), o.get());
  }
  return test::to_host(o);
}

// GPU recurrent and chunked vs the CPU twins and vs each other, from a non-zero state pool.
void check_batch(const KdaBatch& b, int64_t chunk, const std::string& what) {
  const std::vector<float> st0 = b.initial_state(99);
  auto cpu_rec_st = st0, cpu_chk_st = st0;
  const auto cpu_rec = run_cpu(b, 0, cpu_rec_st);
  const auto cpu_chk = run_cpu(b, chunk, cpu_chk_st);
  auto gpu_rec_dev = test::to_device(st0), gpu_chk_dev = test::to_device(st0);
  const auto gpu_rec = run_gpu(b, 0, gpu_rec_dev);
  const auto gpu_chk = run_gpu(b, chunk, gpu_chk_dev);
  const auto gpu_rec_st = test::to_host(gpu_rec_dev), gpu_chk_st = test::to_host(gpu_chk_dev);
  expect_close(gpu_rec, cpu_rec, kNmse, kAbs, what + " recurrent out vs cpu");
  expect_close(gpu_rec_st, cpu_rec_st, kNmse, kAbs, what + " recurrent state vs cpu");
  expect_close(gpu_chk, cpu_chk, kNmse, kAbs, what + " chunked out vs cpu chunked");
  expect_close(gpu_chk_st, cpu_chk_st, kNmse, kAbs, what + " chunked state vs cpu chunked");
  expect_close(gpu_chk, gpu_rec, kNmse, kAbs, what + " chunked out vs gpu recurrent");
  expect_close(gpu_chk_st, gpu_rec_st, kNmse, kAbs, what + " chunked state vs gpu recurrent");
}

const std::vector<int32_t> kLens = {1, 15, 16, 17, 100};
const std::vector<int32_t> kSlotIds = {5, 0, 3, 7, 2};

TEST(CudaKda, RecurrentAndChunkedMatchCpu) {
  KILN_REQUIRE_GPU();
  for (const int64_t KV : {32, 64, 128}) {
    const KdaBatch b = make_batch(4, KV, KV, kLens, kSlotIds, uint32_t(KV));
    for (const int64_t chunk : {16, 64}) {
      check_batch(b, chunk, fmt::format("H=4 K=V={} chunk={}", KV, chunk));
    }
  }
}

TEST(CudaKda, OddShapesEmptySpansManyHeads) {
  KILN_REQUIRE_GPU();
  // K ≠ V, neither a power of two; empty spans (they must leave their slots alone).
  check_batch(make_batch(3, 48, 80, {0, 3, 0, 40, 33}, {1, 6, 4, 2, 0}, 7), 32,
              "H=3 K=48 V=80 chunk=32");
  check_batch(make_batch(2, 128, 32, {65, 1, 64}, {7, 1, 3}, 8), 64, "H=2 K=128 V=32 chunk=64");
  check_batch(make_batch(64, 32, 32, {1, 17, 2}, {3, 4, 6}, 9), 16, "H=64 K=V=32 chunk=16");
}

// Rows [t0_i, t0_i + n_i) of each span of `full`, as a batch of their own (same slots).
KdaBatch sub_batch(const KdaBatch& full, const std::vector<int32_t>& t0,
                   const std::vector<int32_t>& n) {
  KdaBatch b(full.H, full.K, full.V);
  const int64_t H = full.H, K = full.K, V = full.V;
  for (size_t i = 0; i < full.spans.size(); ++i) {
    const cuda::Span& s = full.spans[i];
    b.add_span(s.slot, s.pos0 + t0[i], n[i]);
    const int64_t r0 = s.begin + t0[i], r1 = r0 + n[i];
    b.q.insert(b.q.end(), full.q.begin() + r0 * H * K, full.q.begin() + r1 * H * K);
    b.k.insert(b.k.end(), full.k.begin() + r0 * H * K, full.k.begin() + r1 * H * K);
    b.g.insert(b.g.end(), full.g.begin() + r0 * H * K, full.g.begin() + r1 * H * K);
    b.v.insert(b.v.end(), full.v.begin() + r0 * H * V, full.v.begin() + r1 * H * V);
    b.beta.insert(b.beta.end(), full.beta.begin() + r0 * H, full.beta.begin() + r1 * H);
  }
  return b;
}

TEST(CudaKda, PrefillThenDecodeEqualsOnePrefill) {
  KILN_REQUIRE_GPU();
  constexpr int32_t kDecode = 4;  // tokens decoded one step at a time after the prefill
  for (const auto& [KV, chunk] : {std::tuple{64, 16}, std::tuple{128, 64}}) {
    const KdaBatch full = make_batch(2, KV, KV, kLens, kSlotIds, uint32_t(40 + KV));
    const std::vector<float> st0 = full.initial_state(5);
    auto whole_dev = test::to_device(st0);
    const auto whole = run_gpu(full, chunk, whole_dev);

    // Prefill all but the last kDecode tokens of each span (the 1-token span: an empty prefill).
    std::vector<int32_t> split, zero(full.spans.size(), 0);
    for (const cuda::Span& s : full.spans) split.push_back(s.n - std::min(s.n, kDecode));
    auto state = test::to_device(st0);
    std::vector<float> got(size_t(full.T * full.H * full.V), NAN);
    auto scatter = [&](const KdaBatch& part, const std::vector<float>& o) {
      for (size_t i = 0; i < part.spans.size(); ++i) {
        const cuda::Span& p = part.spans[i];
        const int64_t rv = full.H * full.V;
        std::copy_n(o.begin() + p.begin * rv, p.n * rv,
                    got.begin() + (full.spans[i].begin + p.pos0) * rv);
      }
    };
    const KdaBatch prefill = sub_batch(full, zero, split);
    scatter(prefill, run_gpu(prefill, chunk, state));
    for (int32_t step = 0; step < kDecode; ++step) {  // one row per span, or an empty span
      std::vector<int32_t> t0, n;
      for (size_t i = 0; i < full.spans.size(); ++i) {
        t0.push_back(std::min(split[i] + step, full.spans[i].n));
        n.push_back(split[i] + step < full.spans[i].n ? 1 : 0);
      }
      const KdaBatch dec = sub_batch(full, t0, n);
      scatter(dec, run_gpu(dec, 0, state));
    }
    const auto what = fmt::format("K=V={} chunk={}", KV, chunk);
    expect_close(got, whole, kNmse, kAbs, what + " out");
    expect_close(test::to_host(state), test::to_host(whole_dev), kNmse, kAbs, what + " state");
  }
}

}  // namespace
}  // namespace kiln
