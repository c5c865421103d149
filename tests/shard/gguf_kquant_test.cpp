// GGUF Q4_K / Q6_K tensors: blocks written byte by byte from ggml's layout (independent of kiln's
// quantisers) survive a writer → reader round trip with the right type, shape and bytes, and
// decode to the floats ggml's dequantize_row_q4_K / _q6_K loops give (recomputed here in ggml's
// loop order, not kiln's per-element indexing); k-quant rows that are not whole blocks are
// rejected.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "kernels/base/dtype.h"
#include "shard/gguf.h"
#include "tests/shard/format_fixtures.h"

namespace kiln {
namespace {

using namespace kiln::testing_fixtures;

StatusOr<GgufFile> parse_bytes(std::string bytes) {
  return GgufFile::parse(MappedFile::from_bytes(std::move(bytes), "mem.gguf"));
}

void put_u16(std::string& s, uint16_t v) {
  s.push_back(static_cast<char>(v & 0xff));
  s.push_back(static_cast<char>(v >> 8));
}

// Sub-block scales and mins of the Q4_K block below, and their 12 packed bytes worked out by
// hand: bytes 0–3 = sc[0..3] | (sc[4..7] >> 4) << 6, bytes 4–7 = m[0..3] | (m[4..7] >> 4) << 6,
// bytes 8–11 = (sc[4..7] & 15) | (m[4..7] & 15) << 4.
constexpr int kSc[8] = {1, 2, 3, 4, 17, 33, 50, 63};
constexpr int kMin[8] = {0, 1, 2, 3, 20, 40, 5, 63};
constexpr uint8_t kPacked[12] = {65, 130, 195, 196, 64, 129, 2, 195, 65, 129, 82, 255};

// d = 1.0, dmin = 0.5 (f16 0x3C00, 0x3800); qs[i] = (i % 16) | ((15 − i % 16) << 4) + block.
std::string q4k_block(int block) {
  std::string s;
  put_u16(s, 0x3C00);
  put_u16(s, 0x3800);
  for (uint8_t b : kPacked) s.push_back(static_cast<char>(b));
  for (int i = 0; i < 128; ++i) {
    const int lo = (i + block) % 16, hi = 15 - i % 16;
    s.push_back(static_cast<char>(lo | (hi << 4)));
  }
  return s;
}
uint8_t q4k_qs(int block, int i) {
  return static_cast<uint8_t>(((i + block) % 16) | ((15 - i % 16) << 4));
}
// ggml's dequantize_row_q4_K loop for one block.
std::vector<float> q4k_expected(int block) {
  std::vector<float> y;
  const float d = 1.0f, dmin = 0.5f;
  int is = 0;
  for (int j = 0; j < 256; j += 64) {
    const float d1 = d * kSc[is], m1 = dmin * kMin[is];
    const float d2 = d * kSc[is + 1], m2 = dmin * kMin[is + 1];
    for (int l = 0; l < 32; ++l) y.push_back(d1 * (q4k_qs(block, j / 2 + l) & 0xF) - m1);
    for (int l = 0; l < 32; ++l) y.push_back(d2 * (q4k_qs(block, j / 2 + l) >> 4) - m2);
    is += 2;
  }
  return y;
}

// d = 0.25 (f16 0x3400); scales[k] = ±(k + 1); ql[i] = i·37 mod 256; qh[i] = i·101 mod 256.
constexpr int8_t kQ6Scales[16] = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -16};
uint8_t q6_ql(int i) { return static_cast<uint8_t>(i * 37 % 256); }
uint8_t q6_qh(int i) { return static_cast<uint8_t>(i * 101 % 256); }
std::string q6k_block() {
  std::string s;
  for (int i = 0; i < 128; ++i) s.push_back(static_cast<char>(q6_ql(i)));
  for (int i = 0; i < 64; ++i) s.push_back(static_cast<char>(q6_qh(i)));
  for (int8_t v : kQ6Scales) s.push_back(static_cast<char>(v));
  put_u16(s, 0x3400);
  return s;
}
// ggml's dequantize_row_q6_K loop for one block.
std::vector<float> q6k_expected() {
  std::vector<float> y(256);
  const float d = 0.25f;
  int ql = 0, qh = 0, sc = 0, y0 = 0;
  for (int n = 0; n < 256; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((q6_ql(ql + l) & 0xF) | (((q6_qh(qh + l) >> 0) & 3) << 4)) - 32;
      const int q2 = ((q6_ql(ql + l + 32) & 0xF) | (((q6_qh(qh + l) >> 2) & 3) << 4)) - 32;
      const int q3 = ((q6_ql(ql + l) >> 4) | (((q6_qh(qh + l) >> 4) & 3) << 4)) - 32;
      const int q4 = ((q6_ql(ql + l + 32) >> 4) | (((q6_qh(qh + l) >> 6) & 3) << 4)) - 32;
      y[y0 + l] = d * kQ6Scales[sc + is] * q1;
      y[y0 + l + 32] = d * kQ6Scales[sc + is + 2] * q2;
      y[y0 + l + 64] = d * kQ6Scales[sc + is + 4] * q3;
      y[y0 + l + 96] = d * kQ6Scales[sc + is + 6] * q4;
    }
    y0 += 128, ql += 64, qh += 32, sc += 8;
  }
  return y;
}

