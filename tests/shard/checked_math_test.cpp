// checked_mul / checked_add at the 2^63 and 2^64 boundaries, signed and unsigned: every size
// computed from a checkpoint header goes through these.
#include <gtest/gtest.h>

#include <limits>

#include "kernels/base/checked_math.h"

namespace kiln {
namespace {

constexpr uint64_t kU64Max = std::numeric_limits<uint64_t>::max();
constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();
constexpr uint64_t k2to32 = uint64_t{1} << 32;
constexpr uint64_t k2to63 = uint64_t{1} << 63;

TEST(CheckedMath, UnsignedMultiplyAt2To64) {
  EXPECT_EQ(checked_mul(k2to32, k2to32 - 1), k2to32 * (k2to32 - 1));
  EXPECT_FALSE(checked_mul(k2to32, k2to32).has_value());  // exactly 2^64
  EXPECT_EQ(checked_mul(k2to63, uint64_t{1}), k2to63);
  EXPECT_FALSE(checked_mul(k2to63, uint64_t{2}).has_value());
  EXPECT_EQ(checked_mul(kU64Max, uint64_t{1}), kU64Max);
  EXPECT_FALSE(checked_mul(kU64Max, uint64_t{2}).has_value());
  EXPECT_EQ(checked_mul(kU64Max, uint64_t{0}), uint64_t{0});
  EXPECT_EQ(checked_mul(uint64_t{3}, uint64_t{6148914691236517205u}), kU64Max);  // (2^64-1)/3
  EXPECT_FALSE(checked_mul(uint64_t{3}, uint64_t{6148914691236517206u}).has_value());
}

TEST(CheckedMath, UnsignedAddAt2To64) {
  EXPECT_EQ(checked_add(k2to63, k2to63 - 1), kU64Max);
  EXPECT_FALSE(checked_add(k2to63, k2to63).has_value());
  EXPECT_FALSE(checked_add(kU64Max, uint64_t{1}).has_value());
  EXPECT_EQ(checked_add(kU64Max, uint64_t{0}), kU64Max);
}

TEST(CheckedMath, SignedMultiplyAt2To63) {
  const int64_t p62 = int64_t{1} << 62;
  EXPECT_EQ(checked_mul(p62, int64_t{1}), p62);
  EXPECT_FALSE(checked_mul(p62, int64_t{2}).has_value());  // 2^63 > INT64_MAX
  EXPECT_EQ(checked_mul(-p62, int64_t{2}), kI64Min);        // -2^63 fits
  EXPECT_FALSE(checked_mul(int64_t{1} << 31, int64_t{1} << 32).has_value());
  EXPECT_EQ(checked_mul(int64_t{1} << 31, int64_t{1} << 31), p62);
  EXPECT_FALSE(checked_mul(kI64Min, int64_t{-1}).has_value());
  EXPECT_FALSE(checked_mul(kI64Max, int64_t{2}).has_value());
  EXPECT_EQ(checked_mul(kI64Max, int64_t{-1}), -kI64Max);
  EXPECT_EQ(checked_mul(int64_t{3037000499}, int64_t{3037000499}),
            int64_t{3037000499} * int64_t{3037000499});  // floor(sqrt(2^63 - 1))
  EXPECT_FALSE(checked_mul(int64_t{3037000500}, int64_t{3037000500}).has_value());
}

TEST(CheckedMath, SignedAddAt2To63) {
  EXPECT_FALSE(checked_add(kI64Max, int64_t{1}).has_value());
  EXPECT_EQ(checked_add(kI64Max, int64_t{0}), kI64Max);
  EXPECT_FALSE(checked_add(kI64Min, int64_t{-1}).has_value());
  EXPECT_EQ(checked_add(kI64Min, kI64Max), int64_t{-1});
  EXPECT_FALSE(checked_add(int64_t{1} << 62, int64_t{1} << 62).has_value());
  EXPECT_EQ(checked_add(int64_t{1} << 62, (int64_t{1} << 62) - 1), kI64Max);
}

}  // namespace
}  // namespace kiln
