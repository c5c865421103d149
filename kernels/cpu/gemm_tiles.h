// Register-blocked dot-product tiles behind cpu::matmul (internal to kernels/cpu).
// A tile computes MR weight rows × NR tokens: y[j][i] = Σ_k w_i[k] · x_j[k], converting the
// stored dtype to f32 in registers (AVX2 + FMA + F16C) and keeping MR·NR vector accumulators.
// Each weight vector is loaded once per tile and reused for the NR tokens held in registers.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/base/dtype.h"
#include "kernels/cpu/vec_math.h"

namespace kiln::cpu::gemm_detail {

using vec::hsum;

// Decode tiles streaming MR rows at once run short of DRAM bandwidth when left to the hardware
// prefetcher alone: each row's bytes [at + D, at + D + len) are requested explicitly (one
// prefetch per cache line; callers pass the bytes they are about to consume). Rows
// w + i·w_stride, i < MR, are at byte `at` of `bytes`; past a row's end the prefetch moves to the
// same row of the next tile (the next MR rows), which is what the caller reads next (short rows
// would otherwise start every tile with demand misses). A prefetch never faults, so one past the
// last row is harmless. Distances D, measured on mini: f16/bf16 512 (of 256 to 2048 bytes tried,
// 512 and 1024 were best); the integer tiles 1024 (q8_0 decode 110 → 120 tok/s and 16-sequence
// decode 235 → 250 tok/s against 512; 2048 gained nothing more).
constexpr int64_t kPrefetchBytes = 512;
constexpr int64_t kInt8PrefetchBytes = 1024;
template <int MR, int64_t D = kPrefetchBytes>
inline void prefetch_rows(const std::byte* w, int64_t w_stride, int64_t at, int64_t bytes,
                          int64_t len = 64) {
  for (int64_t o = at + D; o < at + D + len; o += 64) {
    const int64_t off = o < bytes ? o : o + MR * w_stride - bytes;
    for (int i = 0; i < MR; ++i) {
      _mm_prefetch(reinterpret_cast<const char*>(w) + i * w_stride + off, _MM_HINT_T0);
    }
  }
}

// Loaders for the plain types: 8 elements starting at element k of a row, and one element.
struct LoadF32 {
  static constexpr bool kPrefetch = false;  // left to the hardware prefetcher
  static __m256 load8(const std::byte* row, int64_t k) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
  }
  static float at(const std::byte* row, int64_t k) {
    return reinterpret_cast<const float*>(row)[k];
  }
};
struct LoadF16 {
  static constexpr bool kPrefetch = true;
  static __m256 load8(const std::byte* row, int64_t k) {
    const auto* p = reinterpret_cast<const uint16_t*>(row) + k;
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static float at(const std::byte* row, int64_t k) {
    return f16_to_f32(reinterpret_cast<const uint16_t*>(row)[k]);
  }
};
struct LoadBF16 {
  static constexpr bool kPrefetch = true;
  static __m256 load8(const std::byte* row, int64_t k) {
    const auto* p = reinterpret_cast<const uint16_t*>(row) + k;
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  static float at(const std::byte* row, int64_t k) {
    return bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[k]);
  }
};

// One scalar tail step, always fused: GCC contracts a·b + s in C++ at will (-ffp-contract=fast
// is its default there), and whether it does can differ between instantiations, which would
// break the bitwise equality of the decode and prefill paths.
inline float tail_fma(float a, float b, float s) { return std::fma(a, b, s); }

// Plain-dtype tile. w rows are w_stride bytes apart, x rows x_stride floats apart; y[j*y_stride+i].
template <class L, int MR, int NR>
inline void tile(const std::byte* w, int64_t w_stride, const float* x, int64_t x_stride, int64_t K,
                 float* y, int64_t y_stride) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  const int64_t k8 = K & ~int64_t{7};
  for (int64_t k = 0; k < k8; k += 8) {
    if constexpr (L::kPrefetch) {
      if ((k & 31) == 0) prefetch_rows<MR>(w, w_stride, 2 * k, 2 * K);  // 2-byte elements
    }
    __m256 xv[NR];
    for (int j = 0; j < NR; ++j) xv[j] = _mm256_loadu_ps(x + j * x_stride + k);
    for (int i = 0; i < MR; ++i) {
      const __m256 wv = L::load8(w + i * w_stride, k);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(wv, xv[j], acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t k = k8; k < K; ++k) {
        s = tail_fma(L::at(w + i * w_stride, k), x[j * x_stride + k], s);
      }
      y[j * y_stride + i] = s;
    }
  }
}

