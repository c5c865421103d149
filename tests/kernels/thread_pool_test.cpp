// ThreadPool: every index covered exactly once, ranges respect the grain, thread indices valid.
#include <atomic>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cpu/thread_pool.h"

namespace kiln::cpu {
namespace {

void check_cover(ThreadPool& pool, int64_t n, int64_t grain) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  std::atomic<bool> short_range{false}, bad_index{false};
  pool.parallel_for(n, grain, [&](int64_t b, int64_t e) {
    if (e - b < grain && e != n) short_range = true;
    const int ti = ThreadPool::thread_index();
    if (ti < 0 || ti >= pool.size()) bad_index = true;
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
  });
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(hits[static_cast<size_t>(i)].load(), 1) << "n=" << n << " grain=" << grain << " i=" << i;
  }
  EXPECT_FALSE(short_range) << "n=" << n << " grain=" << grain;
  EXPECT_FALSE(bad_index);
}

TEST(ThreadPool, CoversEachIndexOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 3, 7, 16, 31, 100, 1000, 4097}) {
      for (int64_t grain : {1, 2, 5, 64, 5000}) check_cover(pool, n, grain);
    }
  }
}

TEST(ThreadPool, ManyBackToBackCalls) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int rep = 0; rep < 2000; ++rep) {
    pool.parallel_for(64, 1, [&](int64_t b, int64_t e) { sum += e - b; });
  }
  EXPECT_EQ(sum.load(), 2000 * 64);
}

TEST(ThreadPool, DefaultSizeIsPositive) {
  ThreadPool pool;
  EXPECT_GE(pool.size(), 1);
  check_cover(pool, 50, 3);
}

}  // namespace
}  // namespace kiln::cpu
