// kiln_cuda_bench: the CUDA kernels that decide prefill and decode speed, timed on the GPU with
// CUDA events (median of the timed repetitions after warm-ups): the KDA chunked prefill of one
// long sequence, the KDA recurrent decode step at batch 1–64, the GEMV that streams decode's
// weights, and MLA absorbed attention at depth. Prints one table row per case with the achieved
// bandwidth against the device's peak (memory clock × bus width).
//
// Usage: kiln_cuda_bench [--quick]   (--quick: fewer repetitions, for scripts/gpu-check.sh)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"

namespace kiln {
namespace {

int g_reps = 20;

// Median milliseconds of fn over g_reps runs, after 3 warm-ups.
double time_ms(cuda::Context& ctx, const std::function<void()>& fn) {
  cudaEvent_t a, b;
  KILN_CUDA_CHECK(cudaEventCreate(&a));
  KILN_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) fn();
  std::vector<double> ms;
  for (int i = 0; i < g_reps; ++i) {
    KILN_CUDA_CHECK(cudaEventRecord(a, ctx.stream()));
    fn();
    KILN_CUDA_CHECK(cudaEventRecord(b, ctx.stream()));
    KILN_CUDA_CHECK(cudaEventSynchronize(b));
    float t = 0;
    KILN_CUDA_CHECK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  KILN_CUDA_CHECK(cudaEventDestroy(a));
  KILN_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void check_ok(const Status& s) { KILN_CHECK_MSG(s.ok(), s.to_string()); }

// A device copy of `bytes` of host data, in the order of ctx's stream.
cuda::DeviceBuffer device_copy(const cuda::Context& ctx, const void* h, size_t bytes,
                               const char* what) {
  auto b = cuda::DeviceBuffer::allocate(static_cast<int64_t>(bytes), what);
  KILN_CHECK_MSG(b.ok(), b.status().message());
  check_ok(cuda::copy_to_device(ctx.stream(), b->data(), h, bytes));
  return std::move(b).value();
}

cuda::DeviceBuffer device_floats(const cuda::Context& ctx, const std::vector<float>& h) {
  return device_copy(ctx, h.data(), h.size() * 4, "bench data");
}

std::vector<float> uniform(int64_t n, float lo, float hi, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  return v;
}

// q and k rows L2-normalised (q also scaled by K^-1/2), as kda_prepare leaves them.
std::vector<float> unit_rows(int64_t rows, int64_t K, float scale, uint32_t seed) {
  std::vector<float> v = uniform(rows * K, -1.0f, 1.0f, seed);
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t d = 0; d < K; ++d) s += v[r * K + d] * v[r * K + d];
    const float inv = scale / static_cast<float>(std::sqrt(s) + 1e-6);
    for (int64_t d = 0; d < K; ++d) v[r * K + d] *= inv;
  }
  return v;
}

void print_row(const std::string& name, double ms, const std::string& rate, double gbs,
               double peak) {
  std::printf("| %-44s | %10.3f | %-22s | %8.1f | %5.1f%% |\n", name.c_str(), ms, rate.c_str(), gbs,
              peak > 0 ? 100.0 * gbs / peak : 0.0);
}

void bench_kda(cuda::Context& ctx, double peak, int64_t H, int64_t K) {
  const int64_t V = K;
  // Chunked prefill of one 8192-token sequence, state starting at zero.
  {
    const int64_t T = 8192;
    auto q = device_floats(ctx, unit_rows(T * H, K, 1.0f / std::sqrt(static_cast<float>(K)), 1));
    auto k = device_floats(ctx, unit_rows(T * H, K, 1.0f, 2));
    auto v = device_floats(ctx, uniform(T * H * V, -1, 1, 3));
    auto g = device_floats(ctx, uniform(T * H * K, -0.5f, -0.001f, 4));
    auto beta = device_floats(ctx, uniform(T * H, 0.05f, 0.95f, 5));
    auto o = device_floats(ctx, std::vector<float>(static_cast<size_t>(T * H * V)));
    auto state = device_floats(ctx, std::vector<float>(static_cast<size_t>(H * K * V)));
    const cuda::Span span{0, 0, 0, static_cast<int32_t>(T)};
    auto spans = device_copy(ctx, &span, sizeof(span), "span");
    for (int64_t chunk : {16, 64}) {
      const double ms = time_ms(ctx, [&] {
        cuda::kda_chunked(ctx, q.as<float>(), k.as<float>(), v.as<float>(), g.as<float>(),
                          beta.as<float>(), spans.as<cuda::Span>(), 1, T, H, K, V, chunk,
                          state.as<float>(), H * K * V, o.as<float>());
      });
      // Inputs read once and outputs written once: q, k, g, v, o and beta.
      const double bytes = 4.0 * T * H * (3 * K + 2 * V + 1);
      char name[96], rate[64];
      std::snprintf(name, sizeof(name), "kda chunked prefill T=%lld H=%lld K=V=%lld chunk %lld",
                    static_cast<long long>(T), static_cast<long long>(H),
                    static_cast<long long>(K), static_cast<long long>(chunk));
      std::snprintf(rate, sizeof(rate), "%.0f ktok/s", T / ms);
      print_row(name, ms, rate, bytes / ms / 1e6, peak);
    }
  }
  // Recurrent decode step: B sequences of one token each, each in its own slot.
  for (int64_t B : {1, 2, 4, 8, 16, 32, 64}) {
    auto q = device_floats(ctx, unit_rows(B * H, K, 1.0f / std::sqrt(static_cast<float>(K)), 6));
    auto k = device_floats(ctx, unit_rows(B * H, K, 1.0f, 7));
    auto v = device_floats(ctx, uniform(B * H * V, -1, 1, 8));
    auto g = device_floats(ctx, uniform(B * H * K, -0.5f, -0.001f, 9));
    auto beta = device_floats(ctx, uniform(B * H, 0.05f, 0.95f, 10));
    auto o = device_floats(ctx, std::vector<float>(static_cast<size_t>(B * H * V)));
    auto state = device_floats(ctx, uniform(B * H * K * V, -0.1f, 0.1f, 11));
    std::vector<cuda::Span> hs;
    for (int64_t s = 0; s < B; ++s) {
      hs.push_back({static_cast<int32_t>(s), 100, static_cast<int32_t>(s), 1});
    }
    auto spans = device_copy(ctx, hs.data(), hs.size() * sizeof(cuda::Span), "spans");
    const double ms = time_ms(ctx, [&] {
      cuda::kda_recurrent(ctx, q.as<float>(), k.as<float>(), v.as<float>(), g.as<float>(),
                          beta.as<float>(), spans.as<cuda::Span>(), B, H, K, V,
                          state.as<float>(), H * K * V, o.as<float>());
    });
    const double bytes = 2.0 * 4.0 * B * H * K * V;  // the state read and written once
    char name[96], rate[64];
    std::snprintf(name, sizeof(name), "kda decode step B=%lld H=%lld K=V=%lld",
                  static_cast<long long>(B), static_cast<long long>(H),
                  static_cast<long long>(K));
    std::snprintf(rate, sizeof(rate), "%.1f us/step", ms * 1e3);
    print_row(name, ms, rate, bytes / ms / 1e6, peak);
  }
}

void bench_gemv(cuda::Context& ctx, double peak) {
  // A weight far larger than the L2, so every byte comes from DRAM.
  const int64_t rows = 16384, cols = 8192;
  for (DType t : {DType::kBF16, DType::kQ8_0, DType::kF32}) {
    const int64_t row_bytes = dtype_row_bytes(t, cols);
    auto w = cuda::DeviceBuffer::allocate(rows * row_bytes, "gemv weight");
    KILN_CHECK_MSG(w.ok(), w.status().message());
    check_ok(cuda::zero_device(ctx.stream(), w->data(), static_cast<size_t>(rows * row_bytes)));
    const cuda::DeviceMatrix m{t, w->data(), rows, cols, row_bytes};
    for (int64_t n : {1, 8}) {
      auto x = device_floats(ctx, uniform(n * cols, -1, 1, 12));
      auto y = device_floats(ctx, std::vector<float>(static_cast<size_t>(n * rows)));
      const double ms = time_ms(ctx, [&] {
        cuda::matmul(ctx, m, x.as<float>(), cols, n, y.as<float>(), rows);
      });
      char name[96], rate[64];
      std::snprintf(name, sizeof(name), "gemv %s [%lld][%lld] x %lld tokens",
                    std::string(dtype_name(t)).c_str(), static_cast<long long>(rows),
                    static_cast<long long>(cols), static_cast<long long>(n));
      std::snprintf(rate, sizeof(rate), "%.1f GFLOP/s", 2.0 * rows * cols * n / ms / 1e6);
      print_row(name, ms, rate, static_cast<double>(rows * row_bytes) / ms / 1e6, peak);
    }
  }
}

void bench_mla(cuda::Context& ctx, double peak) {
  const int64_t H = 16, R = 256, P = 64, L = R + P, page_tokens = 64;
  for (int64_t ctx_len : {512, 8192}) {
    const int64_t n_pages = (ctx_len + page_tokens - 1) / page_tokens;
    auto latent = device_floats(ctx, uniform(n_pages * page_tokens * L, -1, 1, 13));
    auto q = device_floats(ctx, uniform(H * L, -0.2f, 0.2f, 14));
    auto out = device_floats(ctx, std::vector<float>(static_cast<size_t>(H * R)));
    std::vector<int32_t> table(static_cast<size_t>(n_pages));
    for (int64_t i = 0; i < n_pages; ++i) table[i] = static_cast<int32_t>(i);
    const int32_t zero = 0;
    const cuda::Span span{0, static_cast<int32_t>(ctx_len - 1), 0, 1};
    auto dev_table = device_copy(ctx, table.data(), table.size() * 4, "table");
    auto dev_off = device_copy(ctx, &zero, 4, "table offsets");
    auto dev_span = device_copy(ctx, &span, sizeof(span), "span");
    cuda::LatentPages pages;
    pages.base = latent.as<float>();
    pages.page_stride = page_tokens * L;
    pages.page_tokens = page_tokens;
    pages.tables = dev_table.as<int32_t>();
    pages.table_offsets = dev_off.as<int32_t>();
    const double ms = time_ms(ctx, [&] {
      cuda::mla_attention_absorbed(ctx, q.as<float>(), dev_span.as<cuda::Span>(), 1, 1, H, R, P,
                                   pages, 0.1f, out.as<float>());
    });
    char name[96], rate[64];
    std::snprintf(name, sizeof(name), "mla decode attention H=%lld R=%lld context %lld",
                  static_cast<long long>(H), static_cast<long long>(R),
                  static_cast<long long>(ctx_len));
    std::snprintf(rate, sizeof(rate), "%.1f us/token", ms * 1e3);
    print_row(name, ms, rate, 4.0 * ctx_len * L / ms / 1e6, peak);
  }
}

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      g_reps = 7;
    } else {
      std::fprintf(stderr, "usage: kiln_cuda_bench [--quick]\n");
      return 2;
    }
  }
  auto ctx = cuda::Context::create(0);
  if (!ctx.ok()) {
    std::fprintf(stderr, "kiln_cuda_bench: %s\n", ctx.status().message().c_str());
    return 1;
  }
  const double peak = cuda::device_peak_bandwidth_gbs(0);
  std::printf("device: %s, peak DRAM bandwidth %.0f GB/s; medians of %d runs\n\n",
              cuda::device_description(0).c_str(), peak, g_reps);
  std::printf("| %-44s | %10s | %-22s | %8s | %6s |\n", "case", "ms", "rate", "GB/s", "peak");
  std::printf("|%s|%s|%s|%s|%s|\n", std::string(46, '-').c_str(), std::string(12, '-').c_str(),
              std::string(24, '-').c_str(), std::string(10, '-').c_str(),
              std::string(8, '-').c_str());
  bench_kda(**ctx, peak, 16, 64);    // the mini preset's KDA shape
  bench_kda(**ctx, peak, 32, 128);   // Kimi-Linear-48B's KDA shape
  bench_mla(**ctx, peak);
  bench_gemv(**ctx, peak);
  return 0;
}

}  // namespace
}  // namespace kiln

int main(int argc, char** argv) { return kiln::run(argc, argv); }
