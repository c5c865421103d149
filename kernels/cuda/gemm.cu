// The CUDA matrix products over stored-dtype weights (f32, f16, bf16, q8_0, q4_k, q6_k), fp32
// accumulation: matmul (a warp-per-row GEMV for up to kGemvMaxRows tokens, cuBLAS above it), the
// MoE grouped expert matmul and the embedding lookup. Weight decoding is in gemm_quant.cuh.
// Nothing here allocates: the cuBLAS operands (x split into 16-bit hi + lo, quantised weights
// dequantised to f32) go to the context's scratch.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/base/check.h"
#include "kernels/cuda/gemm_quant.cuh"
#include "kernels/cuda/ops.h"

namespace kiln::cuda {
namespace {

// Calls f(std::integral_constant<DType, t>{}) for every weight dtype the kernels decode (one
// instantiation per dtype); any other dtype is a bug.
template <class F>
void with_weight_dtype(DType t, F&& f) {
  switch (t) {
    case DType::kF32: return f(std::integral_constant<DType, DType::kF32>{});
    case DType::kF16: return f(std::integral_constant<DType, DType::kF16>{});
    case DType::kBF16: return f(std::integral_constant<DType, DType::kBF16>{});
    case DType::kQ8_0: return f(std::integral_constant<DType, DType::kQ8_0>{});
    case DType::kQ4_K: return f(std::integral_constant<DType, DType::kQ4_K>{});
    case DType::kQ6_K: return f(std::integral_constant<DType, DType::kQ6_K>{});
  }
  KILN_CHECK_MSG(false, "CUDA matmul: unsupported weight dtype");
}

using gemm_detail::convert_unit;
using gemm_detail::k_quant_lane;
using gemm_detail::kIsKQuant;
using gemm_detail::kLaneElems;
using gemm_detail::kSuperBlockBytes;
using gemm_detail::kUnitElems;
using gemm_detail::load_weight;

constexpr int kWarp = 32;
constexpr int kRowWarps = 4;  // warps per GEMV / grouped block; one weight row per warp
constexpr int kRowThreads = kRowWarps * kWarp;
constexpr int kGroupTile = 8;         // assignments sharing one pass over a weight row
constexpr int64_t kChunkRows = 4096;  // quantised rows dequantised to f32 per cuBLAS call
constexpr int kEltThreads = 256;      // block size of the element-wise conversion kernels
constexpr int64_t kMaxEltBlocks = 8192;
constexpr int64_t kScratchAlign = 256;

int64_t round_up(int64_t v, int64_t a) { return (v + a - 1) / a * a; }

// ---- device helpers ---------------------------------------------------------------------------

// The 16 bytes of raw as f32: 4 f32, or 8 f16/bf16 in memory order.
template <DType DT, int N>
__device__ __forceinline__ void unpack16(const uint4& raw, float (&out)[N]) {
  const unsigned int words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if constexpr (DT == DType::kF32) {
      out[i] = __uint_as_float(words[i]);
    } else {
      const auto lo = static_cast<unsigned short>(words[i] & 0xffffu);
      const auto hi = static_cast<unsigned short>(words[i] >> 16);
      if constexpr (DT == DType::kF16) {
        out[2 * i] = __half2float(__ushort_as_half(lo));
        out[2 * i + 1] = __half2float(__ushort_as_half(hi));
      } else {
        out[2 * i] = __bfloat162float(__ushort_as_bfloat16(lo));
        out[2 * i + 1] = __bfloat162float(__ushort_as_bfloat16(hi));
      }
    }
  }
}

// One warp: acc[t] = Σ_{c<cols} w[c] · xr[t][c] for t < nt (acc[t] = 0 for t ≥ nt). For
// f32/f16/bf16 rows that are 16-byte aligned, lane l loads 16 bytes at a time (elements
// 256·s + 8·l … +7 for 16-bit types, 128·s + 4·l … +3 for f32) while whole warp-wide steps fit;
// otherwise, and for the tail, lane l reads elements l, l + 32, …; for q8_0 lane l takes whole
// blocks l, l + 32, … (scale once per block); for the k-quants the warp
// decodes one super-block at a time, lane l its elements l + 32·i. The warp reads each weight
// byte once for all nt token rows; after the butterfly reduction every lane holds the full sums.
// nt is uniform across the warp, so the `t < nt` branches do not diverge; xr[t] is only read for
// t < nt.
template <DType DT, int NT>
__device__ __forceinline__ void warp_row_dot(const unsigned char* wrow, int cols,
                                             const float* const (&xr)[NT], int nt,
                                             float (&acc)[NT]) {
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
#pragma unroll
  for (int t = 0; t < NT; ++t) acc[t] = 0.0f;
  if constexpr (kIsKQuant<DT>) {
    const unsigned char* blk = wrow;
    for (int c0 = lane; c0 < cols; c0 += kQKBlock, blk += kSuperBlockBytes<DT>) {
      float wv[kLaneElems];
      k_quant_lane<DT>(blk, lane, wv);
#pragma unroll
      for (int i = 0; i < kLaneElems; ++i) {
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          if (t < nt) acc[t] = fmaf(wv[i], __ldg(xr[t] + c0 + kWarp * i), acc[t]);
        }
      }
    }
  } else if constexpr (DT == DType::kQ8_0) {
    // Lane l takes whole 32-element blocks l, l + 32, …: its f16 scale once, the int8 values two
    // at a time (blocks are 34 bytes, so only 2-byte aligned), a per-block sum per token, then
    // acc += d · sum (the CPU's order of scaling).
    const int blocks = cols / kQ8Block;
    for (int b = lane; b < blocks; b += kWarp) {
      const unsigned char* blk = wrow + static_cast<int64_t>(b) * gemm_detail::kQ8BlockBytes;
      const float d = gemm_detail::load_f16(blk);
      const int c0 = b * kQ8Block;
      float part[NT];
#pragma unroll
      for (int t = 0; t < NT; ++t) part[t] = 0.0f;
#pragma unroll 4
      for (int i = 0; i < kQ8Block; i += 2) {
        const unsigned short pair = __ldg(reinterpret_cast<const unsigned short*>(blk + 2 + i));
        const float q0 = static_cast<float>(static_cast<signed char>(pair & 0xffu));
        const float q1 = static_cast<float>(static_cast<signed char>(pair >> 8));
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          if (t < nt) {
            part[t] = fmaf(q0, __ldg(xr[t] + c0 + i), part[t]);
            part[t] = fmaf(q1, __ldg(xr[t] + c0 + i + 1), part[t]);
          }
        }
      }
#pragma unroll
      for (int t = 0; t < NT; ++t) acc[t] = fmaf(d, part[t], acc[t]);
    }
  } else {
    int c_tail = 0;
    {
      // 16-byte weight loads (8 f16/bf16 or 4 f32 per lane) while whole warp-wide steps fit and
      // the row is 16-byte aligned (uniform across the warp): lane l takes the kVec elements
      // starting at step·kVec·32 + kVec·l. The rest of the row goes through the loop below.
      constexpr int kVec = DT == DType::kF32 ? 4 : 8;
      if (reinterpret_cast<uintptr_t>(wrow) % 16 == 0) {
        const int steps = cols / (kVec * kWarp);
        for (int s = 0; s < steps; ++s) {
          const int c = (s * kWarp + lane) * kVec;
          const uint4 raw = __ldg(reinterpret_cast<const uint4*>(wrow) + s * kWarp + lane);
          float wv[kVec];
          unpack16<DT>(raw, wv);
#pragma unroll
          for (int i = 0; i < kVec; ++i) {
#pragma unroll
            for (int t = 0; t < NT; ++t) {
              if (t < nt) acc[t] = fmaf(wv[i], __ldg(xr[t] + c + i), acc[t]);
            }
          }
        }
        c_tail = steps * kVec * kWarp;
      }
    }
    for (int c = c_tail + lane; c < cols; c += kWarp) {
      const float wv = load_weight<DT>(wrow, c);
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        if (t < nt) acc[t] = fmaf(wv, __ldg(xr[t] + c), acc[t]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < NT; ++t) {
#pragma unroll
    for (int o = kWarp / 2; o > 0; o /= 2) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
  }
}

// ---- kernels --------------------------------------------------------------------------------

// GEMV, n ≤ NT tokens: grid.x = ceil(rows / kRowWarps), warp w of block b computes weight row
// r = b·kRowWarps + w for all n tokens: y[t·y_stride + r] = Σ_c w[r][c] · x[t·x_stride + c].
// A warp past the last row returns as a whole (no shuffles are left half-done).
template <DType DT, int NT>
__global__ void __launch_bounds__(kRowThreads)
    gemv_kernel(const unsigned char* w, int64_t rows, int cols, int64_t row_stride, const float* x,
                int64_t x_stride, int n, float* y, int64_t y_stride) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  if (r >= rows) return;
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const float* xr[NT];
#pragma unroll
  for (int t = 0; t < NT; ++t) xr[t] = x + static_cast<int64_t>(min(t, n - 1)) * x_stride;
  float acc[NT];
  warp_row_dot<DT, NT>(w + r * row_stride, cols, xr, n, acc);
  // After the butterfly every lane holds every sum; lane t stores token t's.
#pragma unroll
  for (int t = 0; t < NT; ++t) {
    if (t < n && lane == t) y[static_cast<int64_t>(t) * y_stride + r] = acc[t];
  }
}

