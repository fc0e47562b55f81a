// Tests of PayloadBudget: takes what fits, refuses what does not (but always
// lets one payload through when nothing is held), gives back exactly, and
// never passes its limit under concurrent takers.
#include "server/payload_budget.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace poold {
namespace {

TEST(PayloadBudgetTest, TakesWhatFitsAndRefusesTheRest) {
  PayloadBudget budget(100);
  EXPECT_TRUE(budget.TryTake(60));
  EXPECT_TRUE(budget.TryTake(40));
  EXPECT_EQ(budget.held(), 100u);
  EXPECT_FALSE(budget.TryTake(1));
  EXPECT_EQ(budget.held(), 100u);
  budget.Give(40);
  EXPECT_FALSE(budget.TryTake(41));
  EXPECT_TRUE(budget.TryTake(40));
  budget.Give(100);
  EXPECT_EQ(budget.held(), 0u);
}

TEST(PayloadBudgetTest, OnePayloadOfAnySizePassesWhenNothingIsHeld) {
  PayloadBudget budget(100);
  EXPECT_TRUE(budget.TryTake(1000));
  EXPECT_FALSE(budget.TryTake(1));
  budget.Give(1000);
  EXPECT_TRUE(budget.TryTake(1));
  EXPECT_FALSE(budget.TryTake(1000));
}

TEST(PayloadBudgetTest, ZeroMeansNoLimit) {
  PayloadBudget budget(0);
  EXPECT_TRUE(budget.TryTake(uint64_t{1} << 40));
  EXPECT_TRUE(budget.TryTake(uint64_t{1} << 40));
  EXPECT_EQ(budget.held(), uint64_t{2} << 40);
}

TEST(PayloadBudgetTest, ConcurrentTakersNeverPassTheLimit) {
  constexpr uint64_t kLimit = 1000;
  PayloadBudget budget(kLimit);
  ASSERT_TRUE(budget.TryTake(1));  // so that no take passes as the only one
  std::atomic<bool> over{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100000; ++i) {
        if (budget.TryTake(7)) {
          if (budget.held() > kLimit) over.store(true);
          budget.Give(7);
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_FALSE(over.load());
  EXPECT_EQ(budget.held(), 1u);
}

}  // namespace
}  // namespace poold
