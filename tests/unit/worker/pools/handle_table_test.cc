// Tests of HandleTable: handles resolve while live and never afterwards;
// forged, stale and foreign handles are rejected; pages are reused and
// released.
#include "worker/pools/handle_table.h"

#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "gtest/gtest.h"

namespace poold::pools {
namespace {

constexpr uint64_t kKey = 0x1234567890abcdefULL;

TEST(HandleTableTest, InsertFindRemove) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 20, kKey).ok());
  auto a = table.Insert(42);
  auto b = table.Insert(43);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(a->handle, 0u);
  EXPECT_NE(a->handle, b->handle);
  EXPECT_EQ(table.Find(a->handle), a->index);
  EXPECT_EQ(table.Payload(a->index), 42u);
  table.SetPayload(a->index, HandleTable::kMaxPayload);
  EXPECT_EQ(table.Payload(a->index), HandleTable::kMaxPayload);
  EXPECT_EQ(table.Find(a->handle), a->index);  // payload change keeps handle
  table.Remove(a->index);
  EXPECT_FALSE(table.Find(a->handle).has_value());
  EXPECT_EQ(table.Find(b->handle), b->index);
  EXPECT_EQ(table.live(), 1u);
}

TEST(HandleTableTest, ReusedEntryNeverMatchesTheOldHandle) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 20, kKey).ok());
  auto first = table.Insert(1);
  ASSERT_TRUE(first.ok());
  table.Remove(first->index);
  auto second = table.Insert(2);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(second->index, first->index);  // lowest free entry is reused
  EXPECT_NE(second->handle, first->handle);
  EXPECT_FALSE(table.Find(first->handle).has_value());
  EXPECT_EQ(table.Find(second->handle), second->index);
}

TEST(HandleTableTest, ForgedAndForeignHandlesAreRejected) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kMedium, 1 << 20, kKey).ok());
  std::vector<uint64_t> live;
  for (int i = 0; i < 5000; ++i) live.push_back(table.Insert(i)->handle);
  absl::flat_hash_set<uint64_t> issued(live.begin(), live.end());
  absl::BitGen gen;
  for (int i = 0; i < 200000; ++i) {
    uint64_t forged = absl::Uniform<uint64_t>(gen);
    if (i % 2 == 0) {
      // Near misses: a live handle with one bit flipped.
      forged = live[i % live.size()] ^ (uint64_t{1} << (i % 64));
    }
    if (issued.contains(forged)) continue;
    ASSERT_FALSE(table.Find(forged).has_value()) << forged;
  }
  for (uint64_t h : {uint64_t{0}, ~uint64_t{0}}) {
    EXPECT_FALSE(table.Find(h).has_value());
  }
  // The same index and generation under another key (another process).
  HandleTable other;
  ASSERT_TRUE(other.Init(PoolKind::kMedium, 1 << 20, kKey + 1).ok());
  for (int i = 0; i < 5000; ++i) ASSERT_TRUE(other.Insert(i).ok());
  int accepted = 0;
  for (uint64_t h : live) accepted += other.Find(h).has_value();
  EXPECT_LE(accepted, 2);  // 16-bit tag: ~5000/65536 expected collisions
  // Another pool's table never accepts the handle.
  HandleTable small;
  ASSERT_TRUE(small.Init(PoolKind::kSmall, 1 << 20, kKey).ok());
  for (int i = 0; i < 5000; ++i) ASSERT_TRUE(small.Insert(i).ok());
  for (uint64_t h : live) EXPECT_FALSE(small.Find(h).has_value());
  EXPECT_EQ(HandleTable::PoolOf(live[0]), PoolKind::kMedium);
}

TEST(HandleTableTest, PagesAreReleasedAndReopenedWithNewGenerations) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 20, kKey).ok());
  const uint32_t n = 3 * HandleTable::kEntriesPerPage;
  std::vector<HandleTable::Inserted> entries;
  for (uint32_t i = 0; i < n; ++i) entries.push_back(*table.Insert(i));
  const uint64_t full = table.resident_bytes();
  EXPECT_EQ(table.empty_page_bytes(), 0u);
  // Empty the middle page.
  for (uint32_t i = HandleTable::kEntriesPerPage;
       i < 2 * HandleTable::kEntriesPerPage; ++i) {
    table.Remove(entries[i].index);
  }
  EXPECT_EQ(table.empty_page_bytes(), 4096u);
  EXPECT_EQ(table.resident_bytes(), full);  // kept until released
  EXPECT_EQ(table.ReleaseEmptyPages(), 4096u);
  EXPECT_EQ(table.resident_bytes(), full - 4096);
  EXPECT_EQ(table.empty_page_bytes(), 0u);
  for (uint32_t i = HandleTable::kEntriesPerPage;
       i < 2 * HandleTable::kEntriesPerPage; ++i) {
    EXPECT_FALSE(table.Find(entries[i].handle).has_value());
    EXPECT_FALSE(table.IsLive(entries[i].index));
  }
  // The released page is reopened before a new one is added.
  auto again = table.Insert(7);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->index / HandleTable::kEntriesPerPage, 1u);
  EXPECT_EQ(table.resident_bytes(), full);
  for (uint32_t i = HandleTable::kEntriesPerPage;
       i < 2 * HandleTable::kEntriesPerPage; ++i) {
    EXPECT_FALSE(table.Find(entries[i].handle).has_value());
  }
  EXPECT_EQ(table.Find(entries[0].handle), entries[0].index);
  EXPECT_EQ(table.Find(entries[n - 1].handle), entries[n - 1].index);
}

TEST(HandleTableTest, ExhaustedGenerationRetiresTheEntry) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 20, kKey).ok());
  std::vector<uint64_t> seen;
  uint32_t index = 0;
  for (int i = 0; i < 0xFFFF; ++i) {
    auto e = table.Insert(1);
    ASSERT_EQ(e->index, 0u);
    index = e->index;
    seen.push_back(e->handle);
    table.Remove(index);
  }
  // Generation 0xFFFF was the last: index 0 is never handed out again.
  auto next = table.Insert(1);
  EXPECT_EQ(next->index, 1u);
  absl::flat_hash_set<uint64_t> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), seen.size());
  for (uint64_t h : seen) ASSERT_FALSE(table.Find(h).has_value());
}

TEST(HandleTableTest, FullTableIsResourceExhausted) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kLarge, 1024, kKey).ok());
  for (int i = 0; i < 1024; ++i) ASSERT_TRUE(table.Insert(i).ok());
  auto more = table.Insert(1);
  EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
}

}  // namespace
}  // namespace poold::pools