// Grouped expert matmul: grid = (ceil(rows / kRowWarps), E). Block (bx, e), warp w handles
// row r = bx·kRowWarps + w of expert e for every assignment of e, in tiles of up to kGroupTile
// assignments (one pass over the weight row per tile; later passes hit L2):
//   y[a·y_stride + r] = Σ_c W_e[r][c] · x[(a / x_row_div)·x_stride + c],  a ∈ order[offsets[e]..
// offsets[e+1]). Blocks of experts with no assignments exit at once. No shared memory is used.
template <DType DT>
__global__ void __launch_bounds__(kRowThreads)
    grouped_kernel(const unsigned char* w, int64_t expert_stride, int64_t rows, int cols,
                   int64_t row_stride, const int32_t* offsets, const int32_t* order, const float* x,
                   int64_t x_stride, int64_t x_row_div, float* y, int64_t y_stride) {
  const int e = static_cast<int>(blockIdx.y);
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kRowWarps + threadIdx.x / kWarp;
  if (r >= rows) return;
  const int lane = static_cast<int>(threadIdx.x) % kWarp;
  const int begin = __ldg(offsets + e);
  const int end = __ldg(offsets + e + 1);
  const unsigned char* wrow = w + e * expert_stride + r * row_stride;
  for (int base = begin; base < end; base += kGroupTile) {
    const int nt = min(kGroupTile, end - base);
    int64_t a[kGroupTile];
    const float* xr[kGroupTile];
#pragma unroll
    for (int j = 0; j < kGroupTile; ++j) {
      // j ≥ nt re-reads the tile's last assignment, keeping every load inside order[begin, end).
      a[j] = __ldg(order + base + min(j, nt - 1));
      xr[j] = x + (a[j] / x_row_div) * x_stride;
    }
    float acc[kGroupTile];
    warp_row_dot<DT, kGroupTile>(wrow, cols, xr, nt, acc);
#pragma unroll
    for (int j = 0; j < kGroupTile; ++j) {
      if (j < nt && lane == j) y[a[j] * y_stride + r] = acc[j];
    }
  }
}

