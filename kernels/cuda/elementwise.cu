// Element-wise fp32 ops on the GPU (twins of kernels/cpu/elementwise.h): SwiGLU's SiLU(gate)·up,
// the in-place sigmoid and the residual add. One thread per element in a grid-stride loop; an
// element's result depends only on its own inputs, so it is the same wherever it sits in a batch.
#include <algorithm>
#include <cstdint>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU; larger arrays are covered by the grid-stride loop.
constexpr int64_t kMaxBlocks = 4096;

int grid_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, kMaxBlocks));
}

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// out may alias gate or up: element i is read and then written by the same thread.
__global__ void silu_mul_kernel(const float* gate, const float* up, int64_t n, float* out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float g = gate[i];
    out[i] = g * sigmoid(g) * up[i];  // (g·σ(g))·up, the CPU twin's order
  }
}

__global__ void sigmoid_kernel(float* x, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    x[i] = sigmoid(x[i]);
  }
}

__global__ void add_kernel(float* y, const float* x, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    y[i] += x[i];
  }
}

}  // namespace

void silu_mul(Context& ctx, const float* gate, const float* up, int64_t n, float* out) {
  KILN_CHECK(n >= 0);
  if (n == 0) return;
  KILN_CHECK(gate != nullptr && up != nullptr && out != nullptr);
  silu_mul_kernel<<<grid_for(n), kThreads, 0, ctx.stream()>>>(gate, up, n, out);
  KILN_CUDA_LAUNCH_CHECK();
}

void sigmoid_inplace(Context& ctx, float* x, int64_t n) {
  KILN_CHECK(n >= 0);
  if (n == 0) return;
  KILN_CHECK(x != nullptr);
  sigmoid_kernel<<<grid_for(n), kThreads, 0, ctx.stream()>>>(x, n);
  KILN_CUDA_LAUNCH_CHECK();
}

void add_inplace(Context& ctx, float* y, const float* x, int64_t n) {
  KILN_CHECK(n >= 0);
  if (n == 0) return;
  KILN_CHECK(y != nullptr && x != nullptr);
  add_kernel<<<grid_for(n), kThreads, 0, ctx.stream()>>>(y, x, n);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
