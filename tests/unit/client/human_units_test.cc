// Tests of the human-readable units.
#include "client/human_units.h"

#include <limits>

#include "gtest/gtest.h"

namespace poold::client {
namespace {

TEST(HumanBytesTest, BytesBelowOneKiB) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1), "1 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
}

TEST(HumanBytesTest, BinaryUnitsWithOneDecimal) {
  EXPECT_EQ(HumanBytes(1024), "1.0 KiB");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(12897485), "12.3 MiB");
  EXPECT_EQ(HumanBytes(uint64_t{2} << 30), "2.0 GiB");
  EXPECT_EQ(HumanBytes(uint64_t{5} << 40), "5.0 TiB");
}

TEST(HumanBytesTest, RoundingMovesToTheNextUnit) {
  EXPECT_EQ(HumanBytes((1 << 20) - 1), "1.0 MiB");
  EXPECT_EQ(HumanBytes(1023 * 1024), "1023.0 KiB");
}

TEST(HumanBytesTest, LargestValue) {
  EXPECT_EQ(HumanBytes(std::numeric_limits<uint64_t>::max()), "16.0 EiB");
}

TEST(PercentTest, OneDecimal) {
  EXPECT_EQ(Percent(0), "0.0%");
  EXPECT_EQ(Percent(0.25), "25.0%");
  EXPECT_EQ(Percent(0.9123), "91.2%");
  EXPECT_EQ(Percent(1), "100.0%");
}

TEST(PercentTest, NotANumber) {
  EXPECT_EQ(Percent(std::numeric_limits<double>::quiet_NaN()), "-");
  EXPECT_EQ(Percent(std::numeric_limits<double>::infinity()), "-");
}

TEST(HumanDurationTest, UnitsBySize) {
  EXPECT_EQ(HumanDuration(absl::ZeroDuration()), "0 s");
  EXPECT_EQ(HumanDuration(absl::Microseconds(850)), "850 us");
  EXPECT_EQ(HumanDuration(absl::Microseconds(12345)), "12.3 ms");
  EXPECT_EQ(HumanDuration(absl::Milliseconds(4560)), "4.56 s");
  EXPECT_EQ(HumanDuration(absl::Seconds(125)), "125.0 s");
  EXPECT_EQ(HumanDuration(-absl::Milliseconds(2)), "-2.0 ms");
  EXPECT_EQ(HumanDuration(absl::InfiniteDuration()), "inf");
}

TEST(HumanRateTest, PerSecond) {
  EXPECT_EQ(HumanRate(1000, absl::Milliseconds(500)), "2000/s");
  EXPECT_EQ(HumanRate(5, absl::ZeroDuration()), "-");
}

TEST(HumanTimeTest, UtcToTheMillisecondAndDashWhenUnset) {
  google::protobuf::Timestamp time;
  EXPECT_EQ(HumanTime(time), "-");
  time.set_seconds(1796457541);  // 2026-12-05 07:59:01 UTC
  time.set_nanos(123456789);
  EXPECT_EQ(HumanTime(time), "2026-12-05 07:59:01.123 UTC");
}

TEST(FromProtoDurationTest, SecondsAndNanos) {
  google::protobuf::Duration duration;
  duration.set_seconds(2);
  duration.set_nanos(500000000);
  EXPECT_EQ(FromProtoDuration(duration), absl::Milliseconds(2500));
}

}  // namespace
}  // namespace poold::client