// Embedding: block t writes out[t·cols + c] for c < cols: the table row (ids[t] − vocab_begin)
// converted to f32 when ids[t] ∈ [vocab_begin, vocab_end), zeros otherwise.
template <DType DT>
__global__ void embedding_kernel(const unsigned char* table, int cols, int64_t row_stride,
                                 const int32_t* ids, int64_t vocab_begin, int64_t vocab_end,
                                 float* out) {
  const int64_t t = blockIdx.x;
  const int64_t id = __ldg(ids + t);
  float* o = out + t * cols;
  if (id < vocab_begin || id >= vocab_end) {
    for (int c = static_cast<int>(threadIdx.x); c < cols; c += static_cast<int>(blockDim.x)) {
      o[c] = 0.0f;
    }
    return;
  }
  const unsigned char* row = table + (id - vocab_begin) * row_stride;
  for (int u = static_cast<int>(threadIdx.x); u < cols / kUnitElems<DT>;
       u += static_cast<int>(blockDim.x)) {
    convert_unit<DT>(row, u, o);
  }
}

// Rounds v to T, stores it at p and returns the rounded value as f32.
__device__ __forceinline__ float store_rounded(__half* p, float v) {
  const __half h = __float2half_rn(v);
  *p = h;
  return __half2float(h);
}
__device__ __forceinline__ float store_rounded(__nv_bfloat16* p, float v) {
  const __nv_bfloat16 h = __float2bfloat16_rn(v);
  *p = h;
  return __bfloat162float(h);
}

