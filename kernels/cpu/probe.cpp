#include "kernels/cpu/probe.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include <immintrin.h>

namespace kiln::cpu {

double probe_read_bandwidth(ThreadPool& pool, int64_t bytes, int reps) {
  const int64_t n = bytes / 32;  // 8-float vectors
  std::vector<float> storage(static_cast<size_t>(n) * 8);
  float* buf = storage.data();
  // Touch every page first (on the threads that will read it) so the probe measures reads only.
  pool.parallel_for(n, 4096, [&](int64_t b, int64_t e) {
    std::memset(buf + b * 8, 1, static_cast<size_t>(e - b) * 32);
  });
  std::vector<float> sink(static_cast<size_t>(pool.size()) * 16, 0.0f);
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    pool.parallel_for(n, n / pool.size() + 1, [&](int64_t b, int64_t e) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      int64_t i = b;
      for (; i + 4 <= e; i += 4) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(buf + i * 8));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(buf + (i + 1) * 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(buf + (i + 2) * 8));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(buf + (i + 3) * 8));
      }
      for (; i < e; ++i) a0 = _mm256_add_ps(a0, _mm256_loadu_ps(buf + i * 8));
      __m256 s = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
      _mm256_storeu_ps(&sink[static_cast<size_t>(ThreadPool::thread_index()) * 16], s);
    });
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, static_cast<double>(n) * 32 / sec / 1e9);
  }
  return best;
}

double probe_fma_peak(ThreadPool& pool) {
  constexpr int64_t kIters = 20'000'000;
  std::vector<float> sink(static_cast<size_t>(pool.size()) * 8, 0.0f);
  const auto t0 = std::chrono::steady_clock::now();
  pool.parallel_for(pool.size(), 1, [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; ++w) {
      __m256 acc[10];
      for (int j = 0; j < 10; ++j) acc[j] = _mm256_set1_ps(static_cast<float>(j));
      const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
      for (int64_t i = 0; i < kIters / 10; ++i) {
        for (int j = 0; j < 10; ++j) acc[j] = _mm256_fmadd_ps(acc[j], m, a);
      }
      __m256 s = acc[0];
      for (int j = 1; j < 10; ++j) s = _mm256_add_ps(s, acc[j]);
      _mm256_storeu_ps(&sink[static_cast<size_t>(w) * 8], s);
    }
  });
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return static_cast<double>(pool.size()) * kIters * 8 * 2 / sec / 1e9;
}

}  // namespace kiln::cpu
