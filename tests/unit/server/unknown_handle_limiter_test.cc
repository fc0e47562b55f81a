// Tests of UnknownHandleLimiter: the burst, the refill rate, keys apart,
// the bound on tracked keys, and no limit at 0.
#include "server/unknown_handle_limiter.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1000);

// Records unknown handles for `key` at `now` while it is admitted; returns
// how many were.
int Drain(UnknownHandleLimiter& limiter, const std::string& key, absl::Time now,
          int at_most = 100000) {
  int admitted = 0;
  while (admitted < at_most && limiter.Admit(key, now)) {
    limiter.RecordUnknown(key, now);
    ++admitted;
  }
  return admitted;
}

TEST(UnknownHandleLimiterTest, ABurstThenTheRate) {
  UnknownHandleLimiter limiter(/*per_second=*/10, /*burst=*/100, 16);
  EXPECT_EQ(Drain(limiter, "a", kStart), 100);
  EXPECT_FALSE(limiter.Admit("a", kStart));
  EXPECT_EQ(limiter.refusals(), 2u);  // the one in Drain, and this one
  // Half a second brings 5 tokens back, ten seconds all of them (no more).
  EXPECT_EQ(Drain(limiter, "a", kStart + absl::Milliseconds(500)), 5);
  EXPECT_EQ(Drain(limiter, "a", kStart + absl::Seconds(60)), 100);
  EXPECT_EQ(limiter.unknown_answers(), 205u);
}

TEST(UnknownHandleLimiterTest, KnownHandlesCostNothing) {
  UnknownHandleLimiter limiter(10, 100, 16);
  for (int i = 0; i < 10000; ++i) ASSERT_TRUE(limiter.Admit("a", kStart));
  EXPECT_EQ(limiter.refusals(), 0u);
}

TEST(UnknownHandleLimiterTest, KeysHaveTheirOwnBudgets) {
  UnknownHandleLimiter limiter(10, 100, 16);
  EXPECT_EQ(Drain(limiter, "guesser", kStart), 100);
  EXPECT_FALSE(limiter.Admit("guesser", kStart));
  EXPECT_TRUE(limiter.Admit("honest", kStart));
}

TEST(UnknownHandleLimiterTest, TrackedKeysAreBoundedAndTheRestShareOne) {
  UnknownHandleLimiter limiter(10, 100, /*max_keys=*/4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(Drain(limiter, absl::StrCat("k", i), kStart), 100);
  }
  // Every tracked key still owes: newcomers share the overflow bucket.
  EXPECT_EQ(Drain(limiter, "new1", kStart, 60), 60);
  EXPECT_EQ(Drain(limiter, "new2", kStart), 40);
  EXPECT_FALSE(limiter.Admit("new3", kStart));
  // Once their budgets are whole again, tracked keys are forgotten and a
  // newcomer gets a bucket of its own.
  const absl::Time later = kStart + absl::Seconds(60);
  EXPECT_EQ(Drain(limiter, "new4", later), 100);
}

TEST(UnknownHandleLimiterTest, InDebtWhileSomeKeyUsedPartOfItsBurst) {
  UnknownHandleLimiter limiter(10, 100, 4);
  EXPECT_FALSE(limiter.anyone_in_debt());
  limiter.RecordUnknown("a", kStart);
  limiter.RecordUnknown("b", kStart);
  EXPECT_TRUE(limiter.anyone_in_debt());
  // 0.1 s gives "a" its token back; "b" is still in debt until it comes.
  EXPECT_TRUE(limiter.Admit("a", kStart + absl::Milliseconds(100)));
  EXPECT_TRUE(limiter.anyone_in_debt());
  EXPECT_TRUE(limiter.Admit("b", kStart + absl::Milliseconds(100)));
  EXPECT_FALSE(limiter.anyone_in_debt());
  // Forgotten keys that were whole again leave no debt behind either.
  UnknownHandleLimiter small(10, 100, 1);
  small.RecordUnknown("a", kStart);
  small.RecordUnknown("b", kStart + absl::Seconds(1));  // evicts "a"
  EXPECT_TRUE(small.anyone_in_debt());
  EXPECT_TRUE(small.Admit("b", kStart + absl::Seconds(2)));
  EXPECT_FALSE(small.anyone_in_debt());
}

TEST(UnknownHandleLimiterTest, ZeroMeansNoLimit) {
  UnknownHandleLimiter limiter(0, 0, 4);
  EXPECT_FALSE(limiter.enabled());
  EXPECT_EQ(Drain(limiter, "a", kStart, 5000), 5000);
  EXPECT_EQ(limiter.refusals(), 0u);
  EXPECT_EQ(limiter.unknown_answers(), 5000u);
}

}  // namespace
}  // namespace poold
