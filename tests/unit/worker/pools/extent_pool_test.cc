// Tests of ExtentPool: page-granular extents, coalescing of free neighbours,
// reuse of resident free extents, purging, unmapping empty chunks, and
// blocks bigger than a chunk.
#include "worker/pools/extent_pool.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/worker/pools/rss_checks.h"
#include "worker/pools/fault_injecting_os.h"
#include "worker/pools/os_memory.h"

namespace poold::pools {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * 1024;

ExtentPoolOptions Options(uint64_t retained) {
  ExtentPoolOptions options;
  options.chunk_bytes = 16 * kMiB;
  options.retained_bytes = retained;
  options.max_chunks = 64;
  options.max_extents = 1 << 16;
  options.max_handles = 1 << 16;
  options.handle_key = SipKey{9, 10};
  return options;
}

TEST(ExtentPoolTest, BlocksArePageRoundedAndZeroed) {
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(Options(64 * kMiB)).ok());
  auto block = pool.Allocate(65537, "abc", UINT64_MAX);
  ASSERT_TRUE(block.ok());
  EXPECT_TRUE(block->fresh_pages);
  EXPECT_EQ(block->slot_bytes, 69632u);
  EXPECT_EQ(block->pool, PoolKind::kLarge);
  BlockRef ref = *pool.Lookup(block->handle);
  EXPECT_EQ(ref.size, 65537u);
  EXPECT_EQ(std::string(ref.data, 3), "abc");
  EXPECT_EQ(std::string(ref.data + 3, 65534), std::string(65534, '\0'));
  // A reused (dirty) extent is zeroed too.
  std::memset(ref.data, 'x', ref.size);
  ASSERT_TRUE(pool.Free(block->handle).ok());
  auto again = pool.Allocate(65537, "", UINT64_MAX);
  EXPECT_FALSE(again->fresh_pages);
  ref = *pool.Lookup(again->handle);
  EXPECT_EQ(std::string(ref.data, ref.size), std::string(65537, '\0'));
}

TEST(ExtentPoolTest, BytesWrittenNextAreLeftAndTheRestZeroed) {
  // A reused (dirty) extent: the `written_next` bytes after the data keep
  // what was there (the caller writes them next); the rest is zeroed.
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(Options(64 * kMiB)).ok());
  auto block = pool.Allocate(65537, "", UINT64_MAX);
  ASSERT_TRUE(block.ok());
  BlockRef ref = *pool.Lookup(block->handle);
  std::memset(ref.data, 'x', ref.size);
  ASSERT_TRUE(pool.Free(block->handle).ok());
  auto again = pool.Allocate(65537, "ab", UINT64_MAX, /*written_next=*/100);
  ASSERT_TRUE(again.ok());
  ref = *pool.Lookup(again->handle);
  EXPECT_EQ(std::string(ref.data, 2), "ab");
  EXPECT_EQ(std::string(ref.data + 2, 100), std::string(100, 'x'));
  EXPECT_EQ(std::string(ref.data + 102, 65537 - 102),
            std::string(65537 - 102, '\0'));
}

TEST(ExtentPoolTest, FreeNeighboursCoalesce) {
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(Options(64 * kMiB)).ok());
  std::vector<uint64_t> h;
  for (int i = 0; i < 4; ++i) {
    h.push_back(pool.Allocate(256 * kKiB, "", UINT64_MAX)->handle);
  }
  const uint64_t free_extents = pool.Stats().stats.free_extents;  // the tail
  ASSERT_TRUE(pool.Free(h[1]).ok());
  ASSERT_TRUE(pool.Free(h[2]).ok());
  // h[1] and h[2] merged into one dirty extent of 512 KiB.
  PoolStats stats = pool.Stats();
  EXPECT_EQ(stats.stats.free_extents, free_extents + 1);
  EXPECT_EQ(stats.stats.unpurged_bytes, 512 * kKiB);
  // Resident free memory is reused first, without growing.
  const uint64_t resident = pool.resident_bytes();
  auto big = pool.Allocate(512 * kKiB, "", UINT64_MAX);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(pool.resident_bytes(), resident);
  EXPECT_EQ(pool.Stats().stats.unpurged_bytes, 0u);
}