TEST(GgufKQuants, HandBuiltBlocksRoundTripAndDecode) {
  ASSERT_EQ(q4k_block(0).size(), 144u);
  ASSERT_EQ(q6k_block().size(), 210u);
  const std::string q4 = q4k_block(0) + q4k_block(5);  // one row of 512
  const std::string q6 = q6k_block() + q6k_block();    // two rows of 256
  GgufWriter w;
  w.add_tensor("blk.0.attn_q.weight", GgmlType::kQ4_K, {512, 1}, q4);
  w.add_tensor("blk.0.ffn_down.weight", GgmlType::kQ6_K, {256, 2}, q6);
  auto g = parse_bytes(w.serialize());
  ASSERT_TRUE(g.ok()) << g.status().to_string();
  ASSERT_EQ(g->tensors().size(), 2u);
  const GgufTensor& t4 = g->tensors()[0];
  const GgufTensor& t6 = g->tensors()[1];
  EXPECT_EQ(t4.type, GgmlType::kQ4_K);
  EXPECT_EQ(t4.dtype, DType::kQ4_K);
  EXPECT_EQ(t4.ne, (std::vector<int64_t>{512, 1}));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(t4.data), t4.nbytes), q4);
  EXPECT_EQ(t6.type, GgmlType::kQ6_K);
  EXPECT_EQ(t6.dtype, DType::kQ6_K);
  EXPECT_EQ(t6.ne, (std::vector<int64_t>{256, 2}));
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(t6.data), t6.nbytes), q6);

  std::vector<float> y4(512), y6(512);
  dequantize_row(DType::kQ4_K, t4.data, y4.data(), 512);
  dequantize_row(DType::kQ6_K, t6.data, y6.data(), 512);
  std::vector<float> want4 = q4k_expected(0);
  const std::vector<float> second = q4k_expected(5);
  want4.insert(want4.end(), second.begin(), second.end());
  std::vector<float> want6 = q6k_expected();
  want6.insert(want6.end(), want6.begin(), want6.end());
  for (int i = 0; i < 512; ++i) {
    ASSERT_EQ(y4[i], want4[i]) << "q4_k element " << i;
    ASSERT_EQ(y6[i], want6[i]) << "q6_k element " << i;
  }
  // Spot values worked out by hand: element 0 = 1·1·(0 & 15) − 0.5·0; element 32 (sub-block 1,
  // high nibble of qs[0] = 15) = 2·15 − 0.5; q6_k element 0: ql 0, qh 0 → (0 − 32)·0.25·1.
  EXPECT_EQ(y4[0], 0.0f);
  EXPECT_EQ(y4[32], 29.5f);
  EXPECT_EQ(y6[0], -8.0f);
}

TEST(GgufKQuants, RowsThatAreNotWholeBlocksAreRejected) {
  GgufWriter w;
  w.add_tensor("blk.0.attn_q.weight", GgmlType::kQ4_K, {128, 2}, std::string(144, '\0'));
  expect_error(parse_bytes(w.serialize()).status(), {"ne[0] = 128", "block size 256"});
  GgufWriter w6;
  w6.add_tensor("blk.0.attn_q.weight", GgmlType::kQ6_K, {300}, std::string(210, '\0'));
  expect_error(parse_bytes(w6.serialize()).status(), {"ne[0] = 300", "block size 256"});
}

}  // namespace
}  // namespace kiln