// x split into two 16-bit parts, packed [n][cols]: hi = T(x), lo = T(x − hi) for
// x = x[t·x_stride + c] (grid-stride loop over the n·cols elements). x − hi is exact in f32.
template <class T>
__global__ void split_x_kernel(const float* x, int64_t x_stride, int64_t n, int64_t cols, T* hi,
                               T* lo) {
  const int64_t total = n * cols;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    const int64_t t = i / cols, c = i - t * cols;
    const float v = x[t * x_stride + c];
    store_rounded(lo + i, v - store_rounded(hi + i, v));
  }
}

// Quantised rows to f32, packed: dst[i·cols + c] = w[i][c] for i < n_rows (w: the first row of
// the chunk, rows row_stride bytes apart; grid-stride loop over the rows' conversion units).
template <DType DT>
__global__ void dequant_f32_kernel(const unsigned char* w, int64_t row_stride, int64_t n_rows,
                                   int64_t cols, float* dst) {
  const int64_t units = cols / kUnitElems<DT>;
  const int64_t total = n_rows * units;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += step) {
    const int64_t r = i / units, u = i - r * units;
    convert_unit<DT>(w + r * row_stride, u, dst + r * cols);
  }
}

// ---- host helpers -----------------------------------------------------------------------------

// Alignment in bytes that the kernels' loads need of the data pointer and the row stride.
int64_t load_align(DType t) { return t == DType::kF32 ? 4 : 2; }

// Shape and layout checks shared by every entry point (KILN_CHECK: a bad matrix is a bug).
void check_matrix(const DeviceMatrix& w) {
  KILN_CHECK(w.rows >= 0 && w.cols >= 0);
  KILN_CHECK(w.cols <= std::numeric_limits<int>::max());
  KILN_CHECK(w.cols % dtype_block_elems(w.dtype) == 0);
  KILN_CHECK(w.row_stride >= dtype_row_bytes(w.dtype, w.cols));
  KILN_CHECK(w.row_stride % load_align(w.dtype) == 0);
  KILN_CHECK(reinterpret_cast<uintptr_t>(w.data) % static_cast<uintptr_t>(load_align(w.dtype)) ==
             0);
  KILN_CHECK(w.rows == 0 || w.data != nullptr);
}

int elt_blocks(int64_t total) {
  return static_cast<int>(
      std::clamp<int64_t>((total + kEltThreads - 1) / kEltThreads, 1, kMaxEltBlocks));
}

template <DType DT, int NT>
void launch_gemv(Context& ctx, const DeviceMatrix& w, const float* x, int64_t x_stride, int n,
                 float* y, int64_t y_stride) {
  const int64_t blocks = (w.rows + kRowWarps - 1) / kRowWarps;
  KILN_CHECK(blocks <= std::numeric_limits<int>::max());
  gemv_kernel<DT, NT><<<static_cast<unsigned>(blocks), kRowThreads, 0, ctx.stream()>>>(
      static_cast<const unsigned char*>(w.data), w.rows, static_cast<int>(w.cols), w.row_stride, x,
      x_stride, n, y, y_stride);
  KILN_CUDA_LAUNCH_CHECK();
}

