// cpu::matmul and embedding_lookup. Threads split the weight rows into contiguous units; a call's
// decode tokens over quantised weights run first through the integer tiles (gemm_int8.h), then
// its other tokens through the f32 ones on the same rows.
// f32 activations, f32/f16/bf16 weights, n ≤ 16 tokens: tiles convert the stored dtype in
// registers, a block of rows at a time, so each weight byte is streamed once per call. More
// tokens, or quantised weights: each group of 4 rows is converted to f32 once into a thread-local
// buffer and reused across a block of tokens by 4×3 register tiles.
// bf16 is read 16 weights at a time and split into even and odd elements (tile_bf16), so on both
// paths x is permuted to match and the buffered rows are converted in that order too.
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/base/check.h"
#include "kernels/cpu/gemm_int8.h"
#include "kernels/cpu/gemm_tiles.h"

namespace kiln::cpu {
namespace gemm_detail {
namespace {

// Vectorised twins of ref::dequantize_row_q4_k / _q6_k, bitwise equal to them: the same
// products in the same order ((d·sc)·q − dmin·m, (d·scale)·q), no fused multiply-add.
void convert_q4k(const BlockQ4_K* blk, int64_t n, float* dst) {
  const __m256i low4 = _mm256_set1_epi32(0x0F);
  for (int64_t b = 0; b < n / kQKBlock; ++b) {
    const float d = f16_to_f32(blk[b].d), dmin = f16_to_f32(blk[b].dmin);
    const uint8_t* s = blk[b].scales;
    for (int j = 0; j < 8; ++j) {
      const int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4);
      const int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
      const __m256 ds = _mm256_set1_ps(d * static_cast<float>(sc));
      const __m256 dm = _mm256_set1_ps(dmin * static_cast<float>(m));
      for (int g = 0; g < 32; g += 8) {
        const __m256i q = _mm256_and_si256(
            _mm256_srli_epi32(load8_u8(blk[b].qs + 32 * (j / 2) + g), 4 * (j % 2)), low4);
        _mm256_storeu_ps(dst + b * kQKBlock + 32 * j + g,
                         _mm256_sub_ps(_mm256_mul_ps(ds, _mm256_cvtepi32_ps(q)), dm));
      }
    }
  }
}

void convert_q6k(const BlockQ6_K* blk, int64_t n, float* dst) {
  const __m256i low4 = _mm256_set1_epi32(0x0F), low2 = _mm256_set1_epi32(3);
  const __m256i bias = _mm256_set1_epi32(32);
  for (int64_t b = 0; b < n / kQKBlock; ++b) {
    const float d = f16_to_f32(blk[b].d);
    for (int e = 0; e < kQKBlock; e += 8) {
      const int h = e / 128, g = (e % 128) / 32, l = e % 32;
      const __m256i lo = _mm256_and_si256(
          _mm256_srli_epi32(load8_u8(blk[b].ql + 64 * h + 32 * (g & 1) + l), 4 * (g / 2)), low4);
      const __m256i hi =
          _mm256_and_si256(_mm256_srli_epi32(load8_u8(blk[b].qh + 32 * h + l), 2 * g), low2);
      const __m256i q = _mm256_sub_epi32(_mm256_or_si256(lo, _mm256_slli_epi32(hi, 4)), bias);
      const __m256 ds = _mm256_set1_ps(d * static_cast<float>(blk[b].scales[e / 16]));
      _mm256_storeu_ps(dst + b * kQKBlock + e, _mm256_mul_ps(ds, _mm256_cvtepi32_ps(q)));
    }
  }
}

}  // namespace

void convert_row(DType t, const std::byte* src, int64_t n, float* dst) {
  const int64_t n8 = n & ~int64_t{7};
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::kF16:
      for (int64_t k = 0; k < n8; k += 8) _mm256_storeu_ps(dst + k, LoadF16::load8(src, k));
      for (int64_t k = n8; k < n; ++k) dst[k] = LoadF16::at(src, k);
      return;
    case DType::kBF16:
      for (int64_t k = 0; k < n8; k += 8) _mm256_storeu_ps(dst + k, LoadBF16::load8(src, k));
      for (int64_t k = n8; k < n; ++k) dst[k] = LoadBF16::at(src, k);
      return;
    case DType::kQ8_0: {
      const auto* blk = reinterpret_cast<const BlockQ8_0*>(src);
      for (int64_t b = 0; b < n / kQ8Block; ++b) {
        const __m256 d = _mm256_set1_ps(f16_to_f32(blk[b].d));
        for (int g = 0; g < kQ8Block; g += 8) {
          const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk[b].qs + g));
          _mm256_storeu_ps(dst + b * kQ8Block + g,
                           _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d));
        }
      }
      return;
    }
    case DType::kQ4_K:
      return convert_q4k(reinterpret_cast<const BlockQ4_K*>(src), n, dst);
    case DType::kQ6_K:
      return convert_q6k(reinterpret_cast<const BlockQ6_K*>(src), n, dst);
  }
}

}  // namespace gemm_detail

