// Kernels for the emulator's launch-limit tests (see limits_kernels.h): a bounded kernel, and
// static shared memory declared in the kernel's callee and in the callee's callee, which the
// emulator must count.
#include "tools/cuda_emu/tests/limits_kernels.h"

namespace kiln_emu::test {
namespace {

__device__ float block_total(float v) {
  __shared__ float partial[kHelperShared / sizeof(float)];
  partial[threadIdx.x] = v;
  __syncthreads();
  float s = 0.0f;
  for (unsigned i = 0; i < blockDim.x; ++i) s += partial[i];
  return s;
}

__device__ void use_shared(float* out, int dynamic_floats) {
  extern __shared__ float dyn[];
  __shared__ float own[kOwnShared / sizeof(float)];
  for (int i = static_cast<int>(threadIdx.x); i < dynamic_floats; i += blockDim.x) dyn[i] = 1.0f;
  own[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = own[threadIdx.x] + block_total(1.0f);
}

__global__ void __launch_bounds__(kBoundedThreads, 2) bounded_kernel(int* out) {
  out[(blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x] = 1;
}

__global__ void plain_kernel(int* out) {
  out[(blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x] = 1;
}

__global__ void default_shared_kernel(float* out, int dynamic_floats) {
  use_shared(out, dynamic_floats);
}

__global__ void optin_shared_kernel(float* out, int dynamic_floats) {
  use_shared(out, dynamic_floats);
}

}  // namespace

cudaError_t launch_bounded(dim3 grid, dim3 block, int* out) {
  bounded_kernel<<<grid, block>>>(out);
  return cudaGetLastError();
}

cudaError_t launch_plain(dim3 grid, dim3 block, int* out) {
  plain_kernel<<<grid, block>>>(out);
  return cudaGetLastError();
}

cudaError_t launch_default_shared(size_t dynamic, float* out) {
  default_shared_kernel<<<1, kSharedThreads, dynamic>>>(out, static_cast<int>(dynamic / 4));
  return cudaGetLastError();
}

cudaError_t launch_optin_shared(size_t dynamic, float* out) {
  optin_shared_kernel<<<1, kSharedThreads, dynamic>>>(out, static_cast<int>(dynamic / 4));
  return cudaGetLastError();
}

cudaError_t opt_in(int bytes) {
  return cudaFuncSetAttribute(optin_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              bytes);
}

}  // namespace kiln_emu::test
