// Register-blocked dot-product tiles behind cpu::matmul (internal to kernels/cpu).
// A tile computes MR weight rows × NR tokens: y[j][i] = Σ_k w_i[k] · x_j[k], converting the
// stored dtype to f32 in registers (AVX2 + FMA + F16C) and keeping MR·NR vector accumulators.
// Each weight vector is loaded once per tile and reused for the NR tokens held in registers.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>

#include <immintrin.h>

#include "kernels/base/dtype.h"
#include "kernels/cpu/vec_math.h"

namespace kiln::cpu::gemm_detail {

using vec::hsum;

// The f16/bf16 decode tiles run short of DRAM bandwidth when left to the hardware prefetcher
// alone (MR row streams at once): each row's cache line 512 bytes ahead is requested explicitly,
// once per 64 bytes consumed (of 256 to 2048 bytes tried, 512 and 1024 were best).
constexpr int64_t kPrefetchBytes = 512;
// Rows w + i·w_stride, i < MR, are at byte `at` of `bytes`; past a row's end the prefetch moves to
// the same row of the next tile (the next MR rows), which is what the caller reads next (short
// rows would otherwise start every tile with demand misses). A prefetch never faults, so one
// past the last row is harmless.
template <int MR>
inline void prefetch_rows(const std::byte* w, int64_t w_stride, int64_t at, int64_t bytes) {
  int64_t off = at + kPrefetchBytes;
  if (off >= bytes) off += MR * w_stride - bytes;
  for (int i = 0; i < MR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(w) + i * w_stride + off, _MM_HINT_T0);
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
inline void tile(const std::byte* w, int64_t w_stride, const float* x, int64_t x_stride,
                 int64_t K, float* y, int64_t y_stride) {
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

// q8_0 tile: per 32-block, the int8 values are widened to f32 and dotted with x into a block
// sum; the block scale is applied once per block (acc += d · Σ q·x), not per element.
// Register use is 2·MR·NR + NR + 1 vectors, so callers keep MR·NR small (see Q8Tile).
template <int MR, int NR>
inline void tile_q8(const std::byte* w, int64_t w_stride, const float* x, int64_t x_stride,
                    int64_t K, float* y, int64_t y_stride) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  const int64_t nb = K / kQ8Block;
  for (int64_t b = 0; b < nb; ++b) {
    __m256 part[MR][NR];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) part[i][j] = _mm256_setzero_ps();
    for (int g = 0; g < kQ8Block; g += 8) {
      __m256 xv[NR];
      for (int j = 0; j < NR; ++j) xv[j] = _mm256_loadu_ps(x + j * x_stride + b * kQ8Block + g);
      for (int i = 0; i < MR; ++i) {
        const auto* blk = reinterpret_cast<const BlockQ8_0*>(w + i * w_stride) + b;
        const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk->qs + g));
        const __m256 wv = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
        for (int j = 0; j < NR; ++j) part[i][j] = _mm256_fmadd_ps(wv, xv[j], part[i][j]);
      }
    }
    for (int i = 0; i < MR; ++i) {
      const auto* blk = reinterpret_cast<const BlockQ8_0*>(w + i * w_stride) + b;
      const __m256 d = _mm256_set1_ps(f16_to_f32(blk->d));
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_fmadd_ps(part[i][j], d, acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) y[j * y_stride + i] = hsum(acc[i][j]);
}

// 8 unsigned bytes widened to 8 int32 lanes.
inline __m256i load8_u8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// Bytes 8·G .. 8·G+7 of v, sign-extended to 8 int32 lanes.
template <int G>
inline __m256i widen8_i8(__m256i v) {
  __m128i h = G < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
  if constexpr (G % 2 == 1) h = _mm_srli_si128(h, 8);
  return _mm256_cvtepi8_epi32(h);
}

// One group of 8 weights of a q6_k quarter: q[i] holds the quarter's 32 values (q − 32) of row
// i, vs[i] the scale d·scales of group G's sub-block; acc += (vs·q) · x.
template <int G, int MR, int NR>
inline void q6k_group(const __m256i* q, const __m256* vs, const float* x, int64_t x_stride,
                      __m256 (&acc)[MR][NR]) {
  __m256 xv[NR];
  for (int t = 0; t < NR; ++t) xv[t] = _mm256_loadu_ps(x + t * x_stride + 8 * G);
  for (int i = 0; i < MR; ++i) {
    const __m256 wv = _mm256_mul_ps(_mm256_cvtepi32_ps(widen8_i8<G>(q[i])), vs[i]);
    for (int t = 0; t < NR; ++t) acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]);
  }
}

