// Integer dot-product tiles behind cpu::matmul for decode-sized products over quantised weights
// (internal to kernels/cpu). The activations are quantised to int8 once per call (ActRows); each
// weight block is then dotted with them by _mm256_maddubs_epi16 / _mm256_madd_epi16, exactly, in
// int32, and the block scales are applied once per block in fp32. Per weight this is a fraction of
// the work of converting it to f32 and using an FMA, so decode streams quantised rows at memory
// speed instead of being bound by the dequantisation.
//
// Activation formats (the same as llama.cpp's q8_0 and q8_K, with fp32 scales):
//   block 32  (q8_0 weights):        d = amax/127 per 32 values, q =
//   round-to-nearest-even(x·127/amax) block 256 (q4_k / q6_k weights): the same per 256 values,
//   plus the sum of q per 16 values
//                                    (bsums), which the k-quants' offsets (q4_k's mins, q6_k's −32)
//                                    multiply.
// ref::matmul_int8_activations is the naive twin.
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/base/dtype.h"
#include "kernels/cpu/gemm_tiles.h"
#include "kernels/cpu/vec_math.h"

namespace kiln::cpu::gemm_detail {

// Quantised activations of n tokens (row t: q + t·q_stride, d + t·d_stride, bsums + t·bs_stride).
struct ActRows {
  const int8_t* q = nullptr;
  const float* d = nullptr;
  const int16_t* bsums = nullptr;  // block 256 only
  int64_t q_stride = 0, d_stride = 0, bs_stride = 0;

  ActRows skip(int64_t t) const {
    ActRows a = *this;
    a.q += t * q_stride;
    a.d += t * d_stride;
    if (a.bsums != nullptr) a.bsums += t * bs_stride;
    return a;
  }
};

// Owns the storage of one call's quantised activations (grows once, reused).
class ActBuffer {
 public:
  // Quantises n rows of K values (x rows x_stride floats apart) in blocks of `block` (32 or 256;
  // K % block == 0).
  ActRows quantize(int block, const float* x, int64_t x_stride, int64_t n, int64_t K);

 private:
  std::vector<int8_t> q_;
  std::vector<float> d_;
  std::vector<int16_t> bsums_;
};

// The MR·NR accumulators of a tile (8 partial sums each), zeroed; store writes each one's sum to
// y[j·y_stride + i].
template <int MR, int NR>
struct TileAcc {
  __m256 v[MR][NR];
  TileAcc() {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) v[i][j] = _mm256_setzero_ps();
  }
  void store(float* y, int64_t y_stride) const {
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) y[j * y_stride + i] = vec::hsum(v[i][j]);
  }
};

