// Machine probes for benchmarks: sustained DRAM read bandwidth and fp32 FMA throughput, measured
// with the same thread pool the kernels use.
#pragma once

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace kiln::cpu {

// Streams a buffer of `bytes` (much larger than the caches) `reps` times with every pool thread
// reading a disjoint part; returns the best GB/s (1e9 bytes/s) over the repetitions.
double probe_read_bandwidth(ThreadPool& pool, int64_t bytes = int64_t{1} << 30, int reps = 5);
// Runs independent AVX2 FMA chains on every pool thread; returns GFLOP/s (2 flops per FMA lane).
double probe_fma_peak(ThreadPool& pool);

}  // namespace kiln::cpu
