// Micro-benchmarks for the CPU kernels: GEMV (decode) reports effective weight bandwidth
// (bytes_per_second = weight bytes streamed), GEMM (prefill) reports GFLOP/s (2·rows·cols·n),
// plus KDA recurrent/chunked and MLA attention timings. Thread count: KILN_BENCH_THREADS (2).
#include <algorithm>
#include <cstdlib>
#include <random>
#include <vector>

#include <benchmark/benchmark.h>

#include "kernels/base/dtype.h"
#include "kernels/base/matrix.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/kda.h"
#include "kernels/cpu/mla.h"
#include "kernels/cpu/thread_pool.h"
#include "kernels/ref/quant_k.h"

namespace kiln {
namespace {

cpu::ThreadPool& pool() {
  static cpu::ThreadPool p(
      std::getenv("KILN_BENCH_THREADS") ? std::atoi(std::getenv("KILN_BENCH_THREADS")) : 2);
  return p;
}

std::vector<float> random_vec(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// Stores a random [rows][cols] matrix in `dt`.
std::vector<std::byte> make_weights(DType dt, int64_t rows, int64_t cols) {
  const auto f = random_vec(size_t(cols), 1);
  const int64_t rb = dtype_row_bytes(dt, cols);
  std::vector<std::byte> bytes(static_cast<size_t>(rows * rb));
  std::vector<uint16_t> h(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    std::byte* dst = bytes.data() + r * rb;
    switch (dt) {
      case DType::kF32:
        std::memcpy(dst, f.data(), size_t(rb));
        break;
      case DType::kF16:
      case DType::kBF16:
        for (int64_t c = 0; c < cols; ++c)
          h[size_t(c)] = dt == DType::kF16 ? f32_to_f16(f[size_t(c)]) : f32_to_bf16(f[size_t(c)]);
        std::memcpy(dst, h.data(), size_t(rb));
        break;
      case DType::kQ8_0:
        quantize_row_q8_0(f.data(), reinterpret_cast<BlockQ8_0*>(dst), cols);
        break;
      case DType::kQ4_K:
        ref::quantize_row_q4_k(f.data(), reinterpret_cast<BlockQ4_K*>(dst), cols);
        break;
      case DType::kQ6_K:
        ref::quantize_row_q6_k(f.data(), reinterpret_cast<BlockQ6_K*>(dst), cols);
        break;
    }
  }
  return bytes;
}

// Args: dtype, rows, cols, n tokens, and 1: all n are decode tokens, 0: none, −1: matmul's
// automatic choice (cpu::matmul's int8_tokens).
void BM_matmul(benchmark::State& state) {
  const auto dt = static_cast<DType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2), n = state.range(3);
  const int64_t int8_tokens = state.range(4) < 0 ? cpu::kInt8Auto : state.range(4) * n;
  const auto bytes = make_weights(dt, rows, cols);
  const auto w = MatrixView::contiguous(dt, bytes.data(), rows, cols);
  const auto x = random_vec(size_t(n * cols), 2);
  std::vector<float> y(size_t(n * rows));
  for (auto _ : state) {
    cpu::matmul(pool(), w, x.data(), cols, n, y.data(), rows, int8_tokens);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetLabel(std::string(dtype_name(dt)) +
                 (cpu::matmul_int8_tokens(pool(), dt, n, int8_tokens) > 0 ? " int8" : ""));
  state.SetBytesProcessed(state.iterations() * int64_t(bytes.size()));
  state.counters["GFLOPs"] = benchmark::Counter(double(2 * rows * cols * n) * 1e-9,
                                                benchmark::Counter::kIsIterationInvariantRate);
}

// Decode from DRAM: cycles through enough copies of the matrix (≥ 96 MiB) that none is still in
// the 32 MiB L3 when it comes round again. Args: dtype, rows, cols, tokens (1: decode; more:
// batched decode).
void BM_gemv_cold(benchmark::State& state) {
  const auto dt = static_cast<DType>(state.range(0));
  const int64_t rows = state.range(1), cols = state.range(2);
  const int64_t n = state.range(3);
  const auto one = make_weights(dt, rows, cols);
  const size_t copies = std::max<size_t>(2, (size_t{96} << 20) / one.size() + 1);
  std::vector<std::vector<std::byte>> all(copies, one);
  const auto x = random_vec(size_t(n * cols), 2);
  std::vector<float> y(static_cast<size_t>(n * rows));
  size_t i = 0;
  for (auto _ : state) {
    const auto w = MatrixView::contiguous(dt, all[i].data(), rows, cols);
    cpu::matmul(pool(), w, x.data(), cols, n, y.data(), rows);
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % copies;
  }
  state.SetLabel(std::string(dtype_name(dt)));
  state.SetBytesProcessed(state.iterations() * int64_t(one.size()));
}
BENCHMARK(BM_gemv_cold)
    ->Name("gemv_dram")
    ->ArgsProduct({{0, 1, 2, 3}, {4096}, {1024, 2304}, {1}})
    ->UseRealTime();
BENCHMARK(BM_gemv_cold)
    ->Name("gemm_dram")
    ->ArgsProduct({{2, 3}, {4096}, {1024}, {4, 8, 16}})
    ->UseRealTime();
// One MoE expert matrix of the mini shape (256 x 1024) from DRAM, 1 and 2 tokens.
BENCHMARK(BM_gemv_cold)
    ->Name("expert_dram")
    ->ArgsProduct({{2, 3}, {256}, {1024}, {1, 2}})
    ->UseRealTime();

void gemv_args(benchmark::internal::Benchmark* b) {
  for (int dt = 0; dt < 4; ++dt) {
    b->Args({dt, 2048, 1024, 1, -1});
    b->Args({dt, 4096, 1024, 1, -1});
    b->Args({dt, 4096, 2304, 1, -1});
  }
}
void gemm_args(benchmark::internal::Benchmark* b) {
  for (int dt = 0; dt < 4; ++dt)
    for (int n : {4, 16, 64, 128, 512}) b->Args({dt, 1024, 1024, n, -1});
}
BENCHMARK(BM_matmul)->Name("gemv")->Apply(gemv_args)->UseRealTime();
BENCHMARK(BM_matmul)->Name("gemm")->Apply(gemm_args)->UseRealTime();
// Batched decode over quantised weights: n decode tokens through the integer path vs the same
// tokens with f32 activations (int8_tokens = 0).
BENCHMARK(BM_matmul)
    ->Name("gemm_decode")
    ->ArgsProduct({{3, 4, 5}, {1024}, {1024}, {2, 3, 8, 16}, {0, 1}})
    ->UseRealTime();

// Args: T, chunk (0 = recurrent). H = 32, K = V = 128 (one KDA layer, no TP).
void BM_kda(benchmark::State& state) {
  const int64_t T = state.range(0), chunk = state.range(1), H = 32, K = 128, V = 128;
  auto q = random_vec(size_t(T * H * K), 3), k = random_vec(size_t(T * H * K), 4);
  const auto v = random_vec(size_t(T * H * V), 5), beta = random_vec(size_t(T * H), 6);
  auto g = random_vec(size_t(T * H * K), 7);
  for (auto& x : g) x = -0.05f * (x + 1.0f);
  for (auto& x : q) x *= 0.01f;
  for (auto& x : k) x *= 0.09f;
  std::vector<float> st(size_t(H * K * V)), o(size_t(T * H * V));
  for (auto _ : state) {
    if (chunk == 0) {
      cpu::kda_recurrent(pool(), q.data(), k.data(), v.data(), g.data(), beta.data(), T, H, K, V,
                         st.data(), o.data());
    } else {
      cpu::kda_chunked(pool(), q.data(), k.data(), v.data(), g.data(), beta.data(), T, H, K, V,
                       chunk, st.data(), o.data());
    }
    benchmark::DoNotOptimize(o.data());
  }
  state.counters["tok/s"] =
      benchmark::Counter(double(T), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_kda)->Args({1, 0})->Args({256, 0})->Args({256, 16})->Args({256, 64})->UseRealTime();

// Args: T, context before, page tokens (0: the whole cache as one page). H = 32, R = 512, P = 64.
void BM_mla(benchmark::State& state) {
  const int64_t T = state.range(0), pos0 = state.range(1), H = 32, R = 512, P = 64, W = R + P;
  const int64_t n_ctx = pos0 + T, page_tokens = state.range(2) > 0 ? state.range(2) : n_ctx;
  const auto q = random_vec(size_t(T * H * W), 8);
  const auto cache = random_vec(size_t(n_ctx * W), 9);
  std::vector<const float*> pages;
  for (int64_t p = 0; p < n_ctx; p += page_tokens) pages.push_back(cache.data() + p * W);
  std::vector<float> out(size_t(T * H * R));
  for (auto _ : state) {
    cpu::mla_attention_absorbed(pool(), q.data(), T, H, R, P, pages.data(), page_tokens, pos0,
                                0.07f, out.data());
    benchmark::DoNotOptimize(out.data());
  }
}
BENCHMARK(BM_mla)
    ->Args({1, 1024, 0})
    ->Args({1, 8192, 0})
    ->Args({1, 8192, 64})
    ->Args({1, 8192, 16})
    ->Args({64, 0, 0})
    ->Args({64, 0, 64})
    ->UseRealTime();

}  // namespace
}  // namespace kiln
