// Row normalisations on the GPU (twins of kernels/cpu/norm.h): RMSNorm (plain, on chosen rows,
// fused with the residual add), the per-row L2 norm and KDA's sigmoid-gated RMSNorm. One block of
// kThreads per row: each thread walks the row with stride kThreads, the sum of squares is reduced
// in fp32 across the block, then the same thread scales the same elements, so y may alias x.
#include <cstdint>

#include "kernels/base/check.h"
#include "kernels/cuda/ops.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;  // a multiple of 32; rows of any dim are walked in strides of it

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The sum of v over the block, returned to every thread. Call once per kernel, by all threads
// (it synchronises; a second call would need a __syncthreads() before it).
__device__ float block_sum(float v) {
  __shared__ float warp_sums[32];
  __shared__ float total;
  v = warp_sum(v);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    const int n_warps = static_cast<int>((blockDim.x + 31) >> 5);
    float s = lane < n_warps ? warp_sums[lane] : 0.0f;
    s = warp_sum(s);
    if (lane == 0) total = s;
  }
  __syncthreads();
  return total;
}

__device__ __forceinline__ float sum_squares(const float* x, int64_t dim) {
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) s = fmaf(x[i], x[i], s);
  return block_sum(s);
}

// 1 / sqrt(mean(x²) + eps), as the CPU twin's rms_inv.
__device__ __forceinline__ float rms_inv(float sum_sq, int64_t dim, float eps) {
  return 1.0f / sqrtf(sum_sq / static_cast<float>(dim) + eps);
}

// y[i] = (x[i] · inv) · w[i] (w null: no weight), the CPU twin's order.
__device__ __forceinline__ void scale_row(const float* x, const float* w, float inv, int64_t dim,
                                          float* y) {
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = x[i] * inv;
    y[i] = w ? v * w[i] : v;
  }
}

// Block b normalises row src_row(b) of x (rows x_stride floats apart) into row b of y (rows
// y_stride apart).
__global__ void rms_norm_kernel(const float* x, int64_t x_stride, const int32_t* rows,
                                const float* w, int64_t dim, float eps, float* y,
                                int64_t y_stride) {
  const int64_t src = rows ? static_cast<int64_t>(rows[blockIdx.x]) : blockIdx.x;
  const float* xr = x + src * x_stride;
  const float inv = rms_inv(sum_squares(xr, dim), dim, eps);
  scale_row(xr, w, inv, dim, y + static_cast<int64_t>(blockIdx.x) * y_stride);
}

__global__ void add_rms_norm_kernel(float* h, const float* delta, const float* w, int64_t dim,
                                    float eps, float* y) {
  const int64_t off = static_cast<int64_t>(blockIdx.x) * dim;
  float* hr = h + off;
  const float* dr = delta + off;
  float s = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = hr[i] + dr[i];
    hr[i] = v;  // read back below by this same thread only
    s = fmaf(v, v, s);
  }
  const float inv = rms_inv(block_sum(s), dim, eps);
  scale_row(hr, w, inv, dim, y + off);
}

__global__ void l2_norm_kernel(float* x, int64_t dim, float eps, float scale) {
  float* xr = x + static_cast<int64_t>(blockIdx.x) * dim;
  const float a = scale / sqrtf(sum_squares(xr, dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) xr[i] = a * xr[i];
}

__global__ void gated_rms_norm_sigmoid_kernel(const float* o, const float* z, const float* w,
                                              int64_t dim, float eps, float* y) {
  const int64_t off = static_cast<int64_t>(blockIdx.x) * dim;
  const float* orow = o + off;
  const float* zr = z + off;
  float* yr = y + off;
  const float inv = rms_inv(sum_squares(orow, dim), dim, eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float gate = 1.0f / (1.0f + expf(-zr[i]));
    yr[i] = orow[i] * inv * w[i] * gate;  // ((o·inv)·w)·σ(z), the CPU twin's vector order
  }
}

// Rows map to blocks of a 1-D grid (up to 2^31 − 1 of them).
void check_rows(int64_t n_rows, int64_t dim) {
  KILN_CHECK(n_rows >= 0 && n_rows <= 0x7fffffff && dim >= 1);
}

}  // namespace

void rms_norm(Context& ctx, const float* x, const float* w, int64_t n_rows, int64_t dim,
              float eps, float* y) {
  rms_norm_strided(ctx, x, dim, w, n_rows, dim, eps, y, dim);
}

void rms_norm_strided(Context& ctx, const float* x, int64_t x_stride, const float* w,
                      int64_t n_rows, int64_t dim, float eps, float* y, int64_t y_stride) {
  check_rows(n_rows, dim);
  if (n_rows == 0) return;
  KILN_CHECK(x != nullptr && y != nullptr && x_stride >= dim && y_stride >= dim);
  rms_norm_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, ctx.stream()>>>(
      x, x_stride, nullptr, w, dim, eps, y, y_stride);
  KILN_CUDA_LAUNCH_CHECK();
}

void rms_norm_rows(Context& ctx, const float* x, const int32_t* rows, int64_t n_rows,
                   const float* w, int64_t dim, float eps, float* y) {
  check_rows(n_rows, dim);
  if (n_rows == 0) return;
  KILN_CHECK(x != nullptr && rows != nullptr && y != nullptr);
  rms_norm_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, ctx.stream()>>>(
      x, dim, rows, w, dim, eps, y, dim);
  KILN_CUDA_LAUNCH_CHECK();
}

void add_rms_norm(Context& ctx, float* h, const float* delta, const float* w, int64_t n_rows,
                  int64_t dim, float eps, float* y) {
  check_rows(n_rows, dim);
  if (n_rows == 0) return;
  KILN_CHECK(h != nullptr && delta != nullptr && y != nullptr);
  add_rms_norm_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, ctx.stream()>>>(h, delta, w,
                                                                                     dim, eps, y);
  KILN_CUDA_LAUNCH_CHECK();
}

void l2_norm(Context& ctx, float* x, int64_t n_rows, int64_t dim, float eps, float scale) {
  check_rows(n_rows, dim);
  if (n_rows == 0) return;
  KILN_CHECK(x != nullptr);
  l2_norm_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, ctx.stream()>>>(x, dim, eps, scale);
  KILN_CUDA_LAUNCH_CHECK();
}

void gated_rms_norm_sigmoid(Context& ctx, const float* o, const float* z, const float* w,
                            int64_t n_rows, int64_t dim, float eps, float* y) {
  check_rows(n_rows, dim);
  if (n_rows == 0) return;
  KILN_CHECK(o != nullptr && z != nullptr && w != nullptr && y != nullptr);
  gated_rms_norm_sigmoid_kernel<<<static_cast<unsigned>(n_rows), kThreads, 0, ctx.stream()>>>(
      o, z, w, dim, eps, y);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace kiln::cuda
