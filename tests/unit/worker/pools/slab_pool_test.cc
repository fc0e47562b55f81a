// Tests of SlabPool's policies: fullest span first, the free-span cache
// shared by all classes, purging beyond the retained amount, unmapping empty
// chunks, and counters that match the blocks held.
#include "worker/pools/slab_pool.h"

#include <algorithm>
#include <vector>

#include "gtest/gtest.h"
#include "tests/unit/worker/pools/rss_checks.h"
#include "worker/pools/os_memory.h"

namespace poold::pools {
namespace {

constexpr uint64_t kSpan = 64 << 10;

SlabPoolOptions SmallOptions(uint64_t retained) {
  SlabPoolOptions options;
  options.pool = PoolKind::kSmall;
  options.span_bytes = kSpan;
  options.spans_per_chunk = 16;
  options.max_spans = 1 << 12;
  options.retained_bytes = retained;
  options.max_handles = 1 << 20;
  options.handle_key = SipKey{3, 4};
  return options;
}

uintptr_t Address(SlabPool& pool, uint64_t handle) {
  return reinterpret_cast<uintptr_t>(pool.Lookup(handle)->data);
}

TEST(SlabPoolTest, AllocatesFromTheFullestSpan) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(SmallOptions(1 << 20)).ok());
  const uint32_t slots = pool.classes().Get(pool.classes().ClassFor(100)).slots;
  // Three full spans.
  std::vector<uint64_t> handles;
  for (uint32_t i = 0; i < 3 * slots; ++i) {
    handles.push_back(pool.Allocate(100, "", UINT64_MAX)->handle);
  }
  // The first block of each span is in its slot 0.
  const uintptr_t a = Address(pool, handles[0]);
  const uintptr_t b = Address(pool, handles[slots]);
  const uintptr_t c = Address(pool, handles[2 * slots]);
  auto in = [&](uint64_t handle, uintptr_t span) {
    const uintptr_t addr = Address(pool, handle);
    return addr >= span && addr < span + uint64_t{slots} * 100;
  };
  // Span a keeps 1/4, span b 7/8 (fuller), span c 1/2.
  for (uint32_t i = 0; i < slots; ++i) {
    if (i % 4 != 0) {
      ASSERT_TRUE(pool.Free(handles[i]).ok());
    }
    if (i % 8 == 0) {
      ASSERT_TRUE(pool.Free(handles[slots + i]).ok());
    }
    if (i % 2 == 0) {
      ASSERT_TRUE(pool.Free(handles[2 * slots + i]).ok());
    }
  }
  // New blocks fill span b first, then c, then a.
  const uint32_t free_in_b = (slots + 7) / 8;
  for (uint32_t i = 0; i < free_in_b; ++i) {
    EXPECT_TRUE(in(pool.Allocate(100, "", UINT64_MAX)->handle, b));
  }
  EXPECT_TRUE(in(pool.Allocate(100, "", UINT64_MAX)->handle, c));
  EXPECT_FALSE(in(pool.Allocate(100, "", UINT64_MAX)->handle, a));
  const PoolStats stats = pool.Stats(true);
  ASSERT_EQ(stats.classes.size(), 1u);
  EXPECT_EQ(stats.classes[0].slot_bytes, 100u);
  EXPECT_EQ(stats.stats.spans, 3u);
  EXPECT_EQ(stats.stats.partial_spans, 2u);  // a and c
}

TEST(SlabPoolTest, EmptySpansAreCachedForAnyClassThenPurged) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(SmallOptions(4 * kSpan)).ok());
  std::vector<uint64_t> handles;
  // 10 full spans of 100-byte slots.
  const uint32_t per_span =
      pool.classes().Get(pool.classes().ClassFor(100)).slots;
  for (uint32_t i = 0; i < 10 * per_span; ++i) {
    handles.push_back(pool.Allocate(100, "", UINT64_MAX)->handle);
  }
  const PoolStats full = pool.Stats(false);
  for (uint64_t h : handles) ASSERT_TRUE(pool.Free(h).ok());
  const PoolStats empty = pool.Stats(false);
  EXPECT_EQ(empty.stats.spans, 0u);
  EXPECT_EQ(empty.stats.empty_spans, 4u);  // the retained amount
  EXPECT_EQ(empty.stats.resident_bytes,
            full.stats.resident_bytes - (full.stats.spans - 4) * kSpan);
  // A different class takes the cached spans without growing.
  const uint64_t resident = pool.resident_bytes();
  const uint32_t slots = pool.classes().Get(pool.classes().ClassFor(500)).slots;
  for (uint32_t i = 0; i < 4 * slots; ++i) {
    ASSERT_TRUE(pool.Allocate(500, "", UINT64_MAX).ok());
  }
  EXPECT_EQ(pool.resident_bytes(), resident);
  EXPECT_EQ(pool.Stats(false).stats.empty_spans, 0u);
}