// Σ over 32 int8 pairs of a·b, as 8 int32 partial sums: |a| as unsigned times b with a's sign
// (maddubs needs one unsigned operand; |a|, |b| ≤ 127 keeps the int16 pair sums exact).
inline __m256i dot_i8_32(__m256i a, __m256i b) {
  const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
  return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

// q8_0 weights × block-32 activations, MR rows × NR tokens. Eight blocks at a time: their exact
// int32 dot products are reduced to one vector of 8 block sums and scaled by the 8 products
// d_w·d_x in one FMA; a remainder of fewer than 8 blocks goes one block at a time
// (acc += d_w·d_x · Σ q_w·q_x).
template <int MR, int NR>
inline void tile_q8_int(const std::byte* w, int64_t w_stride, const ActRows& x, int64_t K, float* y,
                        int64_t y_stride) {
  TileAcc<MR, NR> acc;
  const int64_t nb = K / kQ8Block;
  int64_t b = 0;
  const int64_t row_bytes = nb * static_cast<int64_t>(sizeof(BlockQ8_0));
  for (; b + 8 <= nb; b += 8) {
    prefetch_rows<MR, kInt8PrefetchBytes>(w, w_stride, b * static_cast<int64_t>(sizeof(BlockQ8_0)),
                                          row_bytes, 8 * static_cast<int64_t>(sizeof(BlockQ8_0)));
    for (int i = 0; i < MR; ++i) {
      const auto* blk = reinterpret_cast<const BlockQ8_0*>(w + i * w_stride) + b;
      const __m256 dw = _mm256_cvtph_ps(
          _mm_setr_epi16(static_cast<int16_t>(blk[0].d), static_cast<int16_t>(blk[1].d),
                         static_cast<int16_t>(blk[2].d), static_cast<int16_t>(blk[3].d),
                         static_cast<int16_t>(blk[4].d), static_cast<int16_t>(blk[5].d),
                         static_cast<int16_t>(blk[6].d), static_cast<int16_t>(blk[7].d)));
      // Each block's |w| and sign are formed once for the NR tokens; the per-token block sums
      // are folded pairwise with hadd as they come (hadd, then the two 128-bit halves added), to
      // stay in registers.
      __m256i h[NR][4];  // pair sums: blocks (0,1), (2,3), (4,5), (6,7)
      for (int k = 0; k < 8; k += 2) {
        const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[k].qs));
        const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[k + 1].qs));
        const __m256i a0 = _mm256_sign_epi8(w0, w0), a1 = _mm256_sign_epi8(w1, w1);
        for (int j = 0; j < NR; ++j) {
          const int8_t* xq = x.q + j * x.q_stride + (b + k) * kQ8Block;
          const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq));
          const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + kQ8Block));
          const __m256i ones = _mm256_set1_epi16(1);
          h[j][k / 2] = _mm256_hadd_epi32(
              _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(x0, w0)), ones),
              _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(x1, w1)), ones));
        }
      }
      for (int j = 0; j < NR; ++j) {
        const __m256i lo = _mm256_hadd_epi32(h[j][0], h[j][1]);
        const __m256i hi = _mm256_hadd_epi32(h[j][2], h[j][3]);
        const __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(lo, hi, 0x20),
                                              _mm256_permute2x128_si256(lo, hi, 0x31));
        const __m256 dx = _mm256_loadu_ps(x.d + j * x.d_stride + b);
        acc.v[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_mul_ps(dw, dx), acc.v[i][j]);
      }
    }
  }
  for (; b < nb; ++b) {
    for (int i = 0; i < MR; ++i) {
      const auto* blk = reinterpret_cast<const BlockQ8_0*>(w + i * w_stride) + b;
      const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qs));
      const float dw = f16_to_f32(blk->d);
      for (int j = 0; j < NR; ++j) {
        const __m256i xq = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(x.q + j * x.q_stride + b * kQ8Block));
        const __m256 s = _mm256_cvtepi32_ps(dot_i8_32(wq, xq));
        acc.v[i][j] = _mm256_fmadd_ps(s, _mm256_set1_ps(dw * x.d[j * x.d_stride + b]), acc.v[i][j]);
      }
    }
  }
  acc.store(y, y_stride);
}

// The eight 6-bit scales (sc) and mins (m) of a q4_k block, unpacked from its 12 bytes four at
// a time (layout in kernels/base/dtype.h): bytes 0–7 of the result are sc[0..7], 8–15 m[0..7].
inline __m128i q4k_scales_mins(const uint8_t* s) {
  uint32_t w[3];
  std::memcpy(w, s, 12);
  const uint32_t six = 0x3f3f3f3f, four = 0x0f0f0f0f, two = 0x03030303;
  const uint32_t sc_lo = w[0] & six, m_lo = w[1] & six;
  const uint32_t sc_hi = (w[2] & four) | (((w[0] >> 6) & two) << 4);
  const uint32_t m_hi = ((w[2] >> 4) & four) | (((w[1] >> 6) & two) << 4);
  return _mm_setr_epi32(static_cast<int>(sc_lo), static_cast<int>(sc_hi), static_cast<int>(m_lo),
                        static_cast<int>(m_hi));
}

