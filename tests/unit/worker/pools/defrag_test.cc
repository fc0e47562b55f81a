// Fragmentation and defragmentation of a whole PoolSet: the projection is
// exact, compaction packs memory to within 1.15 x live bytes (metadata
// included), and the bytes it reports as reclaimed really leave the process
// (checked against /proc/self/statm).
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "gtest/gtest.h"
#include "tests/unit/worker/pools/rss_checks.h"
#include "worker/pools/os_memory.h"
#include "worker/pools/pool_set.h"

namespace poold::pools {
namespace {

// Bytes of a block derived from its handle, to check contents after moves.
std::string Pattern(uint64_t handle, uint64_t size) {
  std::string s(size, '\0');
  for (uint64_t i = 0; i < size; ++i) {
    s[i] = static_cast<char>((handle >> ((i % 8) * 8)) + i);
  }
  return s;
}

struct Fragmented {
  std::unique_ptr<PoolSet> pools;
  std::vector<std::pair<uint64_t, uint64_t>> blocks;  // handle, size
};

// Fills `live_target` bytes with `before`-byte blocks, frees `free_fraction`
// of them at random, then allocates `after`-byte blocks until live bytes are
// back at the target (the RAMCloud W3 shape).
Fragmented MakeFragmented(uint64_t live_target, uint64_t before,
                          double free_fraction, uint64_t after) {
  Fragmented f;
  PoolSetOptions options;
  options.handle_key = 99;
  f.pools = *PoolSet::Create(options);
  absl::BitGen gen(std::seed_seq{7});
  const uint64_t count = live_target / before;
  f.blocks.reserve(count + live_target / after + 1);
  for (uint64_t i = 0; i < count; ++i) {
    auto block = f.pools->Allocate(before, "");
    EXPECT_TRUE(block.ok());
    EXPECT_TRUE(
        f.pools->Write(block->handle, 0, Pattern(block->handle, before)).ok());
    f.blocks.emplace_back(block->handle, before);
  }
  std::vector<std::pair<uint64_t, uint64_t>> kept;
  uint64_t live = 0;
  for (const auto& [handle, size] : f.blocks) {
    if (absl::Bernoulli(gen, free_fraction)) {
      EXPECT_TRUE(f.pools->Free(handle).ok());
    } else {
      kept.emplace_back(handle, size);
      live += size;
    }
  }
  f.blocks = std::move(kept);
  while (live + after <= live_target) {
    auto block = f.pools->Allocate(after, "");
    EXPECT_TRUE(block.ok());
    EXPECT_TRUE(
        f.pools->Write(block->handle, 0, Pattern(block->handle, after)).ok());
    f.blocks.emplace_back(block->handle, after);
    live += after;
  }
  return f;
}

void ExpectIntact(PoolSet& pools,
                  const std::vector<std::pair<uint64_t, uint64_t>>& blocks) {
  for (const auto& [handle, size] : blocks) {
    auto data = pools.Read(handle, 0, 0);
    ASSERT_TRUE(data.ok()) << data.status();
    ASSERT_EQ(*data, Pattern(handle, size)) << "handle " << handle;
  }
}

TEST(DefragTest, CompactsFragmentedSmallPoolExactlyAsProjected) {
  Fragmented f = MakeFragmented(64 << 20, 100, 0.9, 130);
  PoolSet& pools = *f.pools;
  const PoolAnalysis projected = pools.Analyze(PoolKind::kSmall);
  const PoolSetStats before = pools.Stats(false);
  ASSERT_GT(projected.bytes_to_reclaim, 0u);
  ASSERT_GT(projected.blocks_to_move, 0u);
  EXPECT_EQ(projected.bytes_to_reclaim,
            before.pools[PoolIndex(PoolKind::kSmall)].stats.reclaimable_bytes);

  const uint64_t rss_before = OsMemory::ProcessRssBytes();
  ASSERT_TRUE(pools.BeginDefrag({}).ok());
  while (!pools.DefragStep(absl::Milliseconds(1)).done) {
  }
  const DefragReport report = pools.EndDefrag(DefragStopReason::kFinished);
  const uint64_t rss_after = OsMemory::ProcessRssBytes();

  ASSERT_TRUE(report.complete);
  ASSERT_EQ(report.pools.size(), 3u);
  const PoolDefragReport& small = report.pools[0];
  EXPECT_EQ(small.pool, PoolKind::kSmall);
  EXPECT_EQ(small.outcome, DefragOutcome::kCleaned);
  EXPECT_EQ(small.bytes_reclaimed, projected.bytes_to_reclaim);
  EXPECT_EQ(small.blocks_moved, projected.blocks_to_move);
  EXPECT_EQ(small.bytes_moved, projected.bytes_to_move);
  EXPECT_EQ(small.spans_released, projected.spans_to_release);
  EXPECT_EQ(small.after.reclaimable_bytes, 0u);
  EXPECT_EQ(report.pools[1].outcome, DefragOutcome::kSkipped);
  EXPECT_EQ(report.pools[2].outcome, DefragOutcome::kSkipped);
  EXPECT_EQ(report.bytes_reclaimed, small.bytes_reclaimed);
  EXPECT_GT(report.slices, 1u);

  // Resident within 1.15 x live, metadata included.
  const PoolSetStats after = pools.Stats(false);
  std::printf(
      "live %lu B, resident %lu -> %lu B (%.3f x live), reclaimed %lu B, "
      "RSS drop %ld B, moved %lu blocks in %lu slices (longest %s)\n",
      after.total.live_bytes, before.total.resident_bytes,
      after.total.resident_bytes,
      static_cast<double>(after.total.resident_bytes) /
          static_cast<double>(after.total.live_bytes),
      report.bytes_reclaimed, static_cast<long>(rss_before - rss_after),
      report.blocks_moved, report.slices,
      absl::FormatDuration(report.max_slice).c_str());
  EXPECT_LE(static_cast<double>(after.total.resident_bytes),
            1.15 * static_cast<double>(after.total.live_bytes))
      << "resident " << after.total.resident_bytes << " live "
      << after.total.live_bytes;
  EXPECT_EQ(after.total.resident_bytes,
            before.total.resident_bytes - report.bytes_reclaimed);

  // The reclaimed bytes really left the process.
  if (kRssIsMeaningful) {
    ASSERT_GT(rss_before, rss_after);
    const double drop = static_cast<double>(rss_before - rss_after);
    EXPECT_NEAR(drop, static_cast<double>(report.bytes_reclaimed),
                0.05 * static_cast<double>(report.bytes_reclaimed))
        << "RSS " << rss_before << " -> " << rss_after;
  }

  ExpectIntact(pools, f.blocks);
}

TEST(DefragTest, MediumAndLargePoolsReturnTheirMemory) {
  PoolSetOptions options;
  options.handle_key = 5;
  auto pools = *PoolSet::Create(options);
  absl::BitGen gen(std::seed_seq{3});
  std::vector<std::pair<uint64_t, uint64_t>> blocks;
  for (int i = 0; i < 6000; ++i) {
    const uint64_t size = absl::Uniform<uint64_t>(gen, 5000, 15000);
    auto block = pools->Allocate(size, "");
    ASSERT_TRUE(block.ok());
    ASSERT_TRUE(
        pools->Write(block->handle, 0, Pattern(block->handle, size)).ok());
    blocks.emplace_back(block->handle, size);
  }
  for (int i = 0; i < 200; ++i) {
    const uint64_t size = absl::Uniform<uint64_t>(gen, 64 << 10, 1 << 20);
    auto block = pools->Allocate(size, Pattern(i, size));
    ASSERT_TRUE(block.ok());
    blocks.emplace_back(block->handle, size);
    ASSERT_TRUE(
        pools->Write(block->handle, 0, Pattern(block->handle, size)).ok());
  }
  std::vector<std::pair<uint64_t, uint64_t>> kept;
  for (const auto& block : blocks) {
    if (absl::Bernoulli(gen, 0.8)) {
      ASSERT_TRUE(pools->Free(block.first).ok());
    } else {
      kept.push_back(block);
    }
  }
  const PoolAnalysis medium = pools->Analyze(PoolKind::kMedium);
  const PoolAnalysis large = pools->Analyze(PoolKind::kLarge);
  ASSERT_GT(medium.bytes_to_reclaim, 0u);
  ASSERT_GT(large.bytes_to_reclaim, 0u);
  const uint64_t rss_before = OsMemory::ProcessRssBytes();
  ASSERT_TRUE(pools->BeginDefrag({PoolKind::kLarge, PoolKind::kMedium}).ok());
  while (!pools->DefragStep(absl::Milliseconds(1)).done) {
  }
  const DefragReport report = pools->EndDefrag(DefragStopReason::kFinished);
  const uint64_t rss_after = OsMemory::ProcessRssBytes();
  ASSERT_EQ(report.pools.size(), 2u);
  EXPECT_EQ(report.pools[0].pool, PoolKind::kMedium);  // pool order
  EXPECT_EQ(report.pools[0].bytes_reclaimed, medium.bytes_to_reclaim);
  EXPECT_EQ(report.pools[0].blocks_moved, medium.blocks_to_move);
  EXPECT_EQ(report.pools[1].pool, PoolKind::kLarge);
  EXPECT_EQ(report.pools[1].bytes_reclaimed, large.bytes_to_reclaim);
  EXPECT_EQ(report.pools[1].after.unpurged_bytes, 0u);
  if (kRssIsMeaningful) {
    const double drop = static_cast<double>(rss_before - rss_after);
    EXPECT_NEAR(drop, static_cast<double>(report.bytes_reclaimed),
                0.05 * static_cast<double>(report.bytes_reclaimed));
  }
  ExpectIntact(*pools, kept);
}

TEST(DefragTest, StoppedEarlyIsPartialConsistentAndSaysWhy) {
  Fragmented f = MakeFragmented(16 << 20, 100, 0.9, 130);
  PoolSet& pools = *f.pools;
  ASSERT_TRUE(pools.BeginDefrag({}).ok());
  EXPECT_EQ(pools.BeginDefrag({}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(pools.DefragStep(absl::Microseconds(50)).done);
  // Operations between slices keep working.
  auto extra = pools.Allocate(100, "between slices");
  ASSERT_TRUE(extra.ok());
  f.blocks.emplace_back(extra->handle, 100);
  ASSERT_TRUE(pools.Write(extra->handle, 0, Pattern(extra->handle, 100)).ok());
  const DefragReport report = pools.EndDefrag(DefragStopReason::kDeadline);
  EXPECT_FALSE(report.complete);
  EXPECT_EQ(report.stop_reason, DefragStopReason::kDeadline);
  ASSERT_EQ(report.pools.size(), 3u);
  EXPECT_EQ(report.pools[0].outcome, DefragOutcome::kPartial);
  EXPECT_EQ(report.pools[0].reason, "deadline exceeded");
  EXPECT_EQ(report.pools[1].outcome, DefragOutcome::kSkipped);
  EXPECT_EQ(report.pools[1].reason, "not started: deadline exceeded");
  EXPECT_EQ(report.pools_partial, 1u);
  ExpectIntact(pools, f.blocks);
  // A later full run finishes the job.
  const PoolAnalysis projected = pools.Analyze(PoolKind::kSmall);
  ASSERT_TRUE(pools.BeginDefrag({PoolKind::kSmall}).ok());
  while (!pools.DefragStep(absl::Milliseconds(1)).done) {
  }
  const DefragReport second = pools.EndDefrag(DefragStopReason::kFinished);
  EXPECT_TRUE(second.complete);
  EXPECT_EQ(second.pools[0].bytes_reclaimed, projected.bytes_to_reclaim);
  EXPECT_EQ(pools.Stats(false).total.reclaimable_bytes, 0u);
  ExpectIntact(pools, f.blocks);
}

TEST(DefragTest, EachSliceSaysWhatItMovedAndReclaimed) {
  Fragmented f = MakeFragmented(16 << 20, 100, 0.9, 131);
  PoolSet& pools = *f.pools;
  const PoolAnalysis projected = pools.Analyze(PoolKind::kSmall);
  ASSERT_GT(projected.bytes_to_move, 0u);
  const uint64_t resident_before = pools.resident_bytes();
  ASSERT_TRUE(pools.BeginDefrag({PoolKind::kSmall}).ok());
  uint64_t moved = 0;
  uint64_t reclaimed = 0;
  uint64_t committed = 0;
  int slices_that_moved = 0;
  while (true) {
    const DefragProgress progress = pools.DefragStep(absl::Microseconds(200));
    moved += progress.bytes_moved;
    reclaimed += progress.bytes_reclaimed;
    committed += progress.bytes_committed;
    EXPECT_TRUE(progress.bytes_reclaimed == 0 || progress.bytes_committed == 0);
    if (progress.bytes_moved > 0) ++slices_that_moved;
    if (progress.done) break;
  }
  // A finished run says kFinished whatever reason the caller gives.
  const DefragReport report = pools.EndDefrag(DefragStopReason::kCancelled);
  EXPECT_TRUE(report.complete);
  EXPECT_EQ(report.stop_reason, DefragStopReason::kFinished);
  EXPECT_EQ(moved, report.bytes_moved);
  EXPECT_EQ(moved, projected.bytes_to_move);
  EXPECT_GT(slices_that_moved, 1);
  // Nothing else ran between the slices, so their net drops add up to the
  // pools' whole drop.
  EXPECT_EQ(reclaimed - committed, resident_before - pools.resident_bytes());
  EXPECT_EQ(reclaimed - committed, report.bytes_reclaimed);
  ExpectIntact(pools, f.blocks);
}

TEST(DefragTest, StoppedBeforeTheFirstSliceNeverSaysFinished) {
  Fragmented f = MakeFragmented(1 << 20, 100, 0.9, 132);
  PoolSet& pools = *f.pools;
  ASSERT_TRUE(pools.BeginDefrag({}).ok());
  const DefragReport report = pools.EndDefrag(DefragStopReason::kFinished);
  EXPECT_FALSE(report.complete);
  EXPECT_EQ(report.stop_reason, DefragStopReason::kDeadline);
  EXPECT_EQ(report.pools_skipped, 3u);
  ExpectIntact(pools, f.blocks);
}

// Runs a whole defragmentation of every pool in 1 ms slices.
DefragReport DefragmentAll(PoolSet& pools) {
  EXPECT_TRUE(pools.BeginDefrag({}).ok());
  while (!pools.DefragStep(absl::Milliseconds(1)).done) {
  }
  return pools.EndDefrag(DefragStopReason::kFinished);
}

TEST(DefragTest, TailBlocksMoveIntoTheLowestSlotsAndTheRestIsReturned) {
  PoolSetOptions options;
  options.handle_key = 5;
  auto pools = *PoolSet::Create(options);
  // One span of 100-byte blocks (655 slots) with three survivors spread
  // over its 16 pages.
  std::vector<uint64_t> handles;
  for (int i = 0; i < 600; ++i) {
    auto block = pools->Allocate(100, "");
    ASSERT_TRUE(block.ok());
    ASSERT_TRUE(
        pools->Write(block->handle, 0, Pattern(block->handle, 100)).ok());
    handles.push_back(block->handle);
  }
  std::vector<std::pair<uint64_t, uint64_t>> kept;
  for (int i = 0; i < 600; ++i) {
    if (i == 3 || i == 100 || i == 500) {
      kept.emplace_back(handles[i], 100);
    } else {
      ASSERT_TRUE(pools->Free(handles[i]).ok());
    }
  }
  const char* slot0 = pools->Read(kept[0].first, 0, 0)->data() - 3 * 100;
  const PoolAnalysis projected = pools->Analyze(PoolKind::kSmall);
  // The two blocks above slot 3 move down; one page is left.
  EXPECT_EQ(projected.blocks_to_move, 2u);
  EXPECT_EQ(projected.spans_to_release, 0u);
  const DefragReport report = DefragmentAll(*pools);
  ASSERT_EQ(report.pools[0].pool, PoolKind::kSmall);
  EXPECT_EQ(report.pools[0].outcome, DefragOutcome::kCleaned);
  EXPECT_EQ(report.pools[0].blocks_moved, 2u);
  EXPECT_EQ(report.pools[0].bytes_reclaimed, projected.bytes_to_reclaim);
  // 15 of the span's 16 pages, and the handle table's second page.
  EXPECT_EQ(report.pools[0].bytes_reclaimed, (15 + 1) * 4096u);
  ExpectIntact(*pools, kept);
  // Slot 3 stayed; the others took slots 0 and 1.
  std::vector<const char*> addresses;
  for (const auto& [handle, size] : kept) {
    addresses.push_back(pools->Read(handle, 0, 0)->data());
  }
  EXPECT_EQ(addresses[0], slot0 + 300);
  EXPECT_TRUE(addresses[1] == slot0 || addresses[1] == slot0 + 100);
  EXPECT_TRUE(addresses[2] == slot0 || addresses[2] == slot0 + 100);
  EXPECT_NE(addresses[1], addresses[2]);
}

// The bound: after a full defragmentation a slab pool holds at most
// its live bytes x 1.05, plus one page per size class in use, plus its
// metadata, however few blocks each class has.
TEST(DefragTest, NoPerClassFloor) {
  PoolSetOptions options;
  options.handle_key = 11;
  auto pools = *PoolSet::Create(options);
  absl::BitGen gen(std::seed_seq{3});
  std::vector<uint64_t> handles;
  // Every small and medium size, from one block to a few spans each.
  for (uint64_t size = 60; size < 65536; size += size < 1024 ? 4 : 97) {
    const uint64_t count = absl::Uniform<uint64_t>(gen, 1, (1 << 20) / size);
    for (uint64_t i = 0; i < count; ++i) {
      handles.push_back(pools->Allocate(size, "x")->handle);
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> kept;
  for (uint64_t handle : handles) {
    if (absl::Bernoulli(gen, 0.85)) {
      ASSERT_TRUE(pools->Free(handle).ok());
    } else {
      const uint64_t size = pools->Read(handle, 0, 0)->size();
      ASSERT_TRUE(pools->Write(handle, 0, Pattern(handle, size)).ok());
      kept.emplace_back(handle, size);
    }
  }
  const PoolAnalysis small = pools->Analyze(PoolKind::kSmall);
  const PoolAnalysis medium = pools->Analyze(PoolKind::kMedium);
  const DefragReport report = DefragmentAll(*pools);
  EXPECT_EQ(report.pools[0].bytes_reclaimed, small.bytes_to_reclaim);
  EXPECT_EQ(report.pools[0].blocks_moved, small.blocks_to_move);
  EXPECT_EQ(report.pools[1].bytes_reclaimed, medium.bytes_to_reclaim);
  EXPECT_EQ(report.pools[1].blocks_moved, medium.blocks_to_move);
  ExpectIntact(*pools, kept);
  const PoolSetStats stats = pools->Stats(/*include_classes=*/true);
  for (PoolKind pool : {PoolKind::kSmall, PoolKind::kMedium}) {
    const PoolStats& p = stats.pools[PoolIndex(pool)];
    const uint64_t bound = p.stats.live_bytes * 105 / 100 +
                           p.classes.size() * 4096 + p.stats.metadata_bytes;
    EXPECT_LE(p.stats.resident_bytes, bound)
        << PoolName(pool) << ": " << p.classes.size() << " classes, live "
        << p.stats.live_bytes << ", metadata " << p.stats.metadata_bytes;
    EXPECT_GT(p.classes.size(), 100u);
    EXPECT_EQ(p.stats.reclaimable_bytes, 0u);
  }
}

TEST(DefragTest, NothingToGainIsSkipped) {
  PoolSetOptions options;
  auto pools = *PoolSet::Create(options);
  ASSERT_TRUE(pools->Allocate(100, "x").ok());
  ASSERT_TRUE(pools->BeginDefrag({}).ok());
  EXPECT_TRUE(pools->DefragStep(absl::Milliseconds(1)).done);
  const DefragReport report = pools->EndDefrag(DefragStopReason::kFinished);
  EXPECT_TRUE(report.complete);
  EXPECT_EQ(report.pools_skipped, 3u);
  EXPECT_EQ(report.pools[0].reason, "nothing to reclaim");
  EXPECT_EQ(report.bytes_reclaimed, 0u);
}

}  // namespace
}  // namespace poold::pools
