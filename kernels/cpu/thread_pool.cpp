// ThreadPool implementation: workers sleep on a condition variable between calls (after a short
// spin, so back-to-back kernels in one decode step do not pay a futex wake each), grab chunks of
// the index range from an atomic counter, and report completion through an atomic the caller waits
// on (C++20 atomic wait, futex-backed).
#include "kernels/cpu/thread_pool.h"

#include <algorithm>

#include <immintrin.h>


namespace kiln::cpu {
namespace {

thread_local int t_thread_index = 0;

// Spin iterations (each one _mm_pause) before a waiter sleeps: a few tens of microseconds.
constexpr int kSpinIters = 4000;

}  // namespace

ThreadPool::ThreadPool(int n_threads) {
  if (n_threads <= 0) n_threads = static_cast<int>(std::thread::hardware_concurrency());
  n_threads_ = std::max(1, n_threads);
  workers_.reserve(static_cast<size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    std::atomic_ref<uint64_t>(generation_).fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  for (auto& w : workers_) w.join();
}

int ThreadPool::thread_index() { return t_thread_index; }

void ThreadPool::run(int64_t n, int64_t grain, Task task, void* ctx) {
  // About four chunks per thread: contiguous enough for streaming, small enough that a thread
  // delayed by another process on the same core does not hold up the whole call.
  const int64_t per = (n + 4 * n_threads_ - 1) / (4 * n_threads_);
  {
    std::lock_guard<std::mutex> lock(mu_);
    task_ = task;
    ctx_ = ctx;
    n_ = n;
    chunk_ = std::max<int64_t>({grain, per, 1});
    next_.store(0, std::memory_order_relaxed);
    pending_.store(n_threads_ - 1, std::memory_order_relaxed);
    std::atomic_ref<uint64_t>(generation_).fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  run_chunks(0);
  for (int spin = 0; spin < kSpinIters; ++spin) {
    if (pending_.load(std::memory_order_acquire) == 0) return;
    _mm_pause();
  }
  for (int left = pending_.load(std::memory_order_acquire); left != 0;
       left = pending_.load(std::memory_order_acquire)) {
    pending_.wait(left, std::memory_order_acquire);
  }
}

void ThreadPool::run_chunks(int index) {
  (void)index;
  for (;;) {
    const int64_t b = next_.fetch_add(chunk_, std::memory_order_relaxed);
    if (b >= n_) break;
    task_(ctx_, b, std::min(n_, b + chunk_));
  }
}

void ThreadPool::worker_main(int index) {
  t_thread_index = index;
  uint64_t seen = 0;
  for (;;) {
    std::atomic_ref<uint64_t> gen(generation_);
    for (int spin = 0; spin < kSpinIters && gen.load(std::memory_order_acquire) == seen; ++spin) {
      _mm_pause();
    }
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return gen.load(std::memory_order_relaxed) != seen; });
      seen = gen.load(std::memory_order_relaxed);
      if (stop_) return;
    }
    run_chunks(index);
    // The caller may return (and start the next call) as soon as this reaches zero, so nothing
    // of this call is touched afterwards.
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) pending_.notify_one();
  }
}

}  // namespace kiln::cpu
