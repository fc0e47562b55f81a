// Tests of UnknownHandleLimiter: the burst, the refill rate, calls admitted
// at once, refunds, keys apart, the bound on tracked keys, the lock-free
// "nobody owes" check, and no limit at 0.
#include "server/unknown_handle_limiter.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

const absl::Time kStart = absl::FromUnixSeconds(1000);

// Names unknown handles for `key` at `now`, one call after the other, while
// admitted; returns how many were.
int Guess(UnknownHandleLimiter& limiter, const std::string& key, absl::Time now,
          int at_most = 100000) {
  int admitted = 0;
  while (admitted < at_most && limiter.Admit(key, now)) {
    limiter.RecordUnknown(key, now, /*admitted=*/true);
    ++admitted;
  }
  return admitted;
}

TEST(UnknownHandleLimiterTest, ABurstThenTheRate) {
  UnknownHandleLimiter limiter(/*per_second=*/10, /*burst=*/100, 16);
  EXPECT_EQ(Guess(limiter, "a", kStart), 100);
  EXPECT_FALSE(limiter.Admit("a", kStart));
  EXPECT_EQ(limiter.refusals(), 2u);  // the one in Guess, and this one
  // Half a second brings 5 tokens back, ten seconds all of them (no more).
  EXPECT_EQ(Guess(limiter, "a", kStart + absl::Milliseconds(500)), 5);
  EXPECT_EQ(Guess(limiter, "a", kStart + absl::Seconds(60)), 100);
  EXPECT_EQ(limiter.unknown_answers(), 205u);
}

TEST(UnknownHandleLimiterTest, CallsSentAtOnceCannotOutrunTheBudget) {
  UnknownHandleLimiter limiter(10, 100, 16);
  // 1000 calls admitted before any of them is answered: only the budget's.
  int admitted = 0;
  for (int i = 0; i < 1000; ++i) admitted += limiter.Admit("a", kStart);
  EXPECT_EQ(admitted, 100);
  for (int i = 0; i < admitted; ++i) limiter.RecordUnknown("a", kStart, true);
  EXPECT_FALSE(limiter.Admit("a", kStart + absl::Milliseconds(50)));
}

TEST(UnknownHandleLimiterTest, KnownHandlesGiveTheirTokenBack) {
  UnknownHandleLimiter limiter(10, 100, 16);
  for (int i = 0; i < 10000; ++i) {
    ASSERT_TRUE(limiter.Admit("a", kStart));
    limiter.Refund("a", kStart);
  }
  EXPECT_EQ(limiter.refusals(), 0u);
}

TEST(UnknownHandleLimiterTest, KeysHaveTheirOwnBudgets) {
  UnknownHandleLimiter limiter(10, 100, 16);
  EXPECT_EQ(Guess(limiter, "guesser", kStart), 100);
  EXPECT_FALSE(limiter.Admit("guesser", kStart));
  EXPECT_TRUE(limiter.Admit("honest", kStart));
}

TEST(UnknownHandleLimiterTest, TrackedKeysAreBoundedAndTheRestShareOne) {
  UnknownHandleLimiter limiter(10, 100, /*max_keys=*/4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(Guess(limiter, absl::StrCat("k", i), kStart), 100);
  }
  // Every tracked key still owes: newcomers share the overflow bucket.
  EXPECT_EQ(Guess(limiter, "new1", kStart, 60), 60);
  EXPECT_EQ(Guess(limiter, "new2", kStart), 40);
  EXPECT_FALSE(limiter.Admit("new3", kStart));
  // Once their budgets are whole again, tracked keys are forgotten and a
  // newcomer gets a bucket of its own.
  const absl::Time later = kStart + absl::Seconds(60);
  EXPECT_EQ(Guess(limiter, "new4", later), 100);
}

TEST(UnknownHandleLimiterTest, InDebtUntilEveryBudgetIsWholeAgain) {
  UnknownHandleLimiter limiter(10, 100, 4);
  EXPECT_FALSE(limiter.anyone_in_debt(kStart));
  // Unadmitted (fast-path) unknown handles take their tokens too.
  limiter.RecordUnknown("a", kStart, /*admitted=*/false);
  limiter.RecordUnknown("a", kStart, /*admitted=*/false);
  EXPECT_TRUE(limiter.anyone_in_debt(kStart));
  // Two tokens at 10 per second: whole after 0.2 s, even if "a" never
  // comes back.
  EXPECT_TRUE(limiter.anyone_in_debt(kStart + absl::Milliseconds(199)));
  EXPECT_FALSE(limiter.anyone_in_debt(kStart + absl::Milliseconds(200)));
}

TEST(UnknownHandleLimiterTest, ZeroMeansNoLimit) {
  UnknownHandleLimiter limiter(0, 0, 4);
  EXPECT_FALSE(limiter.enabled());
  EXPECT_FALSE(limiter.anyone_in_debt(kStart));
  EXPECT_EQ(Guess(limiter, "a", kStart, 5000), 5000);
  EXPECT_EQ(limiter.refusals(), 0u);
  EXPECT_EQ(limiter.unknown_answers(), 5000u);
}

TEST(UnknownHandleLimiterTest, TheClockIsMonotonic) {
  const absl::Time a = UnknownHandleLimiter::Now();
  const absl::Time b = UnknownHandleLimiter::Now();
  EXPECT_LE(a, b);
}

}  // namespace
}  // namespace poold
