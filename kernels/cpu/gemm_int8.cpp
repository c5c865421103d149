// ActBuffer::quantize: the activation quantiser of the integer matmul paths (gemm_int8.h).
// Bitwise equal to ref::quantize_activations: the same fp32 operations (amax, 127/amax, x·that,
// round to nearest even).
#include "kernels/cpu/gemm_int8.h"

#include <cmath>

#include "kernels/base/check.h"

namespace kiln::cpu::gemm_detail {
namespace {

// max |x[0..n)|, n % 8 == 0.
float abs_max(const float* x, int64_t n) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int64_t k = 0; k < n; k += 8)
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + k)));
  return vec::hmax(m);
}

// 32 values times `scale`, rounded to nearest even, packed to int8 in order; returns the four
// int32 vectors' sums of 16 (elements 0–15 and 16–31) through `sum16`.
void quantize32(const float* x, __m256 scale, int8_t* q, int16_t* sum16) {
  __m256i v[4];
  for (int g = 0; g < 4; ++g)
    v[g] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * g), scale));
  if (sum16 != nullptr) {
    const auto hsum_i32 = [](__m256i a) {
      __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
      s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
      s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
      return _mm_cvtsi128_si32(s);
    };
    sum16[0] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(v[0], v[1])));
    sum16[1] = static_cast<int16_t>(hsum_i32(_mm256_add_epi32(v[2], v[3])));
  }
  // packs interleave the 128-bit lanes; the permutation restores element order.
  const __m256i p =
      _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q),
                      _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

}  // namespace

ActRows ActBuffer::quantize(int block, const float* x, int64_t x_stride, int64_t n, int64_t K) {
  KILN_CHECK(block == 32 || block == 256);
  KILN_CHECK(K % block == 0);
  const int64_t nb = K / block;
  q_.resize(static_cast<size_t>(std::max<int64_t>(q_.size(), n * K)));
  d_.resize(static_cast<size_t>(std::max<int64_t>(d_.size(), n * nb)));
  if (block == 256)
    bsums_.resize(static_cast<size_t>(std::max<int64_t>(bsums_.size(), n * K / 16)));
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = x + t * x_stride + b * block;
      const float amax = abs_max(xb, block);
      const __m256 scale = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
      d_[static_cast<size_t>(t * nb + b)] = amax / 127.0f;
      for (int k = 0; k < block; k += 32) {
        int16_t* s16 = block == 256 ? bsums_.data() + (t * K + b * block + k) / 16 : nullptr;
        quantize32(xb + k, scale, q_.data() + t * K + b * block + k, s16);
      }
    }
  }
  ActRows a;
  a.q = q_.data();
  a.d = d_.data();
  a.bsums = block == 256 ? bsums_.data() : nullptr;
  a.q_stride = K;
  a.d_stride = nb;
  a.bs_stride = K / 16;
  return a;
}

}  // namespace kiln::cpu::gemm_detail