// q6_k tile: each quarter of 32 values (one ql half-row of nibbles plus 2 bits of qh each) is
// unpacked with byte-wide ops, 32 values at a time, then widened 8 at a time; each weight is
// scaled (d·scales[sub-block]) before the FMA. Register use is MR·NR + 3·MR + NR + 1 vectors.
template <int MR, int NR>
inline void tile_q6k(const std::byte* w, int64_t w_stride, const float* x, int64_t x_stride,
                     int64_t K, float* y, int64_t y_stride) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(3);
  const __m256i bias = _mm256_set1_epi8(32);
  for (int64_t b = 0; b < K / kQKBlock; ++b) {
    for (int e0 = 0; e0 < kQKBlock; e0 += 32) {  // one quarter: elements e0 .. e0+31
      const int h = e0 / 128, g = (e0 % 128) / 32;
      __m256i q[MR];
      __m256 vs0[MR], vs1[MR];
      for (int i = 0; i < MR; ++i) {
        const auto* blk = reinterpret_cast<const BlockQ6_K*>(w + i * w_stride) + b;
        const __m256i ql = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(blk->ql + 64 * h + 32 * (g & 1)));
        const __m256i qh =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qh + 32 * h));
        // 16-bit shifts: the masks drop the bits that cross from the neighbouring byte.
        const __m256i lo = _mm256_and_si256(g < 2 ? ql : _mm256_srli_epi16(ql, 4), low4);
        const __m256i hi = _mm256_and_si256(
            _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), low2);
        q[i] = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), bias);
        const float d = f16_to_f32(blk->d);
        vs0[i] = _mm256_set1_ps(d * static_cast<float>(blk->scales[e0 / 16]));
        vs1[i] = _mm256_set1_ps(d * static_cast<float>(blk->scales[e0 / 16 + 1]));
      }
      const float* xq = x + b * kQKBlock + e0;
      q6k_group<0, MR, NR>(q, vs0, xq, x_stride, acc);
      q6k_group<1, MR, NR>(q, vs0, xq, x_stride, acc);
      q6k_group<2, MR, NR>(q, vs1, xq, x_stride, acc);
      q6k_group<3, MR, NR>(q, vs1, xq, x_stride, acc);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int t = 0; t < NR; ++t) y[t * y_stride + i] = hsum(acc[i][t]);
}

// One group of 8 weights of a q4_k sub-block: q[i] holds the sub-block's 32 values of row i;
// w = d·sc·q − dmin·m (vd, vm) is formed in registers, then acc += w · x.
template <int G, int MR, int NR>
inline void q4k_group(const __m256i* q, const __m256* vd, const __m256* vm, const float* x,
                      int64_t x_stride, __m256 (&acc)[MR][NR]) {
  __m256 xv[NR];
  for (int t = 0; t < NR; ++t) xv[t] = _mm256_loadu_ps(x + t * x_stride + 8 * G);
  for (int i = 0; i < MR; ++i) {
    const __m256 wv = _mm256_fmsub_ps(_mm256_cvtepi32_ps(widen8_i8<G>(q[i])), vd[i], vm[i]);
    for (int t = 0; t < NR; ++t) acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]);
  }
}

// q4_k tile (layout in kernels/base/dtype.h): the 32 bytes of a 64-element chunk give the 32
// low nibbles of sub-block 2c and the 32 high nibbles of sub-block 2c+1 with two byte-wide ops;
// they are widened 8 at a time and dequantised in registers before the FMA. Register use is
// MR·NR + 3·MR + NR + 1 vectors (see Q4KTile).
template <int MR, int NR>
inline void tile_q4k(const std::byte* w, int64_t w_stride, const float* x, int64_t x_stride,
                     int64_t K, float* y, int64_t y_stride) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_ps();
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  for (int64_t b = 0; b < K / kQKBlock; ++b) {
    float ds[MR][8], dm[MR][8];  // d·sc_j and dmin·m_j per row and sub-block
    for (int i = 0; i < MR; ++i) {
      const auto* blk = reinterpret_cast<const BlockQ4_K*>(w + i * w_stride) + b;
      const float d = f16_to_f32(blk->d), dmin = f16_to_f32(blk->dmin);
      const uint8_t* s = blk->scales;
      for (int j = 0; j < 8; ++j) {
        const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
        const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        ds[i][j] = d * static_cast<float>(sc);
        dm[i][j] = dmin * static_cast<float>(m);
      }
    }
    for (int j = 0; j < 8; ++j) {  // sub-block j: elements 32j .. 32j+31
      __m256i q[MR];
      __m256 vd[MR], vm[MR];
      for (int i = 0; i < MR; ++i) {
        const auto* blk = reinterpret_cast<const BlockQ4_K*>(w + i * w_stride) + b;
        const __m256i raw =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qs + 32 * (j / 2)));
        // 16-bit shift: the mask drops the bits that cross from the neighbouring byte.
        q[i] = _mm256_and_si256(j % 2 == 0 ? raw : _mm256_srli_epi16(raw, 4), low4);
        vd[i] = _mm256_set1_ps(ds[i][j]);
        vm[i] = _mm256_set1_ps(dm[i][j]);
      }
      const float* xs = x + b * kQKBlock + 32 * j;
      q4k_group<0, MR, NR>(q, vd, vm, xs, x_stride, acc);
      q4k_group<1, MR, NR>(q, vd, vm, xs, x_stride, acc);
      q4k_group<2, MR, NR>(q, vd, vm, xs, x_stride, acc);
      q4k_group<3, MR, NR>(q, vd, vm, xs, x_stride, acc);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int t = 0; t < NR; ++t) y[t * y_stride + i] = hsum(acc[i][t]);
}

// Converts n stored elements of one row to f32 (vectorised; the f32 case is a copy).
void convert_row(DType t, const std::byte* src, int64_t n, float* dst);

}  // namespace kiln::cpu::gemm_detail