TEST(SlabPoolTest, ChunksWithNothingHeldAreUnmapped) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(SmallOptions(0)).ok());
  const uint64_t before = pool.resident_bytes();
  std::vector<uint64_t> handles;
  // 40 spans: three chunks of 16 spans.
  for (int i = 0; i < 40 * 630; ++i) {
    handles.push_back(pool.Allocate(100, "", UINT64_MAX)->handle);
  }
  char* first = pool.Lookup(handles[0]).value().data;
  for (uint64_t h : handles) ASSERT_TRUE(pool.Free(h).ok());
  // Only metadata stays: spans and their chunks went back to the OS.
  EXPECT_EQ(pool.Stats(false).stats.spans, 0u);
  EXPECT_LT(pool.resident_bytes(), before + (1 << 20));
  // The first chunk's address range is no longer mapped.
  EXPECT_EQ(OsMemory::ResidentBytesIn(
                reinterpret_cast<char*>(reinterpret_cast<uintptr_t>(first) &
                                        ~uintptr_t{4095}),
                4096),
            0u);
}

TEST(SlabPoolTest, HeadroomRefusesGrowthAndChangesNothing) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(SmallOptions(0)).ok());
  auto first = pool.Allocate(100, "a", UINT64_MAX);
  ASSERT_TRUE(first.ok());
  const PoolStats before = pool.Stats(false);
  // Room in the current span: no growth needed.
  EXPECT_TRUE(pool.Allocate(100, "b", 0).ok());
  // A new class needs a span: refused with no headroom.
  auto refused = pool.Allocate(500, "c", 0);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  const PoolStats after = pool.Stats(false);
  EXPECT_EQ(after.stats.blocks, before.stats.blocks + 1);
  EXPECT_EQ(after.stats.spans, before.stats.spans);
  EXPECT_EQ(after.stats.resident_bytes, before.stats.resident_bytes);
}

TEST(SlabPoolTest, SpanBytesAreWhatTheOsHasResident) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(SmallOptions(2 * kSpan)).ok());
  std::vector<uint64_t> handles;
  // Every class, a few blocks to a few spans each: partly committed spans.
  for (uint64_t size = 1; size < 1024; size += 7) {
    for (uint64_t i = 0; i < 65536 / size / (size % 3 + 1); ++i) {
      handles.push_back(pool.Allocate(size, "x", UINT64_MAX)->handle);
    }
  }
  EXPECT_EQ(pool.span_bytes(), pool.SpanBytesResidentPerOs());
  for (size_t i = 0; i < handles.size(); ++i) {
    if (i % 3 != 0) {
      ASSERT_TRUE(pool.Free(handles[i]).ok());
    }
  }
  EXPECT_EQ(pool.span_bytes(), pool.SpanBytesResidentPerOs());
  pool.PurgeCaches();
  EXPECT_EQ(pool.span_bytes(), pool.SpanBytesResidentPerOs());
}

TEST(SlabPoolTest, SpansCommitOnlyWhatTheirSlotsUse) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(SmallOptions(0)).ok());
  // One 100-byte block: its span commits one page, not 64 KiB.
  ASSERT_TRUE(pool.Allocate(100, "a", UINT64_MAX).ok());
  EXPECT_EQ(pool.span_bytes(), 4096u);
  EXPECT_EQ(pool.Stats(false).stats.free_bytes,
            (4096 - 88) / 100 * 100 - 100);  // the page's other slots
  // Filling the span grows it in doubling steps: a few calls, not one per
  // page.
  const uint32_t slots = pool.classes().Get(pool.classes().ClassFor(100)).slots;
  uint64_t last = pool.span_bytes();
  int steps = 0;
  for (uint32_t i = 1; i < slots; ++i) {
    ASSERT_TRUE(pool.Allocate(100, "", UINT64_MAX).ok());
    if (pool.span_bytes() != last) {
      EXPECT_GE(
          pool.span_bytes() - last,
          std::min<uint64_t>(std::max<uint64_t>(SlabPool::kGrowBytes, last),
                             kSpan - last));
      last = pool.span_bytes();
      ++steps;
    }
  }
  EXPECT_EQ(pool.span_bytes(), kSpan);
  EXPECT_LE(steps, 4);
  EXPECT_EQ(pool.span_bytes(), pool.SpanBytesResidentPerOs());
}

TEST(SlabPoolTest, ResidentMatchesTheOs) {
  if (!kRssIsMeaningful) GTEST_SKIP() << "sanitizers distort the RSS";
  SlabPool pool;
  ASSERT_TRUE(pool.Init(SmallOptions(0)).ok());
  std::vector<uint64_t> handles;
  // 200 spans: the kernel's RSS counters are approximate by up to a few
  // hundred KiB.
  for (int i = 0; i < 200 * 630; ++i) {
    handles.push_back(pool.Allocate(100, "", UINT64_MAX)->handle);
  }
  const uint64_t rss_full = OsMemory::ProcessRssBytes();
  const uint64_t resident_full = pool.resident_bytes();
  for (uint64_t h : handles) ASSERT_TRUE(pool.Free(h).ok());
  const uint64_t rss_empty = OsMemory::ProcessRssBytes();
  const double counted =
      static_cast<double>(resident_full - pool.resident_bytes());
  EXPECT_NEAR(static_cast<double>(rss_full - rss_empty), counted,
              0.05 * counted);
}

}  // namespace
}  // namespace poold::pools
