// Tests of SizeDistribution: parsing and the range of samples.
#include "client/size_distribution.h"

#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold::client {
namespace {

using ::testing::HasSubstr;

TEST(SizeDistributionTest, SingleSize) {
  absl::StatusOr<SizeDistribution> sizes = SizeDistribution::Parse("128");
  ASSERT_TRUE(sizes.ok()) << sizes.status();
  std::mt19937_64 random(1);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sizes->Sample(random), 128u);
  EXPECT_EQ(sizes->max_size(), 128u);
}

TEST(SizeDistributionTest, RangeIsUniformAndInclusive) {
  absl::StatusOr<SizeDistribution> sizes = SizeDistribution::Parse("100:103");
  ASSERT_TRUE(sizes.ok()) << sizes.status();
  std::mt19937_64 random(7);
  std::set<uint64_t> seen;
  for (int i = 0; i < 1000; ++i) {
    const uint64_t size = sizes->Sample(random);
    EXPECT_GE(size, 100u);
    EXPECT_LE(size, 103u);
    seen.insert(size);
  }
  EXPECT_EQ(seen.size(), 4u);
}

TEST(SizeDistributionTest, MixOfRangesWithUnits) {
  absl::StatusOr<SizeDistribution> sizes =
      SizeDistribution::Parse("100:150, 4KiB:8KiB,1MiB");
  ASSERT_TRUE(sizes.ok()) << sizes.status();
  ASSERT_EQ(sizes->ranges().size(), 3u);
  EXPECT_EQ(sizes->ranges()[1].min, 4096u);
  EXPECT_EQ(sizes->ranges()[1].max, 8192u);
  EXPECT_EQ(sizes->max_size(), 1u << 20);
  // Each range is drawn alike: the mean of its midpoints.
  EXPECT_DOUBLE_EQ(sizes->mean_size(), (125.0 + 6144.0 + 1048576.0) / 3.0);
  std::mt19937_64 random(3);
  int small = 0, medium = 0, large = 0;
  for (int i = 0; i < 3000; ++i) {
    const uint64_t size = sizes->Sample(random);
    if (size >= 100 && size <= 150) {
      ++small;
    } else if (size >= 4096 && size <= 8192) {
      ++medium;
    } else {
      EXPECT_EQ(size, 1u << 20);
      ++large;
    }
  }
  // Each range about a third of the time.
  for (int count : {small, medium, large}) {
    EXPECT_GT(count, 800);
    EXPECT_LT(count, 1200);
  }
}

TEST(SizeDistributionTest, SameSeedSameSizes) {
  SizeDistribution sizes = SizeDistribution::Parse("1:1000000").value();
  std::mt19937_64 a(42), b(42);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(sizes.Sample(a), sizes.Sample(b));
}

TEST(SizeDistributionTest, RejectsBadSpecs) {
  for (const char* bad : {"", ",", "0", "0:10", "150:100", "1:2:3", "abc",
                          "10:", ":10", "5:7XB"}) {
    absl::StatusOr<SizeDistribution> sizes = SizeDistribution::Parse(bad);
    EXPECT_EQ(sizes.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_THAT(SizeDistribution::Parse("150:100").status().message(),
              HasSubstr("minimum exceeds the maximum"));
}

}  // namespace
}  // namespace poold::client
