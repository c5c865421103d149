// The CUDA runtime pieces: checked failure reports, device queries, buffers and the Context.
#include "kernels/cuda/runtime.h"

#include <cublas_v2.h>


#include "kernels/base/check.h"

namespace kiln::cuda {

void cuda_failed(const char* file, int line, const char* expr, int code, const char* name,
                 const char* text) {
  check_failed(file, line, expr, fmt::format("CUDA error {} {} ({})", code, name, text));
}

void cublas_failed(const char* file, int line, const char* expr, int code) {
  check_failed(file, line, expr,
               fmt::format("cuBLAS error {} ({})", code,
                           cublasGetStatusString(static_cast<cublasStatus_t>(code))));
}

int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

Status check_device(int device) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("no CUDA device is visible (cudaGetDeviceCount: {}: {})",
                              cudaGetErrorName(e), cudaGetErrorString(e)));
  }
  if (device < 0 || device >= n) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("CUDA device {} does not exist ({} visible)", device, n));
  }
  return {};
}

std::string device_description(int device) {
  cudaDeviceProp p{};
  const cudaError_t e = cudaGetDeviceProperties(&p, device);
  if (e != cudaSuccess) return fmt::format("device {}: {}", device, cudaGetErrorString(e));
  return fmt::format("{} (sm_{}{}, {} SMs, {:.1f} GiB)", p.name, p.major, p.minor,
                     p.multiProcessorCount,
                     static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
}

double device_peak_bandwidth_gbs(int device) {
  int clock_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) != cudaSuccess) {
    return 0.0;
  }
  // Double data rate: two transfers per clock.
  return 2.0 * clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
}

namespace {

// Waits for `stream` after queuing an operation whose launch returned `queued`.
Status wait_queued(cudaError_t queued, cudaStream_t stream, const char* what, size_t bytes) {
  cudaError_t e = queued;
  if (e == cudaSuccess) e = cudaStreamSynchronize(stream);
  if (e == cudaSuccess) return {};
  cudaGetLastError();  // the error is reported here; do not leave it for the next launch check
  return Status(StatusCode::kUnavailable, fmt::format("{} of {} bytes: {} ({})", what, bytes,
                                                      cudaGetErrorName(e), cudaGetErrorString(e)));
}

}  // namespace

Status copy_to_device(cudaStream_t stream, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return {};
  return wait_queued(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream), stream,
                     "host-to-device copy", bytes);
}

Status copy_to_host(cudaStream_t stream, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return wait_queued(cudaSuccess, stream, "device-to-host copy", bytes);
  return wait_queued(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream), stream,
                     "device-to-host copy", bytes);
}

Status zero_device(cudaStream_t stream, void* dst, size_t bytes) {
  if (bytes == 0) return {};
  return wait_queued(cudaMemsetAsync(dst, 0, bytes, stream), stream, "zero fill", bytes);
}

namespace {

Status out_of_memory(int64_t bytes, std::string_view what, cudaError_t e) {
  size_t free_b = 0, total_b = 0;
  cudaGetLastError();  // clear the sticky-free allocation error before querying
  cudaMemGetInfo(&free_b, &total_b);
  constexpr double kMiB = 1024.0 * 1024.0;
  return Status(StatusCode::kResourceExhausted,
                fmt::format("out of device memory: {} needs {:.1f} MiB, {:.1f} MiB free of {:.1f} "
                            "({})",
                            what, static_cast<double>(bytes) / kMiB,
                            static_cast<double>(free_b) / kMiB,
                            static_cast<double>(total_b) / kMiB, cudaGetErrorName(e)));
}

}  // namespace

template <MemoryKind K>
StatusOr<Allocation<K>> Allocation<K>::allocate(int64_t bytes, std::string_view what) {
  KILN_CHECK(bytes >= 0);
  Allocation a;
  if (bytes == 0) return a;
  const cudaError_t e = K == MemoryKind::kDevice
                            ? cudaMalloc(&a.data_, static_cast<size_t>(bytes))
                            : cudaMallocHost(&a.data_, static_cast<size_t>(bytes));
  if (e != cudaSuccess) {
    a.data_ = nullptr;
    if (K == MemoryKind::kDevice) return out_of_memory(bytes, what, e);
    cudaGetLastError();
    return Status(StatusCode::kResourceExhausted,
                  fmt::format("cannot pin {} bytes of host memory for {} ({})", bytes, what,
                              cudaGetErrorName(e)));
  }
  a.bytes_ = bytes;
  return a;
}

template <MemoryKind K>
void Allocation<K>::reset() {
  if (data_ == nullptr) return;
  if (K == MemoryKind::kDevice) {
    cudaFree(data_);
  } else {
    cudaFreeHost(data_);
  }
  data_ = nullptr;
  bytes_ = 0;
}

template class Allocation<MemoryKind::kDevice>;
template class Allocation<MemoryKind::kPinnedHost>;

StatusOr<std::unique_ptr<Context>> Context::create(int device) {
  KILN_RETURN_IF_ERROR(check_device(device));
  std::unique_ptr<Context> c(new Context());
  c->device_ = device;
  cudaError_t e = cudaSetDevice(device);
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream_, cudaStreamNonBlocking);
  if (e != cudaSuccess) {
    return Status(StatusCode::kUnavailable,
                  fmt::format("cannot use CUDA device {}: {}", device, cudaGetErrorString(e)));
  }
  cublasHandle_t h = nullptr;
  const cublasStatus_t st = cublasCreate(&h);
  if (st != CUBLAS_STATUS_SUCCESS) {
    return Status(StatusCode::kUnavailable, fmt::format("cuBLAS could not start on device {}: {}",
                                                        device, cublasGetStatusString(st)));
  }
  c->cublas_ = h;
  KILN_CUBLAS_CHECK(cublasSetStream(h, c->stream_));
  // Results must not depend on the cuBLAS workspace heuristics of other streams.
  KILN_CUBLAS_CHECK(cublasSetMathMode(h, CUBLAS_DEFAULT_MATH));
  return c;
}

Context::~Context() {
  if (cublas_ != nullptr) cublasDestroy(static_cast<cublasHandle_t>(cublas_));
  if (stream_ != nullptr) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
}

void Context::bind() const { KILN_CUDA_CHECK(cudaSetDevice(device_)); }

Status Context::reserve_scratch(int64_t bytes) {
  if (bytes <= scratch_.bytes()) return {};
  synchronize();  // the old scratch may still be in use by queued kernels
  scratch_ = DeviceBuffer();
  KILN_ASSIGN_OR_RETURN(scratch_, DeviceBuffer::allocate(bytes, "GEMM scratch"));
  return {};
}

void* Context::scratch(int64_t bytes) const {
  KILN_CHECK_MSG(bytes <= scratch_.bytes(),
                 fmt::format("GEMM scratch of {} bytes needed, {} reserved", bytes,
                             scratch_.bytes()));
  return scratch_.data();
}

void Context::synchronize() const { KILN_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

}  // namespace kiln::cuda
