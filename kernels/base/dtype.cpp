#include "kernels/base/dtype.h"

#include <cmath>

#include <immintrin.h>

#include "kernels/ref/quant_k.h"

namespace kiln {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kQ8_0: return "q8_0";
    case DType::kQ4_K: return "q4_k";
    case DType::kQ6_K: return "q6_k";
  }
  return "?";
}

int64_t dtype_block_elems(DType t) {
  switch (t) {
    case DType::kF32:
    case DType::kF16:
    case DType::kBF16: return 1;
    case DType::kQ8_0: return kQ8Block;
    case DType::kQ4_K:
    case DType::kQ6_K: return kQKBlock;
  }
  return 1;
}

int64_t dtype_block_bytes(DType t) {
  switch (t) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kQ8_0: return static_cast<int64_t>(sizeof(BlockQ8_0));
    case DType::kQ4_K: return static_cast<int64_t>(sizeof(BlockQ4_K));
    case DType::kQ6_K: return static_cast<int64_t>(sizeof(BlockQ6_K));
  }
  return 0;
}

void quantize_row_q8_0(const float* x, BlockQ8_0* out, int64_t n) {
  for (int64_t b = 0; b < n / kQ8Block; ++b) {
    const float* xb = x + b * kQ8Block;
    float amax = 0.0f;
    for (int i = 0; i < kQ8Block; ++i) amax = std::fmax(amax, std::fabs(xb[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    out[b].d = f32_to_f16(d);
    for (int i = 0; i < kQ8Block; ++i) {
      out[b].qs[i] = static_cast<int8_t>(std::lround(xb[i] * id));
    }
  }
}

void dequantize_row_q8_0(const BlockQ8_0* in, float* y, int64_t n) {
  for (int64_t b = 0; b < n / kQ8Block; ++b) {
    const float d = f16_to_f32(in[b].d);
    for (int i = 0; i < kQ8Block; ++i) y[b * kQ8Block + i] = d * static_cast<float>(in[b].qs[i]);
  }
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::kQ8_0:
      dequantize_row_q8_0(static_cast<const BlockQ8_0*>(src), dst, n);
      return;
    case DType::kQ4_K:
      ref::dequantize_row_q4_k(static_cast<const BlockQ4_K*>(src), dst, n);
      return;
    case DType::kQ6_K:
      ref::dequantize_row_q6_k(static_cast<const BlockQ6_K*>(src), dst, n);
      return;
  }
}

}  // namespace kiln
