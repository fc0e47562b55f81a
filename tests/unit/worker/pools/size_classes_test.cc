// Tests of SizeClasses: the size -> class mapping, spacing and span fit.
#include "worker/pools/size_classes.h"

#include "gtest/gtest.h"

namespace poold::pools {
namespace {

TEST(SizeClassesTest, SmallClassesAreFourBytesApart) {
  SizeClasses classes(PoolKind::kSmall, 64 << 10, /*bitmap_in_span=*/true);
  EXPECT_EQ(classes.count(), 255u);
  for (uint32_t i = 0; i < classes.count(); ++i) {
    EXPECT_EQ(classes.Get(i).slot_bytes, 8 + 4 * i);
  }
}

TEST(SizeClassesTest, MediumClassesAreAtMostOneThirtySecondApart) {
  SizeClasses classes(PoolKind::kMedium, 1 << 20, /*bitmap_in_span=*/false);
  EXPECT_EQ(classes.Get(0).slot_bytes, 1024u);
  EXPECT_EQ(classes.Get(classes.count() - 1).slot_bytes, 65536u);
  EXPECT_EQ(classes.count(), 193u);
  for (uint32_t i = 1; i < classes.count(); ++i) {
    const double prev = classes.Get(i - 1).slot_bytes;
    const double cur = classes.Get(i).slot_bytes;
    EXPECT_GT(cur, prev);
    EXPECT_LE((cur - prev) / prev, 1.0 / 32 + 1e-9) << "class " << i;
  }
}

// Every size maps to the smallest class that holds it.
TEST(SizeClassesTest, EverySizeGetsTheSmallestFittingClass) {
  for (PoolKind pool : {PoolKind::kSmall, PoolKind::kMedium}) {
    const uint64_t span = pool == PoolKind::kSmall ? 64 << 10 : 1 << 20;
    SizeClasses classes(pool, span, pool == PoolKind::kSmall);
    const uint64_t lo = pool == PoolKind::kSmall ? 1 : kMediumMinBytes;
    const uint64_t hi =
        pool == PoolKind::kSmall ? kMediumMinBytes : kLargeMinBytes;
    for (uint64_t size = lo; size < hi; ++size) {
      const uint32_t c = classes.ClassFor(size);
      ASSERT_LT(c, classes.count());
      ASSERT_GE(classes.Get(c).slot_bytes, size) << size;
      if (c > 0) {
        ASSERT_LT(classes.Get(c - 1).slot_bytes, size) << size;
      }
      // The exact size fits the handle table's 12-bit size delta.
      ASSERT_LT(classes.Get(c).slot_bytes - size, 4096u);
    }
  }
}

TEST(SizeClassesTest, SlotsAndBitmapFitInTheSpan) {
  SizeClasses small(PoolKind::kSmall, 64 << 10, /*bitmap_in_span=*/true);
  for (uint32_t i = 0; i < small.count(); ++i) {
    const SizeClass& c = small.Get(i);
    EXPECT_LE(uint64_t{c.slots} * c.slot_bytes + c.header_bytes, 64u << 10);
    EXPECT_GE(uint64_t{c.bitmap_words} * 64, c.slots);
    EXPECT_EQ(c.header_bytes, c.bitmap_words * 8);
    // No room left for one more slot.
    EXPECT_GT(
        uint64_t{c.slots + 1} * c.slot_bytes + (c.slots + 1 + 63) / 64 * 8,
        64u << 10);
  }
  EXPECT_LT(small.max_slots(), 1u << 14);
  SizeClasses medium(PoolKind::kMedium, 1 << 20, /*bitmap_in_span=*/false);
  EXPECT_EQ(medium.Get(medium.count() - 1).slots, 16u);
  EXPECT_EQ(medium.Get(0).slots, 1024u);
}

TEST(SizeClassesTest, BucketMultiplierIsAnExactDivision) {
  for (PoolKind pool : {PoolKind::kSmall, PoolKind::kMedium}) {
    SizeClasses classes(pool, pool == PoolKind::kSmall ? 64 << 10 : 1 << 20,
                        pool == PoolKind::kSmall);
    for (uint32_t i = 0; i < classes.count(); ++i) {
      const SizeClass& c = classes.Get(i);
      for (uint64_t live = 0; live < c.slots; ++live) {
        ASSERT_EQ((live * c.bucket_multiplier) >> 32, live * 8 / c.slots)
            << "slots " << c.slots << " live " << live;
      }
    }
  }
}

}  // namespace
}  // namespace poold::pools