namespace {

using namespace gemm_detail;

constexpr int64_t kRowUnit = 16;             // rows per parallel unit: 64 B of each y row
constexpr int64_t kXBlockBytes = 192 << 10;  // token block of x kept in L2 while rows stream
constexpr int64_t kSerialMacs = 1 << 16;  // below this much work, threads cost more than they save
// f32/f16/bf16: up to this many tokens the weights are converted in registers (rows_direct),
// beyond it once into an f32 buffer (rows_buffered); both do the same FMAs per output (bitwise
// equal). Quantised weights with f32 activations always take the buffered path, so a token's
// result never depends on how many others share the call; their decode-sized products take the
// integer path instead (gemm_int8.h).
constexpr int64_t kDirectMaxTokens = 16;
// Integer path by default (kInt8Auto) up to this many tokens.
constexpr int64_t kInt8AutoMaxTokens = 4;

// x is either f32 activation rows (const float*, rows xs floats apart) or quantised ones
// (ActRows, which carry their own strides); skip_tokens moves to token t.
inline const float* skip_tokens(const float* x, int64_t xs, int64_t t) { return x + t * xs; }
inline ActRows skip_tokens(const ActRows& x, int64_t, int64_t t) { return x.skip(t); }

template <class L>
struct PlainTile {
  template <int MR, int NR>
  static void run(const std::byte* w, int64_t ws, const float* x, int64_t xs, int64_t K, float* y,
                  int64_t ys) {
    tile<L, MR, NR>(w, ws, x, xs, K, y, ys);
  }
};
// The quantised tiles hold two accumulators per (row, token) or more; MR rows are run as
// sub-tiles of at most kSub rows so everything stays in the 16 vector registers. F<MR, NR>::run
// is one sub-tile.
template <template <int, int> class F>
struct SubTiled {
  template <int MR, int NR, class X>
  static void run(const std::byte* w, int64_t ws, const X& x, int64_t xs, int64_t K, float* y,
                  int64_t ys) {
    constexpr int kSub = NR == 1 ? 4 : 2;
    if constexpr (MR <= kSub) {
      F<MR, NR>::run(w, ws, x, xs, K, y, ys);
    } else {
      F<kSub, NR>::run(w, ws, x, xs, K, y, ys);
      run<MR - kSub, NR>(w + kSub * ws, ws, x, xs, K, y + kSub, ys);
    }
  }
};
template <int MR, int NR>
struct Q8IntFn {
  static void run(const std::byte* w, int64_t ws, const ActRows& x, int64_t, int64_t K, float* y,
                  int64_t ys) {
    tile_q8_int<MR, NR>(w, ws, x, K, y, ys);
  }
};
template <int MR, int NR>
struct Q4KIntFn {
  static void run(const std::byte* w, int64_t ws, const ActRows& x, int64_t, int64_t K, float* y,
                  int64_t ys) {
    tile_q4k_int<MR, NR>(w, ws, x, K, y, ys);
  }
};
template <int MR, int NR>
struct Q6KIntFn {
  static void run(const std::byte* w, int64_t ws, const ActRows& x, int64_t, int64_t K, float* y,
                  int64_t ys) {
    tile_q6k_int<MR, NR>(w, ws, x, K, y, ys);
  }
};
using Q8IntTile = SubTiled<Q8IntFn>;
using Q4KIntTile = SubTiled<Q4KIntFn>;
using Q6KIntTile = SubTiled<Q6KIntFn>;
// MR·NR accumulators (≤ 12), the mask and three weight vectors; x is read from L1 per FMA.
// kWideGroups: with 6 tokens or more, 2 rows × 6 tokens per tile, so each weight is converted
// half as often per token as in 4 × 3 tiles.
struct Bf16Tile {
  static constexpr bool kWideGroups = true;
  template <int MR, int NR>
  static void run(const std::byte* w, int64_t ws, const float* x, int64_t xs, int64_t K, float* y,
                  int64_t ys) {
    tile_bf16<MR, NR>(w, ws, x, xs, K, y, ys);
  }
};

// Rows [0, m) × NR tokens, MR rows per tile then single rows.
template <class Tk, int MR, int NR, class X>
void rows_tile(const std::byte* w, int64_t ws, int64_t m, const X& x, int64_t xs, int64_t K,
               float* y, int64_t ys) {
  int64_t r = 0;
  for (; r + MR <= m; r += MR) Tk::template run<MR, NR>(w + r * ws, ws, x, xs, K, y + r, ys);
  for (; r < m; ++r) Tk::template run<1, NR>(w + r * ws, ws, x, xs, K, y + r, ys);
}

// Rows [0, m) × tokens [0, nt): groups of 6 tokens where the tile asks for them, then groups of
// 3, then the 2- or 1-token remainder. A tile's outputs do not depend on its shape (each
// accumulator sees the same products in the same order), so the grouping never changes results.
template <class Tk, int MR, class X>
void rows_tokens(const std::byte* w, int64_t ws, int64_t m, const X& x, int64_t xs, int64_t nt,
                 int64_t K, float* y, int64_t ys) {
  int64_t t = 0;
  if constexpr (requires { Tk::kWideGroups; }) {
    for (; t + 6 <= nt; t += 6) {
      rows_tile<Tk, 2, 6>(w, ws, m, skip_tokens(x, xs, t), xs, K, y + t * ys, ys);
    }
  }
  for (; t + 3 <= nt; t += 3) {
    rows_tile<Tk, MR, 3>(w, ws, m, skip_tokens(x, xs, t), xs, K, y + t * ys, ys);
  }
  if (nt - t == 2) rows_tile<Tk, MR, 2>(w, ws, m, skip_tokens(x, xs, t), xs, K, y + t * ys, ys);
  if (nt - t == 1) rows_tile<Tk, 8, 1>(w, ws, m, skip_tokens(x, xs, t), xs, K, y + t * ys, ys);
}

int64_t token_block(int64_t K) {
  const int64_t nb = kXBlockBytes / (K * static_cast<int64_t>(sizeof(float)));
  return std::max<int64_t>(6, nb / 3 * 3);
}

// Weights converted in registers, each row read once per group of ≤ 3 tokens: decode.
template <class Tk, class X>
void rows_direct(const MatrixView& w, int64_t r0, int64_t r1, const X& x, int64_t xs, int64_t n,
                 float* y, int64_t ys) {
  const int64_t tb = token_block(w.cols);
  // More than one group of 3 tokens: a block of rows (≤ 16 KiB) is converted in registers once
  // per token group while it sits in L1, so each weight byte still comes from memory once.
  const int64_t rb =
      n <= 3 ? r1 - r0 : std::max<int64_t>(4, (int64_t{16} << 10) / w.row_stride / 4 * 4);
  for (int64_t t0 = 0; t0 < n; t0 += tb) {
    for (int64_t r = r0; r < r1; r += rb) {
      rows_tokens<Tk, 4>(w.row(r), w.row_stride, std::min(rb, r1 - r), skip_tokens(x, xs, t0), xs,
                         std::min(tb, n - t0), w.cols, y + t0 * ys + r, ys);
    }
  }
}

// Each group of 4 rows is converted to f32 once per token block and reused by every token of
// the block while it sits in L1 (f32 rows are used in place). bf16 rows are converted in the
// order of tile_bf16, against x already permuted to match (prepare_x).
void rows_buffered(const MatrixView& w, int64_t r0, int64_t r1, const float* x, int64_t xs,
                   int64_t n, float* y, int64_t ys) {
  thread_local std::vector<float> buf;  // [4][K] f32, grows once
  const int64_t K = w.cols;
  if (w.dtype != DType::kF32 && buf.size() < static_cast<size_t>(4 * K)) {
    buf.resize(static_cast<size_t>(4 * K));
  }
  const auto* wb = reinterpret_cast<const std::byte*>(buf.data());
  const int64_t wbs = K * static_cast<int64_t>(sizeof(float));
  const int64_t tb = token_block(K);
  for (int64_t t0 = 0; t0 < n; t0 += tb) {
    const int64_t nt = std::min(tb, n - t0);
    for (int64_t r = r0; r < r1; r += 4) {
      const int64_t m = std::min<int64_t>(4, r1 - r);
      if (w.dtype == DType::kF32) {  // already f32: use the stored rows in place
        rows_tokens<PlainTile<LoadF32>, 4>(w.row(r), w.row_stride, m, x + t0 * xs, xs, nt, K,
                                           y + t0 * ys + r, ys);
        continue;
      }
      for (int64_t i = 0; i < m; ++i) {
        if (w.dtype == DType::kBF16) {
          convert_row_bf16_permuted(w.row(r + i), K, buf.data() + i * K);
        } else {
          convert_row(w.dtype, w.row(r + i), K, buf.data() + i * K);
        }
      }
      rows_tokens<PlainTile<LoadF32>, 4>(wb, wbs, m, x + t0 * xs, xs, nt, K, y + t0 * ys + r, ys);
    }
  }
}

// bf16 weights read x in the order of permute_x_bf16 on both paths (the identity below 16
// columns).
bool permutes_x(const MatrixView& w) { return w.dtype == DType::kBF16 && w.cols >= 16; }

// x prepared for rows_f32 on the calling thread's buffer, once per call (read by the workers of
// the call).
const float* prepare_x(const MatrixView& w, const float* x, int64_t& xs, int64_t n) {
  if (!permutes_x(w) || n <= 0) return x;
  thread_local std::vector<float> xp;  // grows once
  const int64_t K = w.cols;
  if (xp.size() < static_cast<size_t>(n * K)) xp.resize(static_cast<size_t>(n * K));
  for (int64_t t = 0; t < n; ++t) permute_x_bf16(x + t * xs, K, xp.data() + t * K);
  xs = K;
  return xp.data();
}

// x is already permuted where permutes_x (prepare_x).
void rows_f32(const MatrixView& w, int64_t r0, int64_t r1, const float* x, int64_t xs, int64_t n,
              float* y, int64_t ys) {
  if (n <= 0) return;
  if (n > kDirectMaxTokens) return rows_buffered(w, r0, r1, x, xs, n, y, ys);
  switch (w.dtype) {
    case DType::kF32:
      return rows_direct<PlainTile<LoadF32>>(w, r0, r1, x, xs, n, y, ys);
    case DType::kF16:
      return rows_direct<PlainTile<LoadF16>>(w, r0, r1, x, xs, n, y, ys);
    case DType::kBF16:
      return rows_direct<Bf16Tile>(w, r0, r1, x, xs, n, y, ys);
    case DType::kQ8_0:
    case DType::kQ4_K:
    case DType::kQ6_K:
      return rows_buffered(w, r0, r1, x, xs, n, y, ys);
  }
}

bool is_quantized(DType t) { return t == DType::kQ8_0 || t == DType::kQ4_K || t == DType::kQ6_K; }

// The activation block the integer path of a weight type quantises in.
int int8_block(DType t) { return t == DType::kQ8_0 ? 32 : 256; }

void check_shapes(const MatrixView& w, int64_t x_stride, int64_t n, int64_t y_stride) {
  KILN_CHECK(w.cols % dtype_block_elems(w.dtype) == 0);
  KILN_CHECK(n <= 1 || (x_stride >= w.cols && y_stride >= w.rows));
}

// The calling thread's quantised activations: filled before the rows are split over the pool,
// read by every thread of the call.
ActRows quantize_activations(const MatrixView& w, const float* x, int64_t x_stride, int64_t n) {
  thread_local ActBuffer buf;
  return buf.quantize(int8_block(w.dtype), x, x_stride, n, w.cols);
}

void rows_int8(const MatrixView& w, int64_t r0, int64_t r1, const ActRows& x, int64_t n, float* y,
               int64_t ys) {
  if (n <= 0) return;
  switch (w.dtype) {
    case DType::kQ8_0:
      return rows_direct<Q8IntTile>(w, r0, r1, x, 0, n, y, ys);
    case DType::kQ4_K:
      return rows_direct<Q4KIntTile>(w, r0, r1, x, 0, n, y, ys);
    case DType::kQ6_K:
      return rows_direct<Q6KIntTile>(w, r0, r1, x, 0, n, y, ys);
    default:
      KILN_CHECK_MSG(false, "no integer matmul path for this dtype");
  }
}

}  // namespace