TEST(ExtentPoolTest, PurgeReturnsFreeMemoryAndUnmapsEmptyChunks) {
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(Options(64 * kMiB)).ok());
  std::vector<uint64_t> h;
  for (int i = 0; i < 40; ++i) {  // about three 16 MiB chunks
    h.push_back(
        pool.Allocate(kMiB, std::string(kMiB, 'x'), UINT64_MAX)->handle);
  }
  EXPECT_EQ(pool.Stats().stats.spans, 3u);
  const uint64_t keep = h[0];
  for (size_t i = 1; i < h.size(); ++i) ASSERT_TRUE(pool.Free(h[i]).ok());
  PoolStats stats = pool.Stats();
  EXPECT_EQ(stats.stats.unpurged_bytes, 39 * kMiB);
  EXPECT_EQ(stats.stats.empty_spans, 2u);
  const uint64_t reclaimable = stats.stats.reclaimable_bytes;
  const uint64_t resident = pool.resident_bytes();
  const uint64_t rss = OsMemory::ProcessRssBytes();
  PurgeProgress progress;
  do {
    progress = pool.PurgeStep(absl::Now() + absl::Milliseconds(1));
  } while (!progress.done);
  stats = pool.Stats();
  EXPECT_EQ(stats.stats.unpurged_bytes, 0u);
  EXPECT_EQ(stats.stats.spans, 1u);
  EXPECT_EQ(resident - pool.resident_bytes(), reclaimable);
  EXPECT_EQ(stats.stats.reclaimable_bytes, 0u);
  if (kRssIsMeaningful) {
    const double drop = static_cast<double>(rss - OsMemory::ProcessRssBytes());
    EXPECT_NEAR(drop, static_cast<double>(reclaimable),
                0.05 * static_cast<double>(reclaimable));
  }
  EXPECT_EQ(std::string(pool.Lookup(keep)->data, 4), "xxxx");
}

TEST(ExtentPoolTest, BeyondTheRetainedAmountFreesArePurgedAtOnce) {
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(Options(0)).ok());
  auto a = pool.Allocate(4 * kMiB, std::string(4 * kMiB, 'a'), UINT64_MAX);
  auto b = pool.Allocate(4 * kMiB, "", UINT64_MAX);
  ASSERT_TRUE(pool.Free(a->handle).ok());
  EXPECT_EQ(pool.Stats().stats.unpurged_bytes, 0u);
  ASSERT_TRUE(pool.Free(b->handle).ok());
  // The chunk held nothing else: unmapped.
  EXPECT_EQ(pool.Stats().stats.spans, 0u);
}

TEST(ExtentPoolTest, BlockLargerThanAChunkGetsItsOwn) {
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(Options(0)).ok());
  auto big = pool.Allocate(40 * kMiB, "end?", UINT64_MAX);
  ASSERT_TRUE(big.ok());
  EXPECT_EQ(pool.Lookup(big->handle)->size, 40 * kMiB);
  EXPECT_EQ(pool.Stats().stats.spans, 1u);
  ASSERT_TRUE(pool.Free(big->handle).ok());
  while (pool.purge_due()) pool.PurgeDue(absl::InfiniteFuture());
  EXPECT_EQ(pool.Stats().stats.spans, 0u);
}

