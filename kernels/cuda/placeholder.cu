// Placeholder CUDA translation unit: proves the CUDA toolchain builds and links kiln targets.
// The CUDA kernels (same signatures as kernels/cpu) land here.
#include <cuda_runtime.h>

namespace kiln::cuda {

__global__ void fill_kernel(float* y, float value, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = value;
}

// Returns the number of visible CUDA devices, or -1 when the runtime reports an error.
int device_count() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : -1;
}

}  // namespace kiln::cuda