// The GEMV instantiation with the fewest accumulators that holds n ≤ 16 tokens.
template <DType DT>
void gemv_tokens(Context& ctx, const DeviceMatrix& w, const float* x, int64_t x_stride, int n,
                 float* y, int64_t y_stride) {
  if (n <= 1) return launch_gemv<DT, 1>(ctx, w, x, x_stride, n, y, y_stride);
  if (n <= 2) return launch_gemv<DT, 2>(ctx, w, x, x_stride, n, y, y_stride);
  if (n <= 4) return launch_gemv<DT, 4>(ctx, w, x, x_stride, n, y, y_stride);
  if (n <= 8) return launch_gemv<DT, 8>(ctx, w, x, x_stride, n, y, y_stride);
  return launch_gemv<DT, 16>(ctx, w, x, x_stride, n, y, y_stride);
}

void gemv(Context& ctx, const DeviceMatrix& w, const float* x, int64_t x_stride, int n, float* y,
          int64_t y_stride) {
  static_assert(kGemvMaxRows <= 16, "gemv_tokens instantiates up to 16 accumulators");
  with_weight_dtype(w.dtype, [&](auto dt) {
    gemv_tokens<decltype(dt)::value>(ctx, w, x, x_stride, n, y, y_stride);
  });
}

// Bytes of one 16-bit part of x, packed [n][cols], rounded up to the scratch alignment.
int64_t x16_bytes(const DeviceMatrix& w, int64_t n) {
  return round_up(n * w.cols * 2, kScratchAlign);
}

