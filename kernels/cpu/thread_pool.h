// ThreadPool: one persistent set of worker threads for all CPU kernels. parallel_for splits
// [0, n) into contiguous ranges, runs them on the workers plus the calling thread, and returns
// when all are done. No thread creation and no heap allocation per call.
// Thread safety: one parallel_for at a time per pool (the engine thread owns the pool).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln::cpu {

class ThreadPool {
 public:
  // n_threads <= 0 picks std::thread::hardware_concurrency().
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Numerics of the kernels run through this pool: when set, matmuls over quantised weights keep
  // f32 activations in decode-sized products too (the reference arithmetic, slower) instead of
  // quantising them to int8 (see gemm.h). Set before use; not synchronised.
  void set_exact_activations(bool on) { exact_activations_ = on; }
  bool exact_activations() const { return exact_activations_; }

  // Calls fn(begin, end) over disjoint ranges covering [0, n). Ranges are at least `grain`
  // long (except the last); with n <= grain everything runs on the calling thread.
  template <typename F>
  void parallel_for(int64_t n, int64_t grain, F&& fn) {
    if (n <= 0) return;
    if (n_threads_ == 1 || n <= grain) {
      fn(int64_t{0}, n);
      return;
    }
    auto trampoline = [](void* ctx, int64_t b, int64_t e) { (*static_cast<F*>(ctx))(b, e); };
    run(n, grain, trampoline, static_cast<void*>(&fn));
  }

  // Index of the calling worker in [0, size()) while inside parallel_for (0 for the caller).
  static int thread_index();

 private:
  using Task = void (*)(void*, int64_t, int64_t);
  void run(int64_t n, int64_t grain, Task task, void* ctx);
  void worker_main(int index);
  void run_chunks(int index);

  int n_threads_ = 1;
  bool exact_activations_ = false;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t generation_ = 0;     // guarded by mu_
  bool stop_ = false;           // guarded by mu_
  Task task_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
};

}  // namespace kiln::cpu