// A madvise of 64 MiB holds the caller for milliseconds: freeing a large
// block purges one piece at once, and PurgeDue the rest a piece per call
// when its deadline has passed.
TEST(ExtentPoolTest, ALargeFreeIsPurgedAPieceAtATime) {
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(Options(0)).ok());
  auto keep = pool.Allocate(kMiB, "keep", UINT64_MAX);  // the chunk stays
  auto big = pool.Allocate(12 * kMiB, std::string(12 * kMiB, 'b'), UINT64_MAX);
  ASSERT_TRUE(big.ok());
  ASSERT_TRUE(pool.Free(big->handle).ok());
  constexpr uint64_t kPiece = ExtentPool::kPurgePieceBytes;
  EXPECT_EQ(pool.Stats().stats.unpurged_bytes, 12 * kMiB - kPiece);
  EXPECT_EQ(pool.chunk_bytes(), pool.ChunkBytesResidentPerOs());
  EXPECT_TRUE(pool.purge_due());
  // A deadline already past: one piece per call. (Splitting an extent
  // writes a boundary in the chunk's page map, which may commit a page of
  // it: the resident drop is a piece less that.)
  EXPECT_GE(pool.PurgeDue(absl::InfinitePast()), kPiece - 4096);
  EXPECT_EQ(pool.Stats().stats.unpurged_bytes, 12 * kMiB - 2 * kPiece);
  EXPECT_TRUE(pool.purge_due());
  pool.PurgeDue(absl::InfinitePast());
  EXPECT_FALSE(pool.purge_due());
  EXPECT_EQ(pool.Stats().stats.unpurged_bytes, 0u);
  EXPECT_EQ(pool.chunk_bytes(), pool.ChunkBytesResidentPerOs());
  EXPECT_EQ(std::string(pool.Lookup(keep->handle)->data, 4), "keep");
}

// An allocation stopped midway (its pages committed and written only so
// far) is freed with the pages never written counted as returned, as they
// are: the count stays what the OS reports.
TEST(ExtentPoolTest, ABlockFreedUnfinishedCountsOnlyItsWrittenPages) {
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(Options(64 * kMiB)).ok());
  auto keep = pool.Allocate(kMiB, "keep", UINT64_MAX);  // the chunk stays
  ASSERT_TRUE(keep.ok());
  const uint64_t size = 6 * kMiB + 100;
  auto block = pool.Allocate(size, "", UINT64_MAX, /*written_next=*/size);
  ASSERT_TRUE(block.ok());
  ASSERT_TRUE(block->fresh_pages);
  // 1 MiB and 10 bytes written, as a long copy would, before it stopped.
  const uint64_t written = kMiB + 10;
  ASSERT_TRUE(pool.Commit(block->handle, 0, written).ok());
  std::memset(pool.Lookup(block->handle)->data, 'w', written);
  // The block is counted whole from the start; the OS has what was written.
  const uint64_t before = pool.ChunkBytesResidentPerOs();
  EXPECT_EQ(pool.chunk_bytes(), before + 5 * kMiB);
  ASSERT_TRUE(pool.FreeUnfinished(block->handle, written).ok());
  EXPECT_EQ(pool.chunk_bytes(), pool.ChunkBytesResidentPerOs());
  EXPECT_EQ(pool.ChunkBytesResidentPerOs(), before);
  // The written pages (rounded up) are a freed block's, reused first.
  EXPECT_EQ(pool.Stats().stats.unpurged_bytes, kMiB + 4096);
  EXPECT_EQ(pool.Lookup(block->handle).status().code(),
            absl::StatusCode::kNotFound);
  // What follows them is zero pages again, whole with the chunk's free
  // space: a block that spans both is zeroed.
  auto next = pool.Allocate(8 * kMiB, "", UINT64_MAX);
  ASSERT_TRUE(next.ok());
  BlockRef ref = *pool.Lookup(next->handle);
  EXPECT_EQ(std::string(ref.data, ref.size), std::string(8 * kMiB, '\0'));
  EXPECT_EQ(pool.chunk_bytes(), pool.ChunkBytesResidentPerOs());
  // Nothing written of a block with a chunk of its own: the chunk goes
  // back whole.
  const uint64_t chunks = pool.Stats().stats.spans;
  auto unwritten = pool.Allocate(17 * kMiB, "", UINT64_MAX, 17 * kMiB);
  ASSERT_TRUE(unwritten.ok());
  ASSERT_TRUE(unwritten->fresh_pages);
  EXPECT_EQ(pool.Stats().stats.spans, chunks + 1);
  ASSERT_TRUE(pool.FreeUnfinished(unwritten->handle, 0).ok());
  EXPECT_EQ(pool.Stats().stats.spans, chunks);
  EXPECT_EQ(pool.chunk_bytes(), pool.ChunkBytesResidentPerOs());
  EXPECT_EQ(std::string(pool.Lookup(keep->handle)->data, 4), "keep");
}

