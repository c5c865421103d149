// Reference q4_k / q6_k dequantisers and row quantisers (see quant_k.h for the error bounds).
#include "kernels/ref/quant_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace kiln::ref {
namespace {

// The 6-bit scale and min of q4_k sub-block j (ggml's get_scale_min_k4).
void q4k_scale_min(const uint8_t* s, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
    *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Inverse of q4k_scale_min for all eight sub-blocks; sc[j], m[j] ∈ [0, 63].
void q4k_pack_scales(const int* sc, const int* m, uint8_t* s) {
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
}

// Rounds v / d to an integer in [lo, hi] (0 when d is 0).
int round_div(float v, float d, int lo, int hi) {
  if (d == 0.0f) return 0;
  return std::clamp(static_cast<int>(std::lround(v / d)), lo, hi);
}

}  // namespace

void dequantize_row_q4_k(const BlockQ4_K* in, float* y, int64_t n) {
  for (int64_t b = 0; b < n / kQKBlock; ++b) {
    const BlockQ4_K& blk = in[b];
    const float d = f16_to_f32(blk.d), dmin = f16_to_f32(blk.dmin);
    float* yb = y + b * kQKBlock;
    for (int e = 0; e < kQKBlock; ++e) {
      const int j = e / 32, c = e / 64, l = e % 32;
      const uint8_t byte = blk.qs[32 * c + l];
      const int q = (j % 2 == 0) ? (byte & 0x0F) : (byte >> 4);
      int sc = 0, m = 0;
      q4k_scale_min(blk.scales, j, &sc, &m);
      yb[e] = d * static_cast<float>(sc) * static_cast<float>(q) - dmin * static_cast<float>(m);
    }
  }
}

void dequantize_row_q6_k(const BlockQ6_K* in, float* y, int64_t n) {
  for (int64_t b = 0; b < n / kQKBlock; ++b) {
    const BlockQ6_K& blk = in[b];
    const float d = f16_to_f32(blk.d);
    float* yb = y + b * kQKBlock;
    for (int e = 0; e < kQKBlock; ++e) {
      const int h = e / 128, g = (e % 128) / 32, l = e % 32;
      const uint8_t lo_byte = blk.ql[64 * h + l + 32 * (g & 1)];
      const int lo = g < 2 ? (lo_byte & 0x0F) : (lo_byte >> 4);
      const int hi = (blk.qh[32 * h + l] >> (2 * g)) & 3;
      const int q = (lo | (hi << 4)) - 32;
      yb[e] = d * static_cast<float>(blk.scales[e / 16]) * static_cast<float>(q);
    }
  }
}

void quantize_row_q4_k(const float* x, BlockQ4_K* out, int64_t n) {
  for (int64_t b = 0; b < n / kQKBlock; ++b) {
    const float* xb = x + b * kQKBlock;
    float step[8], offset[8];  // per sub-block: value ≈ step·q − offset
    float max_step = 0.0f, max_offset = 0.0f;
    for (int j = 0; j < 8; ++j) {
      const float* xs = xb + 32 * j;
      float lo = 0.0f, hi = xs[0];
      for (int i = 0; i < 32; ++i) lo = std::min(lo, xs[i]), hi = std::max(hi, xs[i]);
      step[j] = (hi - lo) / 15.0f;
      offset[j] = -lo;
      max_step = std::max(max_step, step[j]);
      max_offset = std::max(max_offset, offset[j]);
    }
    BlockQ4_K& blk = out[b];
    blk.d = f32_to_f16(max_step / 63.0f);
    blk.dmin = f32_to_f16(max_offset / 63.0f);
    const float d = f16_to_f32(blk.d), dmin = f16_to_f32(blk.dmin);
    int sc[8], m[8];
    for (int j = 0; j < 8; ++j) {
      sc[j] = round_div(step[j], d, 0, 63);
      m[j] = round_div(offset[j], dmin, 0, 63);
    }
    q4k_pack_scales(sc, m, blk.scales);
    std::memset(blk.qs, 0, sizeof(blk.qs));
    for (int e = 0; e < kQKBlock; ++e) {
      const int j = e / 32, c = e / 64, l = e % 32;
      const float ds = d * static_cast<float>(sc[j]), dm = dmin * static_cast<float>(m[j]);
      const int q = round_div(xb[e] + dm, ds, 0, 15);
      blk.qs[32 * c + l] |= static_cast<uint8_t>(j % 2 == 0 ? q : q << 4);
    }
  }
}

void quantize_row_q6_k(const float* x, BlockQ6_K* out, int64_t n) {
  for (int64_t b = 0; b < n / kQKBlock; ++b) {
    const float* xb = x + b * kQKBlock;
    float step[16], max_step = 0.0f;
    for (int j = 0; j < 16; ++j) {
      float amax = 0.0f;
      for (int i = 0; i < 16; ++i) amax = std::max(amax, std::fabs(xb[16 * j + i]));
      step[j] = amax / 31.0f;
      max_step = std::max(max_step, step[j]);
    }
    BlockQ6_K& blk = out[b];
    blk.d = f32_to_f16(max_step / 127.0f);
    const float d = f16_to_f32(blk.d);
    for (int j = 0; j < 16; ++j) blk.scales[j] = static_cast<int8_t>(round_div(step[j], d, 0, 127));
    std::memset(blk.ql, 0, sizeof(blk.ql));
    std::memset(blk.qh, 0, sizeof(blk.qh));
    for (int e = 0; e < kQKBlock; ++e) {
      const int h = e / 128, g = (e % 128) / 32, l = e % 32;
      const float ds = d * static_cast<float>(blk.scales[e / 16]);
      const int q = round_div(xb[e], ds, -32, 31) + 32;
      blk.ql[64 * h + l + 32 * (g & 1)] |= static_cast<uint8_t>(g < 2 ? (q & 15) : (q & 15) << 4);
      blk.qh[32 * h + l] |= static_cast<uint8_t>((q >> 4) << (2 * g));
    }
  }
}

}  // namespace kiln::ref
