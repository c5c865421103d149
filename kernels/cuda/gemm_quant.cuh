// Device-side decoding of the stored weight dtypes (layouts in kernels/base/dtype.h) for the
// CUDA matrix kernels in gemm.cu: one element of f32/f16/bf16/q8_0, and one warp lane's eight
// elements of a q4_k / q6_k super-block. Every decoded value is exact in f32, so it equals the
// CPU's dequantisation bit for bit. Only device functions; included by gemm.cu alone.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/base/dtype.h"

namespace kiln::cuda::gemm_detail {

inline constexpr int kQ8BlockBytes = static_cast<int>(sizeof(BlockQ8_0));   // 34
inline constexpr int kQ4KBlockBytes = static_cast<int>(sizeof(BlockQ4_K));  // 144
inline constexpr int kQ6KBlockBytes = static_cast<int>(sizeof(BlockQ6_K));  // 210
// Elements a lane decodes per k-quant super-block (kQKBlock over a warp of 32).
inline constexpr int kLaneElems = 8;

// Whether DT is a k-quant (q4_k, q6_k): decoded a super-block lane at a time.
template <DType DT>
inline constexpr bool kIsKQuant = DT == DType::kQ4_K || DT == DType::kQ6_K;

// Bytes per k-quant super-block.
template <DType DT>
inline constexpr int kSuperBlockBytes = DT == DType::kQ4_K ? kQ4KBlockBytes : kQ6KBlockBytes;

// An f16 stored at p (2-byte aligned), as f32.
__device__ __forceinline__ float load_f16(const unsigned char* p) {
  return __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short*>(p))));
}

// Element c of a weight row in its stored dtype, as f32 (exact for every dtype: for q8_0, an f16
// scale times an int8 has at most 19 significant bits). Not for the k-quants (see *_lane).
template <DType DT>
__device__ __forceinline__ float load_weight(const unsigned char* row, int c) {
  if constexpr (DT == DType::kF32) {
    return __ldg(reinterpret_cast<const float*>(row) + c);
  } else if constexpr (DT == DType::kF16) {
    return load_f16(row + 2 * static_cast<int64_t>(c));
  } else if constexpr (DT == DType::kBF16) {
    const unsigned short h = __ldg(reinterpret_cast<const unsigned short*>(row) + c);
    return __bfloat162float(__ushort_as_bfloat16(h));
  } else {
    static_assert(DT == DType::kQ8_0, "k-quants are decoded a super-block lane at a time");
    // Element c lies in block c/32, which starts 34·(c/32) bytes into the row: the f16 scale d
    // (2-byte aligned, as rows are) then 32 int8 values, read bytewise.
    const unsigned char* blk = row + (c / kQ8Block) * kQ8BlockBytes;
    const auto q = static_cast<signed char>(__ldg(blk + 2 + c % kQ8Block));
    return load_f16(blk) * static_cast<float>(q);
  }
}

// Lane l's elements l + 32·i (i < 8) of the q4_k super-block at blk (2-byte aligned): element
// l + 32·i lies in sub-block i, its 4-bit q in the low (i even) or high (i odd) nibble of
// qs[32·(i/2) + l]; value = d·sc_i·q − dmin·m_i. The products have at most 21 and 17
// significant bits, so they are exact and fmaf rounds the difference once, as the CPU does.
__device__ __forceinline__ void q4k_lane(const unsigned char* blk, int l, float (&w)[kLaneElems]) {
  const float d = load_f16(blk + offsetof(BlockQ4_K, d));
  const float dmin = load_f16(blk + offsetof(BlockQ4_K, dmin));
  const unsigned char* s = blk + offsetof(BlockQ4_K, scales);
  const unsigned char* qs = blk + offsetof(BlockQ4_K, qs);
  int sb[12];
#pragma unroll
  for (int k = 0; k < 12; ++k) sb[k] = __ldg(s + k);
#pragma unroll
  for (int c = 0; c < 4; ++c) {
    const int byte = __ldg(qs + 32 * c + l);
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int j = 2 * c + half;
      // ggml's get_scale_min_k4 (see BlockQ4_K).
      const int sc = j < 4 ? sb[j] & 63 : (sb[j + 4] & 0x0F) | ((sb[j - 4] >> 6) << 4);
      const int m = j < 4 ? sb[j + 4] & 63 : (sb[j + 4] >> 4) | ((sb[j] >> 6) << 4);
      const int q = half == 0 ? byte & 0x0F : byte >> 4;
      w[j] =
          fmaf(d * static_cast<float>(sc), static_cast<float>(q), -(dmin * static_cast<float>(m)));
    }
  }
}

// Lane l's elements l + 32·i (i < 8) of the q6_k super-block at blk (2-byte aligned): with
// i = 4·h + g, element 128·h + 32·g + l takes its low 4 bits from ql[64·h + l + 32·(g&1)] (low
// nibble for g < 2) and its top 2 bits from qh[32·h + l] at bit 2g; value =
// d·scales[e/16]·(q − 32), at most 24 significant bits, so exact.
__device__ __forceinline__ void q6k_lane(const unsigned char* blk, int l, float (&w)[kLaneElems]) {
  const float d = load_f16(blk + offsetof(BlockQ6_K, d));
  const unsigned char* ql = blk + offsetof(BlockQ6_K, ql);
  const unsigned char* qh = blk + offsetof(BlockQ6_K, qh);
  const unsigned char* sc = blk + offsetof(BlockQ6_K, scales);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int lo01 = __ldg(ql + 64 * h + l);
    const int lo23 = __ldg(ql + 64 * h + 32 + l);
    const int hi = __ldg(qh + 32 * h + l);
#pragma unroll
    for (int g = 0; g < 4; ++g) {
      const int lo = (((g & 1) == 0 ? lo01 : lo23) >> (g < 2 ? 0 : 4)) & 0x0F;
      const int q = (lo | (((hi >> (2 * g)) & 3) << 4)) - 32;
      const auto scale = static_cast<signed char>(__ldg(sc + (128 * h + 32 * g + l) / 16));
      w[4 * h + g] = d * static_cast<float>(scale) * static_cast<float>(q);
    }
  }
}

// q4k_lane or q6k_lane by dtype.
template <DType DT>
__device__ __forceinline__ void k_quant_lane(const unsigned char* blk, int l,
                                             float (&w)[kLaneElems]) {
  static_assert(kIsKQuant<DT>, "k-quant dtypes only");
  if constexpr (DT == DType::kQ4_K) {
    q4k_lane(blk, l, w);
  } else {
    q6k_lane(blk, l, w);
  }
}

// Conversion units of a row: one element for the plain dtypes and q8_0; for the k-quants, one
// lane's kLaneElems elements of a super-block (unit u: super-block u/32, lane u%32).
template <DType DT>
inline constexpr int kUnitElems = kIsKQuant<DT> ? kLaneElems : 1;

// Writes unit u of the weight row `row` to out (the row's f32 copy, [cols]).
template <DType DT>
__device__ __forceinline__ void convert_unit(const unsigned char* row, int64_t u, float* out) {
  if constexpr (kIsKQuant<DT>) {
    const int64_t b = u / 32;
    const int l = static_cast<int>(u % 32);
    float w[kLaneElems];
    k_quant_lane<DT>(row + b * kSuperBlockBytes<DT>, l, w);
    float* o = out + b * kQKBlock + l;
#pragma unroll
    for (int i = 0; i < kLaneElems; ++i) o[32 * i] = w[i];
  } else {
    out[u] = load_weight<DT>(row, static_cast<int>(u));
  }
}

}  // namespace kiln::cuda::gemm_detail
