// Tests of DefragSession: one defragmentation's start, slices, end, report
// and counters, whatever its origin.
#include "worker/defrag_session.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "worker/pools/pool_set.h"

namespace poold {
namespace {

using pools::DefragOrigin;
using pools::DefragStopReason;

// 200,000 blocks of 100 bytes with 9 in 10 freed: work for a defragmentation.
std::unique_ptr<pools::PoolSet> Fragmented(std::vector<uint64_t>* kept) {
  pools::PoolSetOptions options;
  options.handle_key = 3;
  auto pools = *pools::PoolSet::Create(options);
  std::vector<uint64_t> all;
  for (int i = 0; i < 200000; ++i) {
    all.push_back(
        pools->Allocate(100, std::string(100, static_cast<char>(i)))->handle);
  }
  for (size_t i = 0; i < all.size(); ++i) {
    if (i % 10 == 3) {
      kept->push_back(all[i]);
    } else {
      EXPECT_TRUE(pools->Free(all[i]).ok());
    }
  }
  return pools;
}

TEST(DefragSessionTest, RunsToTheEndAndCountsAnRpcRun) {
  std::vector<uint64_t> kept;
  auto engine = Fragmented(&kept);
  const uint64_t reclaimable = engine->reclaimable_bytes();
  ASSERT_GT(reclaimable, 0u);
  WorkerStats stats;
  DefragSession session(*engine, DefragOrigin::kRpc);
  ASSERT_TRUE(session.Begin({}).ok());
  EXPECT_TRUE(session.running());
  uint64_t moved = 0;
  while (true) {
    const pools::DefragProgress progress =
        session.Step(absl::Microseconds(100));
    moved += progress.bytes_moved;
    if (progress.done) break;
  }
  EXPECT_EQ(session.bytes_moved(), moved);
  int trims = 0;
  const pools::DefragReport report = session.End(
      DefragStopReason::kFinished,
      [&trims] {
        ++trims;
        return uint64_t{4096};
      },
      stats);
  EXPECT_FALSE(session.running());
  EXPECT_EQ(trims, 1);
  EXPECT_EQ(report.heap_released_bytes, 4096u);
  EXPECT_TRUE(report.complete);
  EXPECT_EQ(report.origin, DefragOrigin::kRpc);
  EXPECT_EQ(report.stop_reason, DefragStopReason::kFinished);
  EXPECT_EQ(report.bytes_moved, moved);
  EXPECT_EQ(report.bytes_reclaimed, reclaimable);
  EXPECT_EQ(session.bytes_reclaimed(), reclaimable);
  EXPECT_GT(report.rss_before_bytes, 0u);
  EXPECT_GT(report.rss_after_bytes, 0u);
  EXPECT_EQ(stats.defragmentations, 1u);
  EXPECT_EQ(stats.memory_limit_defragmentations, 0u);
  EXPECT_EQ(stats.total_bytes_reclaimed, reclaimable);
  for (size_t i = 0; i < kept.size(); ++i) {
    EXPECT_EQ(*engine->Read(kept[i], 0, 0),
              std::string(100, static_cast<char>(i * 10 + 3)));
  }
}

TEST(DefragSessionTest, StoppedEarlyCarriesItsReasonAndCountsAMemoryLimitRun) {
  std::vector<uint64_t> kept;
  auto engine = Fragmented(&kept);
  WorkerStats stats;
  DefragSession session(*engine, DefragOrigin::kMemoryLimit);
  ASSERT_TRUE(session.Begin({}).ok());
  const pools::DefragReport report = session.End(
      DefragStopReason::kNoneWaiting, [] { return uint64_t{0}; }, stats);
  EXPECT_FALSE(report.complete);
  EXPECT_EQ(report.origin, DefragOrigin::kMemoryLimit);
  EXPECT_EQ(report.stop_reason, DefragStopReason::kNoneWaiting);
  ASSERT_FALSE(report.pools.empty());
  EXPECT_EQ(report.pools[0].reason,
            "not started: no allocation waits for room any more");
  EXPECT_EQ(stats.defragmentations, 0u);
  EXPECT_EQ(stats.memory_limit_defragmentations, 1u);
  // The engine is free for the next session.
  DefragSession next(*engine, DefragOrigin::kRpc);
  ASSERT_TRUE(next.Begin({pools::PoolKind::kLarge}).ok());
  next.End(
      DefragStopReason::kShutdown, [] { return uint64_t{0}; }, stats);
}

TEST(DefragSessionTest, ASecondSessionCannotBeginWhileOneRuns) {
  std::vector<uint64_t> kept;
  auto engine = Fragmented(&kept);
  WorkerStats stats;
  DefragSession first(*engine, DefragOrigin::kRpc);
  ASSERT_TRUE(first.Begin({}).ok());
  DefragSession second(*engine, DefragOrigin::kMemoryLimit);
  EXPECT_EQ(second.Begin({}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(second.running());
  first.End(
      DefragStopReason::kCancelled, [] { return uint64_t{0}; }, stats);
  EXPECT_EQ(stats.defragmentations, 1u);
  EXPECT_EQ(stats.memory_limit_defragmentations, 0u);
}

TEST(DefragStopReasonTest, EveryReasonHasItsText) {
  EXPECT_EQ(pools::DefragStopReasonText(DefragStopReason::kFinished),
            "finished");
  EXPECT_EQ(pools::DefragStopReasonText(DefragStopReason::kDeadline),
            "deadline exceeded");
  EXPECT_EQ(pools::DefragStopReasonText(DefragStopReason::kCancelled),
            "cancelled by the client");
  EXPECT_EQ(pools::DefragStopReasonText(DefragStopReason::kShutdown),
            "server shutting down");
  EXPECT_EQ(pools::DefragOriginName(DefragOrigin::kRpc), "rpc");
  EXPECT_EQ(pools::DefragOriginName(DefragOrigin::kMemoryLimit),
            "memory limit");
}

}  // namespace
}  // namespace poold
