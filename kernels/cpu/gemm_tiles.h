// Register-blocked dot-product tiles behind cpu::matmul (internal to kernels/cpu).
// A tile computes MR weight rows × NR tokens: y[j][i] = Σ_k w_i[k] · x_j[k], converting the
// stored dtype to f32 in registers (AVX2 + FMA + F16C) and keeping MR·NR vector accumulators.
// Each weight vector is loaded once per tile and reused for the NR tokens held in registers.
#pragma once

#include <cstddef>
#include <cstdint>

#include <immintrin.h>

#include "kernels/base/dtype.h"
#include "kernels/cpu/vec_math.h"

namespace kiln::cpu::gemm_detail {

using vec::hsum;

// Loaders for the plain types: 8 elements starting at element k of a row, and one element.
struct LoadF32 {
  static __m256 load8(const std::byte* row, int64_t k) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(row) + k);
  }
  static float at(const std::byte* row, int64_t k) {
    return reinterpret_cast<const float*>(row)[k];
  }
};
struct LoadF16 {
  static __m256 load8(const std::byte* row, int64_t k) {
    const auto* p = reinterpret_cast<const uint16_t*>(row) + k;
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static float at(const std::byte* row, int64_t k) {
    return f16_to_f32(reinterpret_cast<const uint16_t*>(row)[k]);
  }
};
struct LoadBF16 {
  static __m256 load8(const std::byte* row, int64_t k) {
    const auto* p = reinterpret_cast<const uint16_t*>(row) + k;
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
  static float at(const std::byte* row, int64_t k) {
    return bf16_to_f32(reinterpret_cast<const uint16_t*>(row)[k]);
  }
};

// Plain-dtype tile. w rows are w_stride bytes apart, x rows x_stride floats apart; y[j*y_stride+i].
template <class L, int MR, int NR>
inline void tile(const std::byte* w, int64_t w_stride, const float* x, int64_t x_stride,
                 int64_t K, float* y, int64_t y_stride) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  const int64_t k8 = K & ~int64_t{7};
  for (int64_t k = 0; k < k8; k += 8) {
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
      for (int64_t k = k8; k < K; ++k) s += L::at(w + i * w_stride, k) * x[j * x_stride + k];
      y[j * y_stride + i] = s;
    }
  }
}

// 8 unsigned bytes widened to 8 int32 lanes.
inline __m256i load8_u8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// Converts n stored elements of one row to f32 (vectorised; the f32 case is a copy).
void convert_row(DType t, const std::byte* src, int64_t n, float* dst);

}  // namespace kiln::cpu::gemm_detail