// A purge the OS refuses leaves the extent whole (not split into pieces
// that could no longer hold a large block), and purging waits for the
// next PurgeStale.
TEST(ExtentPoolTest, ARefusedPieceLeavesTheExtentWhole) {
  FaultInjectingOs os;
  ExtentPoolOptions options = Options(0);
  options.os = &os;
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(options).ok());
  auto keep = pool.Allocate(kMiB, "keep", UINT64_MAX);
  auto big = pool.Allocate(12 * kMiB, "big", UINT64_MAX);
  ASSERT_TRUE(big.ok());
  const PoolStats before = pool.Stats();
  os.FailAt(OsCall::kPurge, 1, EIO, /*repeat=*/true);
  ASSERT_TRUE(pool.Free(big->handle).ok());  // the free stands
  PoolStats stats = pool.Stats();
  EXPECT_EQ(stats.stats.unpurged_bytes, 12 * kMiB);
  EXPECT_EQ(stats.stats.free_extents, before.stats.free_extents + 1);
  EXPECT_FALSE(pool.purge_due());  // blocked until the next PurgeStale
  // Which tries again (the extent is stale by then), and is refused again.
  EXPECT_EQ(pool.PurgeStale(absl::Now() + absl::Hours(1), absl::Seconds(1)),
            0u);
  EXPECT_FALSE(pool.purge_due());
  EXPECT_EQ(pool.Stats().stats.free_extents, before.stats.free_extents + 1);
  EXPECT_EQ(pool.Stats().stats.unpurged_bytes, 12 * kMiB);
  // The same 12 MiB serve a new block of that size: no new chunk.
  auto again = pool.Allocate(12 * kMiB, "again", UINT64_MAX);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(pool.Stats().stats.spans, before.stats.spans);
  EXPECT_EQ(pool.chunk_bytes(), pool.ChunkBytesResidentPerOs());
  os.Heal();
  EXPECT_EQ(std::string(pool.Lookup(keep->handle)->data, 4), "keep");
}

// Stale free extents past what one call's time allows are left for
// PurgeDue, a piece at a time.
TEST(ExtentPoolTest, StaleExtentsLeftForLackOfTimeArePurgedByPurgeDue) {
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(Options(64 * kMiB)).ok());
  auto keep = pool.Allocate(kMiB, "keep", UINT64_MAX);
  auto big = pool.Allocate(12 * kMiB, std::string(12 * kMiB, 'b'), UINT64_MAX);
  ASSERT_TRUE(pool.Free(big->handle).ok());
  EXPECT_EQ(pool.Stats().stats.unpurged_bytes, 12 * kMiB);  // retained
  EXPECT_FALSE(pool.purge_due());
  const absl::Time later = absl::Now() + absl::Seconds(10);
  EXPECT_GE(pool.PurgeStale(later, absl::Seconds(1), absl::InfinitePast()),
            ExtentPool::kPurgePieceBytes - 4096);
  EXPECT_EQ(pool.Stats().stats.unpurged_bytes,
            12 * kMiB - ExtentPool::kPurgePieceBytes);
  EXPECT_TRUE(pool.purge_due());
  while (pool.purge_due()) pool.PurgeDue(absl::InfinitePast());
  EXPECT_EQ(pool.Stats().stats.unpurged_bytes, 0u);
  EXPECT_EQ(pool.chunk_bytes(), pool.ChunkBytesResidentPerOs());
  EXPECT_EQ(std::string(pool.Lookup(keep->handle)->data, 4), "keep");
}

TEST(ExtentPoolTest, HeadroomRefusesGrowth) {
  ExtentPool pool;
  ASSERT_TRUE(pool.Init(Options(64 * kMiB)).ok());
  auto refused = pool.Allocate(kMiB, "", kMiB / 2);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool.Stats().stats.blocks, 0u);
  auto ok = pool.Allocate(kMiB, "", UINT64_MAX);
  ASSERT_TRUE(pool.Free(ok->handle).ok());
  // Reusing the resident free extent needs no headroom.
  EXPECT_TRUE(pool.Allocate(kMiB, "", 0).ok());
}

}  // namespace
}  // namespace poold::pools
