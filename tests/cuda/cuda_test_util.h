// Helpers for the GPU tests: skip when no device is visible, one shared Context, and typed
// device copies of host vectors. The CPU twins and the error statistics come from
// tests/kernels/kernel_test_util.h.
#pragma once

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/cuda/ops.h"
#include "kernels/cuda/runtime.h"
#include "tests/kernels/kernel_test_util.h"

namespace kiln::test {

// The process-wide context on device 0 (created on first use; null when no GPU is visible).
inline cuda::Context* gpu_context() {
  static std::unique_ptr<cuda::Context> ctx = [] {
    std::unique_ptr<cuda::Context> c;
    if (cuda::device_count() > 0) {
      auto made = cuda::Context::create(0);
      if (made.ok()) c = std::move(made).value();
    }
    return c;
  }();
  return ctx.get();
}

// Skips the test (ctest reports it as skipped) when there is no usable GPU.
#define KILN_REQUIRE_GPU()                                                         \
  do {                                                                             \
    if (::kiln::test::gpu_context() == nullptr) {                                  \
      GTEST_SKIP() << ::kiln::cuda::check_device(0).message();                   \
    }                                                                              \
  } while (0)

// A device copy of a host vector (synchronous; tests only).
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
  d.buf = std::move(b).value();
  if (d.n > 0) {
    KILN_CUDA_CHECK(cudaMemcpy(d.get(), host.data(), sizeof(T) * host.size(),
                               cudaMemcpyHostToDevice));
  }
  return d;
}

template <class T>
DeviceVec<T> device_zeros(int64_t n) {
  return to_device(std::vector<T>(static_cast<size_t>(n), T{}));
}

// Waits for the shared context's stream, then copies the device data back.
template <class T>
std::vector<T> to_host(const DeviceVec<T>& d) {
  gpu_context()->synchronize();
  std::vector<T> h(static_cast<size_t>(d.n));
  if (d.n > 0) {
    KILN_CUDA_CHECK(cudaMemcpy(h.data(), d.get(), sizeof(T) * h.size(), cudaMemcpyDeviceToHost));
  }
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
  d.buf = std::move(b).value();
  KILN_CUDA_CHECK(cudaMemcpy(d.buf.data(), w.data, static_cast<size_t>(bytes),
                             cudaMemcpyHostToDevice));
  d.m = {w.dtype, d.buf.data(), w.rows, w.cols, w.row_stride};
  return d;
}

}  // namespace kiln::test