// Column-major view of the row-major product (cuBLAS is column-major): W [rows][cols] with
// row_stride bytes is A = cols×rows with lda = row_stride / elem; x [n][cols] is B = cols×n with
// ldb = its row stride; y [n][rows] is C = rows×n with ldc = y_stride. Then y^T = W·x^T reads
// C(rows×n) = op_T(A) · B + beta · C, k = cols. fp32 compute and accumulation (no TF32: the
// context's handle keeps CUBLAS_DEFAULT_MATH); alpha = 1; beta = 0 overwrites C, 1 adds to it.
void gemm_ex(Context& ctx, const void* a, cudaDataType a_type, int64_t lda, const void* b,
             cudaDataType b_type, int64_t ldb, int64_t m, int64_t n, int64_t k, float beta,
             float* c, int64_t ldc) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  KILN_CHECK(m <= kMax && n <= kMax && k <= kMax && lda <= kMax && ldb <= kMax && ldc <= kMax);
  const float alpha = 1.0f;
  KILN_CUBLAS_CHECK(cublasGemmEx(static_cast<cublasHandle_t>(ctx.cublas()), CUBLAS_OP_T,
                                 CUBLAS_OP_N, static_cast<int>(m), static_cast<int>(n),
                                 static_cast<int>(k), &alpha, a, a_type, static_cast<int>(lda), b,
                                 b_type, static_cast<int>(ldb), &beta, c, CUDA_R_32F,
                                 static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// f16 / bf16 weights (T, cuBLAS type `type`): x = hi + lo in T (split_x_kernel), then
// y = W·hi (beta 0) and y += W·lo (beta 1). Scratch: [hi, packed [n][cols]] [lo, the same].
template <class T>
void gemm_split(Context& ctx, const DeviceMatrix& w, cudaDataType type, const float* x,
                int64_t x_stride, int64_t n, float* y, int64_t y_stride) {
  auto* base = static_cast<unsigned char*>(ctx.scratch(matmul_scratch_bytes(w, n)));
  auto* hi = reinterpret_cast<T*>(base);
  auto* lo = reinterpret_cast<T*>(base + x16_bytes(w, n));
  split_x_kernel<T>
      <<<elt_blocks(n * w.cols), kEltThreads, 0, ctx.stream()>>>(x, x_stride, n, w.cols, hi, lo);
  KILN_CUDA_LAUNCH_CHECK();
  const int64_t lda = w.row_stride / 2;
  gemm_ex(ctx, w.data, type, lda, hi, type, w.cols, w.rows, n, w.cols, 0.0f, y, y_stride);
  gemm_ex(ctx, w.data, type, lda, lo, type, w.cols, w.rows, n, w.cols, 1.0f, y, y_stride);
}

// Quantised weights: chunks of ≤ kChunkRows rows dequantised to f32 (exact) into the scratch
// ([chunk][cols] packed), each multiplied with the f32 x in place by an f32 GEMM. Chunks run in
// stream order, so reusing the buffer is safe.
template <DType DT>
void gemm_dequant(Context& ctx, const DeviceMatrix& w, const float* x, int64_t x_stride, int64_t n,
                  float* y, int64_t y_stride) {
  auto* chunk = static_cast<float*>(ctx.scratch(matmul_scratch_bytes(w, n)));
  const auto* wb = static_cast<const unsigned char*>(w.data);
  for (int64_t r0 = 0; r0 < w.rows; r0 += kChunkRows) {
    const int64_t m = std::min(kChunkRows, w.rows - r0);
    dequant_f32_kernel<DT>
        <<<elt_blocks(m * w.cols / kUnitElems<DT>), kEltThreads, 0, ctx.stream()>>>(
            wb + r0 * w.row_stride, w.row_stride, m, w.cols, chunk);
    KILN_CUDA_LAUNCH_CHECK();
    gemm_ex(ctx, chunk, CUDA_R_32F, w.cols, x, CUDA_R_32F, x_stride, m, n, w.cols, 0.0f, y + r0,
            y_stride);
  }
}

// n > kGemvMaxRows: cuBLAS (see gemm_ex for the layout mapping).
void gemm_cublas(Context& ctx, const DeviceMatrix& w, const float* x, int64_t x_stride, int64_t n,
                 float* y, int64_t y_stride) {
  switch (w.dtype) {
    case DType::kF32:
      // x read in place.
      return gemm_ex(ctx, w.data, CUDA_R_32F, w.row_stride / 4, x, CUDA_R_32F, x_stride, w.rows, n,
                     w.cols, 0.0f, y, y_stride);
    case DType::kF16:
      return gemm_split<__half>(ctx, w, CUDA_R_16F, x, x_stride, n, y, y_stride);
    case DType::kBF16:
      return gemm_split<__nv_bfloat16>(ctx, w, CUDA_R_16BF, x, x_stride, n, y, y_stride);
    case DType::kQ8_0:
      return gemm_dequant<DType::kQ8_0>(ctx, w, x, x_stride, n, y, y_stride);
    case DType::kQ4_K:
      return gemm_dequant<DType::kQ4_K>(ctx, w, x, x_stride, n, y, y_stride);
    case DType::kQ6_K:
      return gemm_dequant<DType::kQ6_K>(ctx, w, x, x_stride, n, y, y_stride);
  }
  KILN_CHECK_MSG(false, "CUDA matmul: unsupported weight dtype");
}

template <DType DT>
void launch_grouped(Context& ctx, const DeviceMatrix& w, int64_t expert_stride, int64_t E,
                    const int32_t* offsets, const int32_t* order, const float* x, int64_t x_stride,
                    int64_t x_row_div, float* y, int64_t y_stride) {
  const dim3 grid(static_cast<unsigned>((w.rows + kRowWarps - 1) / kRowWarps),
                  static_cast<unsigned>(E));
  grouped_kernel<DT><<<grid, kRowThreads, 0, ctx.stream()>>>(
      static_cast<const unsigned char*>(w.data), expert_stride, w.rows, static_cast<int>(w.cols),
      w.row_stride, offsets, order, x, x_stride, x_row_div, y, y_stride);
  KILN_CUDA_LAUNCH_CHECK();
}

template <DType DT>
void launch_embedding(Context& ctx, const DeviceMatrix& table, const int32_t* ids, int64_t n,
                      int64_t vocab_begin, int64_t vocab_end, float* out) {
  embedding_kernel<DT><<<static_cast<unsigned>(n), kEltThreads, 0, ctx.stream()>>>(
      static_cast<const unsigned char*>(table.data), static_cast<int>(table.cols), table.row_stride,
      ids, vocab_begin, vocab_end, out);
  KILN_CUDA_LAUNCH_CHECK();
}

}  // namespace

// ---- entry points -----------------------------------------------------------------------------

int64_t matmul_scratch_bytes(const DeviceMatrix& w, int64_t n) {
  if (n <= kGemvMaxRows) return 0;
  switch (w.dtype) {
    case DType::kF32:
      return 0;
    case DType::kF16:
    case DType::kBF16:
      return 2 * x16_bytes(w, n);
    case DType::kQ8_0:
    case DType::kQ4_K:
    case DType::kQ6_K:
      return round_up(std::min(w.rows, kChunkRows) * w.cols * 4, kScratchAlign);
  }
  KILN_CHECK_MSG(false, "CUDA matmul: unsupported weight dtype");
  return 0;
}

void matmul(Context& ctx, const DeviceMatrix& w, const float* x, int64_t x_stride, int64_t n,
            float* y, int64_t y_stride) {
  check_matrix(w);
  KILN_CHECK(n >= 0);
  KILN_CHECK(n <= 1 || (x_stride >= w.cols && y_stride >= w.rows));
  if (n == 0 || w.rows == 0) return;
  KILN_CHECK(x != nullptr && y != nullptr);
  if (n <= kGemvMaxRows) return gemv(ctx, w, x, x_stride, static_cast<int>(n), y, y_stride);
  return gemm_cublas(ctx, w, x, x_stride, n, y, y_stride);
}

void grouped_matmul(Context& ctx, const DeviceMatrix& w, int64_t expert_stride, int64_t E,
                    const int32_t* offsets, const int32_t* order, int64_t n_assign, const float* x,
                    int64_t x_stride, int64_t x_row_div, float* y, int64_t y_stride) {
  check_matrix(w);
  KILN_CHECK(E >= 1 && E <= 65535);  // grid.y
  KILN_CHECK(n_assign >= 0 && n_assign <= std::numeric_limits<int32_t>::max());
  KILN_CHECK(x_row_div >= 1);
  KILN_CHECK(y_stride >= w.rows && x_stride >= w.cols);
  KILN_CHECK(expert_stride >= w.rows * w.row_stride || E == 1);
  KILN_CHECK(expert_stride % load_align(w.dtype) == 0);
  KILN_CHECK((w.rows + kRowWarps - 1) / kRowWarps <= std::numeric_limits<int>::max());
  if (n_assign == 0 || w.rows == 0) return;
  KILN_CHECK(offsets != nullptr && order != nullptr && x != nullptr && y != nullptr);
  with_weight_dtype(w.dtype, [&](auto dt) {
    launch_grouped<decltype(dt)::value>(ctx, w, expert_stride, E, offsets, order, x, x_stride,
                                        x_row_div, y, y_stride);
  });
}

void embedding_lookup(Context& ctx, const DeviceMatrix& table, const int32_t* ids, int64_t n,
                      int64_t vocab_begin, int64_t vocab_end, float* out) {
  check_matrix(table);
  KILN_CHECK(n >= 0 && n <= std::numeric_limits<int>::max());
  KILN_CHECK(vocab_begin >= 0 && vocab_begin <= vocab_end);
  KILN_CHECK(vocab_end - vocab_begin <= table.rows);
  if (n == 0) return;
  KILN_CHECK(ids != nullptr && out != nullptr);
  with_weight_dtype(table.dtype, [&](auto dt) {
    launch_embedding<decltype(dt)::value>(ctx, table, ids, n, vocab_begin, vocab_end, out);
  });
}

}  // namespace kiln::cuda
