// Tests of PoolSet: routing by size, input validation, range checks, handle
// checks and the memory limit. Every rejected request must change nothing.
#include "worker/pools/pool_set.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/random/random.h"
#include "gtest/gtest.h"
#include "worker/pools/handle_table.h"

namespace poold::pools {
namespace {

using absl::StatusCode;

std::unique_ptr<PoolSet> MakePools(PoolSetOptions options = {}) {
  if (options.handle_key == 0) options.handle_key = 1234;
  return *PoolSet::Create(options);
}

TEST(PoolSetTest, RoutesBySizeAndZeroesBlocks) {
  auto pools = MakePools();
  struct Case {
    uint64_t size;
    PoolKind pool;
    uint64_t slot;
  };
  for (const Case& c :
       {Case{1, PoolKind::kSmall, 8}, Case{100, PoolKind::kSmall, 100},
        Case{1023, PoolKind::kSmall, 1024}, Case{1024, PoolKind::kMedium, 1024},
        Case{1025, PoolKind::kMedium, 1056},
        Case{65535, PoolKind::kMedium, 65536},
        Case{65536, PoolKind::kLarge, 65536},
        Case{65537, PoolKind::kLarge, 69632}}) {
    const std::string data = std::string("ab").substr(0, c.size);
    auto block = pools->Allocate(c.size, data);
    ASSERT_TRUE(block.ok()) << block.status();
    EXPECT_EQ(block->pool, c.pool) << c.size;
    EXPECT_EQ(block->size, c.size);
    EXPECT_EQ(block->slot_bytes, c.slot) << c.size;
    auto read = pools->Read(block->handle, 0, 0);
    ASSERT_TRUE(read.ok());
    std::string expected(c.size, '\0');
    expected.replace(0, data.size(), data);
    EXPECT_EQ(*read, expected);
  }
}

TEST(PoolSetTest, SizeZeroTakesTheDataLength) {
  auto pools = MakePools();
  auto block = pools->Allocate(0, "hello");
  ASSERT_TRUE(block.ok());
  EXPECT_EQ(block->size, 5u);
  EXPECT_EQ(*pools->Read(block->handle, 0, 0), "hello");
}

TEST(PoolSetTest, RecycledMemoryIsZeroed) {
  auto pools = MakePools();
  for (uint64_t size : {uint64_t{100}, uint64_t{5000}, uint64_t{100000}}) {
    auto dirty = pools->Allocate(size, std::string(size, 'x'));
    ASSERT_TRUE(pools->Free(dirty->handle).ok());
    auto fresh = pools->Allocate(size, "");
    ASSERT_TRUE(fresh.ok());
    EXPECT_EQ(*pools->Read(fresh->handle, 0, 0), std::string(size, '\0'));
  }
}

TEST(PoolSetTest, BadAllocationsAreInvalidAndChangeNothing) {
  PoolSetOptions options;
  options.max_block_bytes = 1 << 20;
  auto pools = MakePools(options);
  const PoolSetStats before = pools->Stats(false);
  EXPECT_EQ(pools->Allocate(0, "").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(pools->Allocate((1 << 20) + 1, "").status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      pools->Allocate(std::numeric_limits<uint64_t>::max(), "").status().code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(pools->Allocate(3, "four").status().code(),
            StatusCode::kInvalidArgument);
  // Bytes to be written after the data that pass the end of the block.
  EXPECT_EQ(pools->Allocate(1 << 19, "ab", (1 << 19) - 1).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(pools->Allocate(1 << 19, "ab", UINT64_MAX).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(pools->Allocate(1 << 20, "").ok());  // the maximum itself
  const PoolSetStats after = pools->Stats(false);
  EXPECT_EQ(after.total.blocks, before.total.blocks + 1);
}

// Prefetch is a hint that batches give with handles they have not checked
// yet: any value must be safe, and nothing may change.
TEST(PoolSetTest, PrefetchTakesAnyHandleAndChangesNothing) {
  auto pools = MakePools();
  std::vector<uint64_t> live;
  for (uint64_t size : {100, 5000, 100000}) {
    auto block = pools->Allocate(size, "abc");
    ASSERT_TRUE(block.ok()) << block.status();
    live.push_back(block->handle);
  }
  const uint64_t freed = pools->Allocate(200, "gone")->handle;
  ASSERT_TRUE(pools->Free(freed).ok());
  const PoolSetStats before = pools->Stats(true);

  std::vector<uint64_t> handles = live;
  constexpr uint64_t kIndexBits = (uint64_t{1} << 30) - 1;
  for (uint64_t h : {live[0], live[1], freed}) {
    handles.push_back(h | kIndexBits);            // far past the table
    handles.push_back((h & ~kIndexBits) | 1000);  // a page's spare bytes
    handles.push_back(h ^ (uint64_t{1} << 40));   // a forged tag
    handles.push_back(h + 1);                     // the next entry
  }
  handles.push_back(freed);
  handles.push_back(0);
  handles.push_back(std::numeric_limits<uint64_t>::max());
  for (uint64_t h : handles) {
    pools->Prefetch(h, SlabPool::PrefetchStep::kEntry);
    pools->Prefetch(h, SlabPool::PrefetchStep::kBlock);
  }

  const PoolSetStats after = pools->Stats(true);
  EXPECT_EQ(after.total.blocks, before.total.blocks);
  EXPECT_EQ(after.total.live_bytes, before.total.live_bytes);
  EXPECT_EQ(after.total.resident_bytes, before.total.resident_bytes);
  for (uint64_t h : live) {
    auto bytes = pools->Read(h, 0, 3);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(*bytes, "abc");
  }
  EXPECT_EQ(pools->Read(freed, 0, 0).status().code(), StatusCode::kNotFound);
}

TEST(PoolSetTest, RangesAreCheckedWithoutOverflow) {
  auto pools = MakePools();
  for (uint64_t size : {uint64_t{10}, uint64_t{2000}, uint64_t{70000}}) {
    auto block = pools->Allocate(size, "0123456789");
    ASSERT_TRUE(block.ok());
    const uint64_t h = block->handle;
    const uint64_t max = std::numeric_limits<uint64_t>::max();
    EXPECT_EQ(*pools->Read(h, 2, 3), "234");
    EXPECT_EQ(pools->Read(h, size, 0)->size(), 0u);  // at the end: empty
    EXPECT_EQ(pools->Read(h, 5, 0)->size(), size - 5);
    EXPECT_EQ(pools->Read(h, size + 1, 0).status().code(),
              StatusCode::kOutOfRange);
    EXPECT_EQ(pools->Read(h, 1, size).status().code(), StatusCode::kOutOfRange);
    EXPECT_EQ(pools->Read(h, 1, max).status().code(), StatusCode::kOutOfRange);
    EXPECT_EQ(pools->Read(h, max, 1).status().code(), StatusCode::kOutOfRange);
    EXPECT_EQ(pools->Read(h, max, max).status().code(),
              StatusCode::kOutOfRange);
    EXPECT_EQ(pools->Write(h, size, "x").code(), StatusCode::kOutOfRange);
    EXPECT_EQ(pools->Write(h, max, "x").code(), StatusCode::kOutOfRange);
    EXPECT_EQ(pools->Write(h, size - 1, "xy").code(), StatusCode::kOutOfRange);
    EXPECT_TRUE(pools->Write(h, size, "").ok());
    EXPECT_TRUE(pools->Write(h, size - 1, "z").ok());
    EXPECT_EQ(*pools->Read(h, 0, 9), "012345678");  // failed writes: no-ops
    EXPECT_EQ(*pools->Read(h, size - 1, 1), "z");
  }
}

TEST(PoolSetTest, UnknownFreedAndForgedHandlesAreNotFound) {
  auto pools = MakePools();
  auto keep = pools->Allocate(100, "keep");
  auto gone = pools->Allocate(100, "gone");
  auto large = pools->Allocate(100000, "large");
  ASSERT_TRUE(keep.ok() && gone.ok() && large.ok());
  ASSERT_TRUE(pools->Free(gone->handle).ok());
  std::vector<uint64_t> bad = {0,
                               1,
                               gone->handle,
                               keep->handle ^ 1,
                               keep->handle ^ (uint64_t{1} << 40),
                               large->handle + 1,
                               ~uint64_t{0},
                               uint64_t{3} << 30};  // pool bits = 3
  absl::BitGen gen;
  for (int i = 0; i < 1000; ++i) bad.push_back(absl::Uniform<uint64_t>(gen));
  for (uint64_t h : bad) {
    if (h == keep->handle || h == large->handle) continue;
    EXPECT_EQ(pools->Read(h, 0, 0).status().code(), StatusCode::kNotFound) << h;
    EXPECT_EQ(pools->Write(h, 0, "x").code(), StatusCode::kNotFound) << h;
    EXPECT_EQ(pools->Free(h).code(), StatusCode::kNotFound) << h;
  }
  EXPECT_EQ(pools->Free(gone->handle).code(), StatusCode::kNotFound);  // double
  EXPECT_EQ(*pools->Read(keep->handle, 0, 4), "keep");
  EXPECT_EQ(*pools->Read(large->handle, 0, 5), "large");
  EXPECT_EQ(pools->Stats(false).total.blocks, 2u);
}

TEST(PoolSetTest, HandlesOfAnotherProcessAreRejected) {
  PoolSetOptions a_options;
  a_options.handle_key = 1;
  PoolSetOptions b_options;
  b_options.handle_key = 2;
  auto a = MakePools(a_options);
  auto b = MakePools(b_options);
  std::vector<uint64_t> handles;
  for (int i = 0; i < 1000; ++i) {
    handles.push_back(a->Allocate(100, "")->handle);
    ASSERT_TRUE(b->Allocate(100, "").ok());
  }
  int accepted = 0;
  for (uint64_t h : handles) accepted += b->Read(h, 0, 0).ok();
  EXPECT_LE(accepted, 2);
}

TEST(PoolSetTest, MemoryLimitRefusesUntilADefragmentationMakesRoom) {
  PoolSetOptions options;
  options.memory_limit_bytes = 32 << 20;
  options.small_retained_bytes = 0;
  auto pools = MakePools(options);
  std::vector<uint64_t> handles;
  absl::Status status;
  while (true) {
    auto block = pools->Allocate(100, "x");
    if (!block.ok()) {
      status = block.status();
      break;
    }
    handles.push_back(block->handle);
  }
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(status.message().find("memory limit"), std::string::npos);
  EXPECT_LE(pools->resident_bytes(), options.memory_limit_bytes);
  EXPECT_GT(handles.size(), 200000u);
  EXPECT_EQ(pools->reclaimable_bytes(), 0u);  // full spans: nothing to gain
  // Large blocks are refused too, and nothing changes.
  const uint64_t blocks = pools->Stats(false).total.blocks;
  EXPECT_EQ(pools->Allocate(1 << 20, "").status().code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(pools->Stats(false).total.blocks, blocks);

  // Free every other block: spans stay, half empty. Blocks of another class
  // need spans, which the limit refuses: Allocate itself never compacts.
  std::vector<uint64_t> kept;
  for (size_t i = 0; i < handles.size(); ++i) {
    if (i % 2 == 0) {
      ASSERT_TRUE(pools->Free(handles[i]).ok());
    } else {
      kept.push_back(handles[i]);
    }
  }
  const uint64_t resident = pools->resident_bytes();
  EXPECT_EQ(pools->Allocate(200, "y").status().code(),
            StatusCode::kResourceExhausted);
  EXPECT_EQ(pools->resident_bytes(), resident);
  const uint64_t reclaimable = pools->reclaimable_bytes();
  EXPECT_GT(reclaimable, resident / 3);

  // A defragmentation (in slices) returns exactly that much; then 200-byte
  // blocks for 40% of the bytes freed fit.
  ASSERT_TRUE(pools->BeginDefrag({}).ok());
  while (!pools->DefragStep(absl::Milliseconds(1)).done) {
  }
  const DefragReport report = pools->EndDefrag(DefragStopReason::kFinished);
  EXPECT_EQ(report.bytes_reclaimed, reclaimable);
  EXPECT_EQ(pools->reclaimable_bytes(), 0u);
  std::vector<uint64_t> more;
  for (size_t i = 0; i < handles.size() / 5; ++i) {
    auto block = pools->Allocate(200, "y");  // another class: needs spans
    ASSERT_TRUE(block.ok()) << i << ": " << block.status();
    more.push_back(block->handle);
  }
  EXPECT_LE(pools->resident_bytes(), options.memory_limit_bytes);
  for (uint64_t h : kept) ASSERT_EQ(*pools->Read(h, 0, 1), "x");
  for (uint64_t h : more) ASSERT_EQ(*pools->Read(h, 0, 1), "y");
}

TEST(PoolSetTest, EmptySpansServeOtherClassesWithoutGrowing) {
  PoolSetOptions options;
  options.small_retained_bytes = 64 << 20;
  auto pools = MakePools(options);
  std::vector<uint64_t> handles;
  for (int i = 0; i < 100000; ++i) {
    handles.push_back(pools->Allocate(100, "")->handle);
  }
  for (uint64_t h : handles) ASSERT_TRUE(pools->Free(h).ok());
  const PoolSetStats freed = pools->Stats(false);
  const FragmentationStats& small = freed.pools[0].stats;
  EXPECT_GT(small.empty_spans, 100u);
  EXPECT_EQ(small.spans, 0u);
  // Every cached span and every handle-table page (all 100,000 handles are
  // free) could go back.
  constexpr uint64_t kHandlePages =
      (100000 + HandleTable::kEntriesPerPage - 1) /
      HandleTable::kEntriesPerPage;
  EXPECT_EQ(
      small.reclaimable_bytes,
      small.empty_spans * (64 << 10) + kHandlePages * HandleTable::kPageBytes);
  const uint64_t resident = pools->resident_bytes();
  // 200-byte blocks fit in the cached spans: resident does not grow.
  for (int i = 0; i < 50000; ++i) ASSERT_TRUE(pools->Allocate(200, "").ok());
  EXPECT_LE(pools->resident_bytes(), resident);
}

// While a defragmentation runs, the large pool's free memory is its to
// return (counted in its report), not PurgeLargeDue's.
TEST(PoolSetTest, NoLargePurgeBetweenTheSlicesOfADefragmentation) {
  PoolSetOptions options;
  options.large_retained_bytes = 0;
  auto pools = MakePools(options);
  std::vector<uint64_t> handles;
  for (int i = 0; i < 3; ++i) {
    handles.push_back(pools->Allocate(16 << 20, "")->handle);
  }
  for (uint64_t h : handles) ASSERT_TRUE(pools->Free(h).ok());
  EXPECT_TRUE(pools->large_purge_due());
  const uint64_t resident = pools->resident_bytes();
  ASSERT_TRUE(pools->BeginDefrag({PoolKind::kLarge}).ok());
  EXPECT_FALSE(pools->large_purge_due());
  while (!pools->DefragStep(absl::Milliseconds(1)).done) {
    EXPECT_FALSE(pools->large_purge_due());
  }
  const DefragReport report = pools->EndDefrag(DefragStopReason::kFinished);
  EXPECT_EQ(report.bytes_reclaimed, resident - pools->resident_bytes());
  EXPECT_FALSE(pools->large_purge_due());  // nothing left to purge
}

TEST(PoolSetTest, CachedMemoryGoesBackToTheOsAfterTheDecay) {
  PoolSetOptions options;
  options.cache_decay = absl::Seconds(1);
  auto pools = MakePools(options);
  std::vector<uint64_t> handles;
  for (int i = 0; i < 50000; ++i) {
    handles.push_back(pools->Allocate(100, "")->handle);
  }
  for (int i = 0; i < 200; ++i) {
    handles.push_back(pools->Allocate(5000, "")->handle);
    handles.push_back(pools->Allocate(100000, "")->handle);
  }
  for (uint64_t h : handles) ASSERT_TRUE(pools->Free(h).ok());
  const PoolSetStats cached = pools->Stats(false);
  EXPECT_GT(cached.pools[0].stats.empty_spans, 0u);
  EXPECT_GT(cached.pools[1].stats.empty_spans, 0u);
  EXPECT_GT(cached.pools[2].stats.unpurged_bytes, 0u);
  // Too recent: kept.
  EXPECT_EQ(pools->ReleaseStaleCaches(absl::Now()), 0u);
  // A decay later: all of it goes back.
  const uint64_t resident = pools->resident_bytes();
  const uint64_t released =
      pools->ReleaseStaleCaches(absl::Now() + absl::Seconds(2));
  EXPECT_GT(released, 0u);
  EXPECT_EQ(pools->resident_bytes(), resident - released);
  const PoolSetStats after = pools->Stats(false);
  EXPECT_EQ(after.pools[0].stats.empty_spans, 0u);
  EXPECT_EQ(after.pools[1].stats.empty_spans, 0u);
  EXPECT_EQ(after.pools[2].stats.unpurged_bytes, 0u);
}

TEST(PoolSetTest, EmptiedSpansBeyondTheRetainedAmountGoBackToTheOs) {
  PoolSetOptions options;
  options.small_retained_bytes = 0;
  auto pools = MakePools(options);
  const uint64_t empty = pools->resident_bytes();
  std::vector<uint64_t> handles;
  for (int i = 0; i < 100000; ++i) {
    handles.push_back(pools->Allocate(100, "")->handle);
  }
  EXPECT_GT(pools->resident_bytes(), empty + 100000 * 100);
  for (uint64_t h : handles) ASSERT_TRUE(pools->Free(h).ok());
  const FragmentationStats small = pools->Stats(false).pools[0].stats;
  EXPECT_EQ(small.empty_spans, 0u);
  EXPECT_EQ(small.spans, 0u);
  // Only metadata is left: span records and the (now empty) handle table,
  // whose pages a defragmentation returns.
  EXPECT_LT(small.resident_bytes, 2u << 20);
}

}  // namespace
}  // namespace poold::pools