// bf16 with x in the order of permute_x_bf16: one 32-byte load gives 16 weights, whose 32-bit
// lanes hold the pairs (2i, 2i+1); a shift makes the even elements f32, a mask the odd ones, so
// no widening is needed. Per accumulator the FMAs come in the order of tile<LoadF32> over a row
// from convert_row_bf16_permuted and the same x, which keeps the two bitwise equal.
template <int MR, int NR>
inline void tile_bf16(const std::byte* w, int64_t w_stride, const float* x, int64_t x_stride,
                      int64_t K, float* y, int64_t y_stride) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  const int64_t k16 = K & ~int64_t{15}, k8 = K & ~int64_t{7};
  const __m256i* p[MR];  // 16 weights per step
  for (int i = 0; i < MR; ++i) p[i] = reinterpret_cast<const __m256i*>(w + i * w_stride);
  for (int64_t k = 0; k < k16; k += 16) {
    if ((k & 31) == 0) prefetch_rows<MR>(w, w_stride, 2 * k, 2 * K);
    for (int i = 0; i < MR; ++i) {
      const __m256i raw = _mm256_loadu_si256(p[i] + k / 16);
      const __m256 we = _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16));
      const __m256 wo = _mm256_castsi256_ps(_mm256_and_si256(raw, hi));
      for (int j = 0; j < NR; ++j) {
        acc[i][j] = _mm256_fmadd_ps(we, _mm256_loadu_ps(x + j * x_stride + k), acc[i][j]);
        acc[i][j] = _mm256_fmadd_ps(wo, _mm256_loadu_ps(x + j * x_stride + k + 8), acc[i][j]);
      }
    }
  }
  if (k8 > k16) {  // a last group of 8 (in natural order)
    for (int i = 0; i < MR; ++i) {
      const __m256 wv = LoadBF16::load8(w + i * w_stride, k16);
      for (int j = 0; j < NR; ++j)
        acc[i][j] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + j * x_stride + k16), acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float s = hsum(acc[i][j]);
      for (int64_t k = k8; k < K; ++k) {
        s = tail_fma(LoadBF16::at(w + i * w_stride, k), x[j * x_stride + k], s);
      }
      y[j * y_stride + i] = s;
    }
  }
}

// The element order the bf16 tiles use: each whole group of 16 as its 8 even elements, then its
// 8 odd ones; the last K mod 16 elements stay in place. dst may not alias x.
inline void permute_x_bf16(const float* x, int64_t K, float* dst) {
  const int64_t k16 = K & ~int64_t{15};
  for (int64_t k = 0; k < k16; k += 16) {
    const __m256 a = _mm256_loadu_ps(x + k), b = _mm256_loadu_ps(x + k + 8);
    // Per 128-bit lane: (a0 a2 b0 b2 | a4 a6 b4 b6); the 64-bit permute puts a's pairs first.
    const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    _mm256_storeu_ps(dst + k, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
    _mm256_storeu_ps(dst + k + 8,
                     _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)));
  }
  for (int64_t k = k16; k < K; ++k) dst[k] = x[k];
}

// A bf16 row converted to f32 in the order of permute_x_bf16 (for the buffered path).
inline void convert_row_bf16_permuted(const std::byte* src, int64_t K, float* dst) {
  const __m256i hi = _mm256_set1_epi32(static_cast<int>(0xFFFF0000u));
  const auto* p = reinterpret_cast<const uint16_t*>(src);
  const int64_t k16 = K & ~int64_t{15}, k8 = K & ~int64_t{7};
  for (int64_t k = 0; k < k16; k += 16) {
    const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k));
    _mm256_storeu_ps(dst + k, _mm256_castsi256_ps(_mm256_slli_epi32(raw, 16)));
    _mm256_storeu_ps(dst + k + 8, _mm256_castsi256_ps(_mm256_and_si256(raw, hi)));
  }
  if (k8 > k16) _mm256_storeu_ps(dst + k16, LoadBF16::load8(src, k16));
  for (int64_t k = k8; k < K; ++k) dst[k] = LoadBF16::at(src, k);
}

// 8 unsigned bytes widened to 8 int32 lanes.
inline __m256i load8_u8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// Converts n stored elements of one row to f32 (vectorised; the f32 case is a copy).
void convert_row(DType t, const std::byte* src, int64_t n, float* dst);

}  // namespace kiln::cpu::gemm_detail