// q4_k weights × block-256 activations. Per super-block and token, in int32:
// Σ_j sc_j·Σ_{sub-block j} q·q_x and Σ_j m_j·Σ_{sub-block j} q_x (from the 16-value sums), then
// acc += d·d_x·(first) − dmin·d_x·(second).
template <int MR, int NR>
inline void tile_q4k_int(const std::byte* w, int64_t w_stride, const ActRows& x, int64_t K,
                         float* y, int64_t y_stride) {
  TileAcc<MR, NR> acc;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  constexpr int64_t kBlockBytes = sizeof(BlockQ4_K);
  for (int64_t b = 0; b < K / kQKBlock; ++b) {
    prefetch_rows<MR, kInt8PrefetchBytes>(w, w_stride, b * kBlockBytes, K / kQKBlock * kBlockBytes,
                                          kBlockBytes);
    for (int i = 0; i < MR; ++i) {
      const auto* blk = reinterpret_cast<const BlockQ4_K*>(w + i * w_stride) + b;
      const __m128i sm = q4k_scales_mins(blk->scales);
      // m_j twice each, against the two 16-value sums of sub-block j.
      const __m256i mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm));
      alignas(16) uint8_t sc[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(sc), sm);
      const float d = f16_to_f32(blk->d), dmin = f16_to_f32(blk->dmin);
      __m256i sumi[NR];
      for (int j = 0; j < NR; ++j) sumi[j] = _mm256_setzero_si256();
      for (int c = 0; c < 4; ++c) {  // 64 elements: sub-blocks 2c (low nibbles), 2c+1 (high)
        const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qs + 32 * c));
        const __m256i lo = _mm256_and_si256(raw, low4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
        const __m256i sc_lo = _mm256_set1_epi16(sc[2 * c]),
                      sc_hi = _mm256_set1_epi16(sc[2 * c + 1]);
        for (int j = 0; j < NR; ++j) {
          const int8_t* xq = x.q + j * x.q_stride + b * kQKBlock + 64 * c;
          const __m256i p_lo =
              _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq)));
          const __m256i p_hi = _mm256_maddubs_epi16(
              hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + 32)));
          sumi[j] = _mm256_add_epi32(sumi[j], _mm256_add_epi32(_mm256_madd_epi16(p_lo, sc_lo),
                                                               _mm256_madd_epi16(p_hi, sc_hi)));
        }
      }
      for (int j = 0; j < NR; ++j) {
        const __m256i bs = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(x.bsums + j * x.bs_stride + b * (kQKBlock / 16)));
        const __m256 msum = _mm256_cvtepi32_ps(_mm256_madd_epi16(bs, mins));
        const float dx = x.d[j * x.d_stride + b];
        acc.v[i][j] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[j]), _mm256_set1_ps(d * dx), acc.v[i][j]);
        acc.v[i][j] = _mm256_fnmadd_ps(msum, _mm256_set1_ps(dmin * dx), acc.v[i][j]);
      }
    }
  }
  acc.store(y, y_stride);
}

// q6_k weights × block-256 activations. Per super-block and token, in int32:
// Σ_g sc_g·Σ_{group g} q·q_x − 32·Σ_g sc_g·Σ_{group g} q_x over the 16-value groups g, with
// q ∈ [0, 63] the stored value before its −32 offset; then acc += d·d_x·(that).
template <int MR, int NR>
inline void tile_q6k_int(const std::byte* w, int64_t w_stride, const ActRows& x, int64_t K,
                         float* y, int64_t y_stride) {
  TileAcc<MR, NR> acc;
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(3);
  constexpr int64_t kBlockBytes = sizeof(BlockQ6_K);
  for (int64_t b = 0; b < K / kQKBlock; ++b) {
    prefetch_rows<MR, kInt8PrefetchBytes>(w, w_stride, b * kBlockBytes, K / kQKBlock * kBlockBytes,
                                          kBlockBytes);
    for (int i = 0; i < MR; ++i) {
      const auto* blk = reinterpret_cast<const BlockQ6_K*>(w + i * w_stride) + b;
      const __m256i sc16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk->scales)));
      __m256i sumi[NR];
      for (int j = 0; j < NR; ++j) {
        const __m256i bs = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(x.bsums + j * x.bs_stride + b * (kQKBlock / 16)));
        sumi[j] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                   _mm256_slli_epi32(_mm256_madd_epi16(bs, sc16), 5));
      }
      for (int e0 = 0; e0 < kQKBlock; e0 += 32) {  // one quarter: groups e0/16 and e0/16 + 1
        const int h = e0 / 128, g = (e0 % 128) / 32;
        const __m256i ql =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->ql + 64 * h + 32 * (g & 1)));
        const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qh + 32 * h));
        // 16-bit shifts: the masks drop the bits that cross from the neighbouring byte.
        const __m256i lo = _mm256_and_si256(g < 2 ? ql : _mm256_srli_epi16(ql, 4), low4);
        const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * g)), low2);
        const __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
        // maddubs pairs bytes 0–15 into lanes 0–7 (group e0/16), bytes 16–31 into lanes 8–15.
        const __m256i scv = _mm256_set_m128i(_mm_set1_epi16(blk->scales[e0 / 16 + 1]),
                                             _mm_set1_epi16(blk->scales[e0 / 16]));
        for (int j = 0; j < NR; ++j) {
          const __m256i xq = _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(x.q + j * x.q_stride + b * kQKBlock + e0));
          sumi[j] = _mm256_add_epi32(sumi[j], _mm256_madd_epi16(_mm256_maddubs_epi16(q, xq), scv));
        }
      }
      const float d = f16_to_f32(blk->d);
      for (int j = 0; j < NR; ++j) {
        acc.v[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[j]),
                                      _mm256_set1_ps(d * x.d[j * x.d_stride + b]), acc.v[i][j]);
      }
    }
  }
  acc.store(y, y_stride);
}

}  // namespace kiln::cpu::gemm_detail
