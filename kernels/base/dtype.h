// Element types kiln's kernels consume directly, with their storage sizes and scalar conversions.
// Quantised types are stored in blocks along a row: q8_0 = 32 int8 values + one f16 scale;
// q4_k and q6_k are ggml's 256-element k-quant super-blocks (layouts below, byte-exact with ggml).
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

#include <immintrin.h>

namespace kiln {

enum class DType : uint8_t { kF32, kF16, kBF16, kQ8_0, kQ4_K, kQ6_K };

std::string_view dtype_name(DType t);
// Elements per storage block (1 for plain types, 32 for q8_0, 256 for q4_k/q6_k) and bytes per
// block.
int64_t dtype_block_elems(DType t);
int64_t dtype_block_bytes(DType t);
// Bytes of `n` elements; n must be a multiple of the block size (checked by callers).
inline int64_t dtype_row_bytes(DType t, int64_t n) {
  return n / dtype_block_elems(t) * dtype_block_bytes(t);
}

inline constexpr int kQ8Block = 32;
struct BlockQ8_0 {
  uint16_t d;            // f16 scale
  int8_t qs[kQ8Block];   // value = d * qs[i]
};
static_assert(sizeof(BlockQ8_0) == 34);

inline constexpr int kQKBlock = 256;  // ggml's QK_K: elements per k-quant super-block
// q4_k: 8 sub-blocks of 32; value = d·sc[j]·q − dmin·m[j], q ∈ [0, 15], sc/m 6-bit.
// scales[12] packs the eight (sc, m) pairs as ggml's get_scale_min_k4 reads them: for j < 4,
// sc[j] = scales[j] & 63 and m[j] = scales[j+4] & 63; for j ≥ 4, the low 4 bits come from
// scales[j+4] (sc: low nibble, m: high nibble) and the top 2 bits from bits 6–7 of scales[j−4]
// (sc) and scales[j] (m). qs[32·c + l] holds element 64·c + l (low nibble, sub-block 2c) and
// element 64·c + 32 + l (high nibble, sub-block 2c+1).
struct BlockQ4_K {
  uint16_t d;           // f16 super-block scale of the 6-bit scales
  uint16_t dmin;        // f16 super-block scale of the 6-bit mins
  uint8_t scales[12];
  uint8_t qs[kQKBlock / 2];
};
static_assert(sizeof(BlockQ4_K) == 144);
// q6_k: 16 sub-blocks of 16; value = d·scales[e/16]·(q − 32), q ∈ [0, 63]. Element e of half
// h = e/128 at offset l < 32 of quarter g = (e%128)/32: the low 4 bits are in
// ql[64h + l + 32·(g&1)] (low nibble for g < 2, high nibble otherwise), the top 2 bits in
// qh[32h + l] at bit 2g.
struct BlockQ6_K {
  uint8_t ql[kQKBlock / 2];
  uint8_t qh[kQKBlock / 4];
  int8_t scales[kQKBlock / 16];
  uint16_t d;           // f16
};
static_assert(sizeof(BlockQ6_K) == 210);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
// F16C conversions (every kiln target is built with -mf16c); inline because the q8_0 kernels
// convert one block scale per 32 weights.
inline float f16_to_f32(uint16_t h) { return _cvtsh_ss(h); }
inline uint16_t f32_to_f16(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }

// Quantises n values (n % 32 == 0) to q8_0 the way ggml does (d = amax/127, round to nearest).
void quantize_row_q8_0(const float* x, BlockQ8_0* out, int64_t n);
void dequantize_row_q8_0(const BlockQ8_0* in, float* y, int64_t n);
// Converts one row of `n` stored elements of type t to f32.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

}  // namespace kiln
