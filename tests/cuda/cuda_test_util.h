// Helpers for the GPU tests: one shared Context, the rule for when a GPU test may skip, and
// typed device copies of host vectors in the context's stream order. The CPU twins and the
// error statistics come from tests/kernels/kernel_test_util.h.
//
// Skip rule: a GPU test skips only where no CUDA device exists (cuda::device_count() == 0); a
// device whose context cannot be created (cuBLAS, the stream, an allocation) fails every test
// with the error. gpu_test_main.cpp turns the outcome into the exit status ctest reads: 77
// (skipped) only when every skip was "no device", a failure for any skip on a machine with one.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln::test {

// The process-wide context on device 0 (created on first use) or why there is none.
struct GpuSetup {
  bool no_device = false;             // cuda::device_count() == 0: the tests may skip
  std::unique_ptr<cuda::Context> ctx;  // null when no_device or when creation failed
  Status error;                        // why ctx is null
};

inline GpuSetup& gpu_setup() {
  static GpuSetup setup = [] {
    GpuSetup s;
    s.no_device = cuda::device_count() == 0;
    if (s.no_device) {
      s.error = cuda::check_device(0);
      return s;
    }
    auto made = cuda::Context::create(0);
    if (made.ok()) {
      s.ctx = std::move(made).value();
    } else {
      s.error = made.status();
    }
    return s;
  }();
  return setup;
}

// The shared context; null unless KILN_REQUIRE_GPU() let the test go on.
inline cuda::Context* gpu_context() { return gpu_setup().ctx.get(); }

// How many tests skipped through KILN_REQUIRE_GPU because no device exists.
inline int& no_device_skips() {
  static int n = 0;
  return n;
}

// The message of a no-device skip.
inline std::string no_device_message() {
  return "GPU test not run: " + gpu_setup().error.message();
}

// Skips the test when no CUDA device exists; fails it when one exists but the context could not
// be created (e.g. cuBLAS failed to start): a broken GPU must never look like a missing one.
#define KILN_REQUIRE_GPU()                                                                   \
  do {                                                                                       \
    const ::kiln::test::GpuSetup& kiln_gpu_ = ::kiln::test::gpu_setup();                     \
    if (kiln_gpu_.no_device) {                                                               \
      ++::kiln::test::no_device_skips();                                                     \
      GTEST_SKIP() << ::kiln::test::no_device_message();                                     \
    }                                                                                        \
    ASSERT_NE(kiln_gpu_.ctx, nullptr)                                                        \
        << "a CUDA device exists but the GPU test context could not be created: "           \
        << kiln_gpu_.error.to_string();                                                      \
  } while (0)

// The shared context's stream (the test has passed KILN_REQUIRE_GPU).
inline cudaStream_t gpu_stream() {
  KILN_CHECK_MSG(gpu_context() != nullptr, "a GPU helper was used before KILN_REQUIRE_GPU()");
  return gpu_context()->stream();
}

// A device copy of a host vector, in the shared context's stream order.
template <class T>
struct DeviceVec {
  cuda::DeviceBuffer buf;
  int64_t n = 0;
  T* get() const { return buf.as<T>(); }
};

template <class T>
DeviceVec<T> to_device(const std::vector<T>& host) {
  DeviceVec<T> d;
  d.n = static_cast<int64_t>(host.size());
  auto b = cuda::DeviceBuffer::allocate(d.n * static_cast<int64_t>(sizeof(T)), "test data");
  EXPECT_TRUE(b.ok()) << b.status().message();
  if (!b.ok()) return d;
  d.buf = std::move(b).value();
  const Status s = cuda::copy_to_device(gpu_stream(), d.get(), host.data(), sizeof(T) * host.size());
  EXPECT_TRUE(s.ok()) << s.to_string();
  return d;
}

template <class T>
DeviceVec<T> device_zeros(int64_t n) {
  return to_device(std::vector<T>(static_cast<size_t>(n), T{}));
}

// The device data once the shared context's stream has reached every call queued so far.
template <class T>
std::vector<T> to_host(const DeviceVec<T>& d) {
  std::vector<T> h(static_cast<size_t>(d.n));
  const Status s = cuda::copy_to_host(gpu_stream(), h.data(), d.get(), sizeof(T) * h.size());
  EXPECT_TRUE(s.ok()) << s.to_string();
  return h;
}

// A stored-dtype weight (StoredMatrix) copied to the device with the same row stride.
struct DeviceWeight {
  cuda::DeviceBuffer buf;
  cuda::DeviceMatrix m;
};

inline DeviceWeight to_device(const MatrixView& w) {
  DeviceWeight d;
  const int64_t bytes = w.rows * w.row_stride;
  auto b = cuda::DeviceBuffer::allocate(bytes, "test weight");
  EXPECT_TRUE(b.ok()) << b.status().message();
  if (!b.ok()) return d;
  d.buf = std::move(b).value();
  const Status s =
      cuda::copy_to_device(gpu_stream(), d.buf.data(), w.data, static_cast<size_t>(bytes));
  EXPECT_TRUE(s.ok()) << s.to_string();
  d.m = {w.dtype, d.buf.data(), w.rows, w.cols, w.row_stride};
  return d;
}

}  // namespace kiln::test
