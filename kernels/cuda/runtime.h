// The CUDA backend's runtime: checked calls, the per-rank Context (device, stream, cuBLAS handle,
// GEMM scratch) and DeviceBuffer (one cudaMalloc, freed on destruction). Built only when
// KILN_HAVE_CUDA is defined; nothing outside kernels/cuda and the device forward includes it.
//
// Error policy (architecture.md §6): set-up calls (choosing a device, allocating weights, state
// and scratch) return Status naming what failed and how many bytes; a failure in the per-token
// path (a launch, a copy, a cuBLAS call) is a bug or a lost device and is fatal through
// KILN_CHECK's abort path, so no peer waits forever in a collective.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <cuda_runtime_api.h>

#include "kernels/base/status.h"

namespace kiln::cuda {

// Prints "CUDA error at file:line: expr → name (string)" and aborts (KILN_CHECK's handler).
[[noreturn]] void cuda_failed(const char* file, int line, const char* expr, int code,
                              const char* name, const char* text);
[[noreturn]] void cublas_failed(const char* file, int line, const char* expr, int code);

}  // namespace kiln::cuda

#define KILN_CUDA_CHECK(expr)                                                             \
  do {                                                                                    \
    const cudaError_t kiln_cuda_err_ = (expr);                                            \
    if (kiln_cuda_err_ != cudaSuccess) [[unlikely]]                                       \
      ::kiln::cuda::cuda_failed(__FILE__, __LINE__, #expr, static_cast<int>(kiln_cuda_err_), \
                                cudaGetErrorName(kiln_cuda_err_),                         \
                                cudaGetErrorString(kiln_cuda_err_));                      \
  } while (0)

// cuBLAS status (cublasStatus_t): 0 is CUBLAS_STATUS_SUCCESS.
#define KILN_CUBLAS_CHECK(expr)                                                         \
  do {                                                                                  \
    const int kiln_cublas_st_ = static_cast<int>(expr);                                 \
    if (kiln_cublas_st_ != 0) [[unlikely]]                                              \
      ::kiln::cuda::cublas_failed(__FILE__, __LINE__, #expr, kiln_cublas_st_);          \
  } while (0)

// After every kernel launch: catches bad launch configurations without synchronising.
#define KILN_CUDA_LAUNCH_CHECK() KILN_CUDA_CHECK(cudaGetLastError())

namespace kiln::cuda {

// Number of visible CUDA devices; 0 when there is no device or no driver.
int device_count();
// OK when `device` can be used; otherwise FailedPrecondition-like Unavailable naming the
// device, the count and the runtime's error (e.g. "no CUDA device is visible (cudaGetDeviceCount:
// cudaErrorNoDevice)").
Status check_device(int device);
// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB)"; the runtime's error text on failure.
std::string device_description(int device);
// Theoretical peak DRAM bandwidth of the device in GB/s (memory clock × bus width × 2), or 0.
double device_peak_bandwidth_gbs(int device);

// Stream-ordered copies between host and device memory, the one way kiln moves data to or from
// the GPU outside the per-token path: the copy (or zero fill) is queued on `stream` after the work
// already queued there and waited for, so on return the data is in place for every kernel queued
// on `stream` afterwards and the host buffer may be reused (pageable memory is fine). cudaMemcpy
// and cudaMemset run on the legacy default stream instead, which is not ordered with a Context's
// non-blocking stream: a pageable host-to-device cudaMemcpy returns once its source is staged,
// and a kernel on the non-blocking stream may read the destination before the transfer lands.
// Errors name the call and the bytes (a lost device; callers in set-up paths return them).
Status copy_to_device(cudaStream_t stream, void* dst, const void* src, size_t bytes);
Status copy_to_host(cudaStream_t stream, void* dst, const void* src, size_t bytes);
Status zero_device(cudaStream_t stream, void* dst, size_t bytes);

enum class MemoryKind {
  kDevice,      // cudaMalloc (never managed memory)
  kPinnedHost,  // cudaMallocHost: page-locked host memory for asynchronous copies
};

// One allocation of `K`, freed on destruction; move-only.
template <MemoryKind K>
class Allocation {
 public:
  Allocation() = default;
  // ResourceExhausted on failure, naming `what` and the bytes (device: "out of device memory:
  // <what> needs X MiB, Y MiB free of Z"). Zero bytes gives an empty one (data() == nullptr).
  static StatusOr<Allocation> allocate(int64_t bytes, std::string_view what);
  ~Allocation() { reset(); }
  Allocation(Allocation&& o) noexcept : data_(o.data_), bytes_(o.bytes_) {
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  Allocation& operator=(Allocation&& o) noexcept {
    if (this != &o) {
      reset();
      data_ = o.data_;
      bytes_ = o.bytes_;
      o.data_ = nullptr;
      o.bytes_ = 0;
    }
    return *this;
  }
  Allocation(const Allocation&) = delete;
  Allocation& operator=(const Allocation&) = delete;

  void* data() const { return data_; }
  int64_t bytes() const { return bytes_; }
  template <class T>
  T* as() const { return static_cast<T*>(data_); }

 private:
  void reset();  // frees the memory, if any
  void* data_ = nullptr;
  int64_t bytes_ = 0;
};

using DeviceBuffer = Allocation<MemoryKind::kDevice>;
using PinnedBuffer = Allocation<MemoryKind::kPinnedHost>;

// Everything one rank needs to run kernels on its GPU: the device (made current for the calling
// thread by create() and by bind()), one non-blocking stream that every kernel of this rank runs
// on, a cuBLAS handle bound to that stream, and the GEMM scratch (operand conversion for
// cuBLAS, see ops.h matmul_scratch_bytes), reserved up front and never grown in the
// per-token path. Used by one thread at a time.
class Context {
 public:
  static StatusOr<std::unique_ptr<Context>> create(int device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  void* cublas() const { return cublas_; }  // cublasHandle_t
  // Makes this context's device current for the calling thread (cudaSetDevice, checked).
  void bind() const;

  // Grows the scratch to at least `bytes` (a set-up call: it may allocate; it synchronises the
  // stream first when it must replace the old buffer).
  Status reserve_scratch(int64_t bytes);
  int64_t scratch_bytes() const { return scratch_.bytes(); }
  // The scratch; KILN_CHECK that `bytes` fits what was reserved.
  void* scratch(int64_t bytes) const;

  // Blocks until the stream's work is done (fatal on a device error).
  void synchronize() const;

 private:
  Context() = default;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  void* cublas_ = nullptr;
  DeviceBuffer scratch_;
};

}  // namespace kiln::cuda