int64_t matmul_int8_tokens(const ThreadPool& pool, DType t, int64_t n, int64_t int8_tokens) {
  if (!is_quantized(t) || pool.exact_activations()) return 0;
  if (int8_tokens == kInt8Auto) return n <= kInt8AutoMaxTokens ? n : 0;
  KILN_CHECK(int8_tokens >= 0 && int8_tokens <= n);
  return int8_tokens;
}

void matmul(ThreadPool& pool, const MatrixView& w, const float* x, int64_t x_stride, int64_t n,
            float* y, int64_t y_stride, int64_t int8_tokens) {
  check_shapes(w, x_stride, n, y_stride);
  if (n <= 0 || w.rows <= 0) return;
  const int64_t ni = matmul_int8_tokens(pool, w.dtype, n, int8_tokens);
  const ActRows a = ni > 0 ? quantize_activations(w, x, x_stride, ni) : ActRows{};
  const int64_t units = (w.rows + kRowUnit - 1) / kRowUnit;
  const int64_t grain = w.rows * w.cols * n < kSerialMacs ? units : 1;
  int64_t xs = x_stride;
  const float* xf = prepare_x(w, x + ni * x_stride, xs, n - ni);
  pool.parallel_for(units, grain, [&](int64_t b, int64_t e) {
    const int64_t r0 = b * kRowUnit, r1 = std::min(w.rows, e * kRowUnit);
    rows_int8(w, r0, r1, a, ni, y, y_stride);
    rows_f32(w, r0, r1, xf, xs, n - ni, y + ni * y_stride, y_stride);
  });
}

void matmul_serial(const ThreadPool& pool, const MatrixView& w, const float* x, int64_t x_stride,
                   int64_t n, float* y, int64_t y_stride, int64_t int8_tokens) {
  check_shapes(w, x_stride, n, y_stride);
  if (n <= 0 || w.rows <= 0) return;
  const int64_t ni = matmul_int8_tokens(pool, w.dtype, n, int8_tokens);
  if (ni > 0) rows_int8(w, 0, w.rows, quantize_activations(w, x, x_stride, ni), ni, y, y_stride);
  int64_t xs = x_stride;
  const float* xf = prepare_x(w, x + ni * x_stride, xs, n - ni);
  rows_f32(w, 0, w.rows, xf, xs, n - ni, y + ni * y_stride, y_stride);
}

void embedding_lookup(const MatrixView& table, const int32_t* ids, int64_t n, float* out) {
  for (int64_t t = 0; t < n; ++t) {
    KILN_CHECK_MSG(ids[t] >= 0 && ids[t] < table.rows, "token id out of range");
    convert_row(table.dtype, table.row(ids[t]), table.cols, out + t * table.cols);
  }
}

}  // namespace kiln::cpu
