// Tests of HandleTable: handles resolve while live and never afterwards;
// forged, stale and foreign handles are rejected; pages are reused and
// released; when the OS refuses a page, nothing is lost or miscounted.
#include "worker/pools/handle_table.h"

#include <cerrno>
#include <cstring>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/pools/fault_injecting_os.h"

namespace poold::pools {
namespace {

constexpr SipKey kKey{0x1234567890abcdefULL, 0x0fedcba987654321ULL};

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
  ASSERT_TRUE(
      other.Init(PoolKind::kMedium, 1 << 20, SipKey{kKey.k0 + 1, kKey.k1})
          .ok());
  for (int i = 0; i < 5000; ++i) ASSERT_TRUE(other.Insert(i).ok());
  int accepted = 0;
  for (uint64_t h : live) accepted += other.Find(h).has_value();
  EXPECT_EQ(accepted, 0);  // 32-bit tags: 5000/2^32 expected collisions
  // Another pool's table never accepts the handle.
  HandleTable small;
  ASSERT_TRUE(small.Init(PoolKind::kSmall, 1 << 20, kKey).ok());
  for (int i = 0; i < 5000; ++i) ASSERT_TRUE(small.Insert(i).ok());
  for (uint64_t h : live) EXPECT_FALSE(small.Find(h).has_value());
  EXPECT_EQ(HandleTable::PoolOf(live[0]), PoolKind::kMedium);
}

TEST(HandleTableTest, LiveHandleAtIgnoresTheTagButNotTheEntry) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kMedium, 1 << 20, kKey).ok());
  const auto a = table.Insert(1);
  ASSERT_TRUE(a.ok());
  const uint64_t other_tag = a->handle ^ (uint64_t{0xABCD} << 32);
  EXPECT_EQ(table.LiveHandleAt(other_tag), a->handle);
  EXPECT_EQ(table.LiveHandleAt(a->handle), a->handle);
  EXPECT_FALSE(table.LiveHandleAt(a->handle + 1).has_value());  // no entry
  table.Remove(a->index);
  EXPECT_FALSE(table.LiveHandleAt(a->handle).has_value());
  const auto b = table.Insert(2);  // the same entry, a new generation
  ASSERT_EQ(b->index, a->index);
  EXPECT_EQ(table.LiveHandleAt(a->handle), b->handle);
  // Another pool's bits never match.
  HandleTable small;
  ASSERT_TRUE(small.Init(PoolKind::kSmall, 1 << 20, kKey).ok());
  ASSERT_TRUE(small.Insert(1).ok());
  EXPECT_FALSE(small.LiveHandleAt(b->handle).has_value());
}

TEST(HandleTableTest, PagesAreReleasedAndReopenedWithNewGenerations) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 20, kKey).ok());
  const uint32_t n = 3 * HandleTable::kEntriesPerPage;
  std::vector<HandleTable::Inserted> entries;
  for (uint32_t i = 0; i < n; ++i) entries.push_back(*table.Insert(i));
  const uint64_t full = table.resident_bytes();
  EXPECT_EQ(table.reclaimable_bytes(), 0u);
  // Empty the middle page.
  for (uint32_t i = HandleTable::kEntriesPerPage;
       i < 2 * HandleTable::kEntriesPerPage; ++i) {
    table.Remove(entries[i].index);
  }
  EXPECT_EQ(table.reclaimable_bytes(), 4096u);
  EXPECT_EQ(table.resident_bytes(), full);  // kept until released
  EXPECT_EQ(table.Compact(), 4096u);
  EXPECT_EQ(table.resident_bytes(), full - 4096);
  EXPECT_EQ(table.reclaimable_bytes(), 0u);
  for (uint32_t i = HandleTable::kEntriesPerPage;
       i < 2 * HandleTable::kEntriesPerPage; ++i) {
    EXPECT_FALSE(table.Find(entries[i].handle).has_value());
    EXPECT_FALSE(table.IsLive(entries[i].index));
  }
  // The released page is reopened before a new one is added.
  auto again = table.Insert(7);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(HandleTable::PageOf(again->index), 1u);
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
  // 65535 handles of one index differ in their tags only. With 32-bit tags
  // about 0.5 pairs collide (a stale handle matching a later generation);
  // with 16-bit tags, over 20,000 would.
  absl::flat_hash_set<uint64_t> unique(seen.begin(), seen.end());
  EXPECT_GE(unique.size() + 3, seen.size());
  for (uint64_t h : seen) ASSERT_FALSE(table.Find(h).has_value());
}

TEST(HandleTableTest, TheTagFillsTheUpper32BitsAndDependsOnTheKey) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kLarge, 1 << 20, kKey).ok());
  HandleTable rekeyed;
  ASSERT_TRUE(
      rekeyed.Init(PoolKind::kLarge, 1 << 20, SipKey{kKey.k0, kKey.k1 ^ 1})
          .ok());
  uint64_t any_set = 0;
  uint64_t all_set = ~uint64_t{0};
  int same_under_other_key = 0;
  for (int i = 0; i < 4096; ++i) {
    const auto e = table.Insert(1);
    const auto r = rekeyed.Insert(1);
    ASSERT_TRUE(e.ok() && r.ok());
    ASSERT_EQ(e->index, r->index);
    // The lower 32 bits are the index and the pool; the tag is the rest.
    EXPECT_EQ(e->handle & 0xFFFFFFFFu, r->handle & 0xFFFFFFFFu);
    same_under_other_key += e->handle == r->handle;
    any_set |= e->handle;
    all_set &= e->handle;
  }
  EXPECT_EQ(any_set >> 32, 0xFFFFFFFFu);  // every tag bit varies
  EXPECT_EQ(all_set >> 32, 0u);
  EXPECT_EQ(same_under_other_key, 0);  // one bit of the key changes all tags
}

// A table of `pages` full pages with every `keep`th entry kept: scattered
// survivors. `kept` gets (handle, index, payload) of each.
struct Kept {
  uint64_t handle;
  uint32_t index;
  uint64_t payload;
};
void Scatter(HandleTable& table, uint32_t pages, uint32_t keep,
             std::vector<Kept>* kept, std::vector<uint64_t>* removed) {
  std::vector<HandleTable::Inserted> all;
  for (uint32_t i = 0; i < pages * HandleTable::kEntriesPerPage; ++i) {
    all.push_back(*table.Insert(i * 3));
  }
  for (uint32_t i = 0; i < all.size(); ++i) {
    if (i % keep == 0) {
      kept->push_back({all[i].handle, all[i].index, i * 3u});
    } else {
      table.Remove(all[i].index);
      removed->push_back(all[i].handle);
    }
  }
}

void ExpectKept(const HandleTable& table, const std::vector<Kept>& kept,
                const std::vector<uint64_t>& removed) {
  for (const Kept& k : kept) {
    ASSERT_EQ(table.Find(k.handle), k.index);
    ASSERT_EQ(table.Payload(k.index), k.payload);
  }
  for (uint64_t h : removed) ASSERT_FALSE(table.Find(h).has_value()) << h;
  // Scans see exactly the live entries.
  uint64_t seen = 0;
  for (uint32_t page = 0; page < HandleTable::PageOf(table.index_end());
       ++page) {
    table.ForEachLive(page, [&](uint32_t index, uint64_t payload) {
      ASSERT_EQ(table.Payload(index), payload);
      ++seen;
    });
  }
  EXPECT_EQ(seen, table.live());
}

TEST(HandleTableTest, ScatteredSurvivorsLeaveTheirPagesForTheSparseStore) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 22, kKey).ok());
  std::vector<Kept> kept;
  std::vector<uint64_t> removed;
  // 200 pages, each keeping 59 of its 585 entries.
  Scatter(table, 200, 10, &kept, &removed);
  const uint64_t before = table.resident_bytes();
  const uint64_t records = kept.size() * HandleTable::kSparseRecordBytes;
  const uint64_t expected =
      200 * 4096 - (records + 4095) / 4096 * 4096;  // pages out, store in
  EXPECT_EQ(table.reclaimable_bytes(), expected);
  table.Compact();
  EXPECT_EQ(table.resident_bytes(), before - expected);
  EXPECT_EQ(table.reclaimable_bytes(), 0u);
  EXPECT_EQ(table.sparse_pages(), 200u);
  EXPECT_EQ(table.sparse_entries(), kept.size());
  ExpectKept(table, kept, removed);
  // About 9 bytes per surviving handle, not a page per 59 of them.
  EXPECT_LE(static_cast<double>(table.resident_bytes() - 6 * 4096) /
                static_cast<double>(kept.size()),
            16.0);
  // Payloads of sparse entries change in place; removals stick.
  for (size_t i = 0; i < kept.size(); i += 2) {
    table.SetPayload(kept[i].index, HandleTable::kMaxPayload - i);
    kept[i].payload = HandleTable::kMaxPayload - i;
  }
  std::vector<Kept> still;
  for (size_t i = 0; i < kept.size(); ++i) {
    if (i % 3 == 1) {
      table.Remove(kept[i].index);
      removed.push_back(kept[i].handle);
    } else {
      still.push_back(kept[i]);
    }
  }
  ExpectKept(table, still, removed);
  EXPECT_EQ(table.live(), still.size());
  // The next compaction drops the dead records: exactly as projected.
  const uint64_t resident = table.resident_bytes();
  const uint64_t reclaimable = table.reclaimable_bytes();
  EXPECT_GT(reclaimable, 0u);
  table.Compact();
  EXPECT_EQ(table.resident_bytes(), resident - reclaimable);
  ExpectKept(table, still, removed);
}

TEST(HandleTableTest, NewEntriesFillSparsePagesWithNewGenerations) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 22, kKey).ok());
  std::vector<Kept> kept;
  std::vector<uint64_t> removed;
  Scatter(table, 20, 7, &kept, &removed);
  table.Compact();
  ASSERT_EQ(table.sparse_pages(), 20u);
  // Inserts bring the sparse pages back, lowest first, instead of opening
  // new ones; no handle ever issued comes back.
  absl::flat_hash_set<uint64_t> issued(removed.begin(), removed.end());
  for (const Kept& k : kept) issued.insert(k.handle);
  std::vector<Kept> added;
  for (size_t i = 0; i < removed.size(); ++i) {
    auto e = table.Insert(7);
    ASSERT_TRUE(e.ok());
    ASSERT_LT(HandleTable::PageOf(e->index), 20u);
    ASSERT_TRUE(issued.insert(e->handle).second) << "handle reissued";
    added.push_back({e->handle, e->index, 7});
  }
  EXPECT_EQ(table.sparse_pages(), 0u);
  EXPECT_EQ(table.index_end(), 20 * HandleTable::kIndexesPerPage);
  ExpectKept(table, kept, removed);
  ExpectKept(table, added, {});
}

TEST(HandleTableTest, CompactionInStepsWithChangesBetweenThem) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kMedium, 1 << 22, kKey).ok());
  std::vector<Kept> kept;
  std::vector<uint64_t> removed;
  Scatter(table, 300, 5, &kept, &removed);
  absl::BitGen gen(std::seed_seq{4});
  int steps = 0;
  uint64_t freed = 0;
  // A deadline in the past: one small step per call.
  while (!table.Compact(absl::InfinitePast(), &freed)) {
    ++steps;
    // Remove a few survivors, add a few entries.
    for (int i = 0; i < 3 && !kept.empty(); ++i) {
      const size_t k = absl::Uniform<size_t>(gen, 0, kept.size());
      table.Remove(kept[k].index);
      removed.push_back(kept[k].handle);
      kept[k] = kept.back();
      kept.pop_back();
    }
    auto e = table.Insert(steps);
    ASSERT_TRUE(e.ok());
    kept.push_back({e->handle, e->index, static_cast<uint64_t>(steps)});
    ExpectKept(table, kept, removed);
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GT(steps, 5);
  EXPECT_GT(freed, 0u);
  ExpectKept(table, kept, removed);
  table.Compact();
  ExpectKept(table, kept, removed);
  EXPECT_EQ(table.live(), kept.size());
}

TEST(HandleTableTest, AnUnfinishedCompactionStartsOverFromTheFirstPage) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 22, kKey).ok());
  // Page 0 full; pages 1..200 with a few survivors each.
  std::vector<HandleTable::Inserted> first;
  for (uint32_t i = 0; i < HandleTable::kEntriesPerPage; ++i) {
    first.push_back(*table.Insert(i));
  }
  std::vector<Kept> kept;
  std::vector<uint64_t> removed;
  Scatter(table, 200, 10, &kept, &removed);
  // One step: the pass looks at page 0 (not sparse enough) and stops.
  uint64_t freed = 0;
  ASSERT_FALSE(table.Compact(absl::InfinitePast(), &freed));
  // Page 0 empties down to a few entries, and the compaction is abandoned.
  for (uint32_t i = 0; i < first.size(); ++i) {
    if (i % 50 != 0) table.Remove(first[i].index);
  }
  // A new compaction takes page 0 too: nothing is left to reclaim.
  table.StartCompaction();
  while (!table.Compact(absl::InfiniteFuture(), &freed)) {
  }
  EXPECT_EQ(table.reclaimable_bytes(), 0u);
  EXPECT_EQ(table.sparse_pages(), 201u);
  ExpectKept(table, kept, removed);
}

// A pass stopped part-way leaves the pages it already moved in the other
// store; records that die there afterwards stay until a later pass. What
// the next compaction returns is still exactly what was projected.
TEST(HandleTableTest, ProjectionAfterAnUnfinishedPassIsExact) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 22, kKey).ok());
  std::vector<Kept> kept;
  std::vector<uint64_t> removed;
  Scatter(table, 400, 10, &kept, &removed);
  table.Compact();
  ASSERT_EQ(table.sparse_pages(), 400u);
  // Half the survivors die: a pass would pack the store into fewer pages.
  auto remove_where = [&](auto&& pick) {
    std::vector<Kept> still;
    for (const Kept& k : kept) {
      if (pick(k)) {
        table.Remove(k.index);
        removed.push_back(k.handle);
      } else {
        still.push_back(k);
      }
    }
    kept = std::move(still);
  };
  remove_where([](const Kept& k) { return k.payload / 30 % 2 == 0; });
  ASSERT_GT(table.reclaimable_bytes(), 0u);
  // One step of a pass, then it is abandoned: the first pages' records
  // are in the other store now, and most of them die there.
  uint64_t freed = 0;
  table.StartCompaction();
  ASSERT_FALSE(table.Compact(absl::InfinitePast(), &freed));
  remove_where([](const Kept& k) {
    return HandleTable::PageOf(k.index) < 64 && k.payload / 30 % 5 != 0;
  });
  const uint64_t resident = table.resident_bytes();
  const uint64_t reclaimable = table.reclaimable_bytes();
  const uint64_t returned = table.Compact();
  EXPECT_EQ(resident - table.resident_bytes(), reclaimable);
  EXPECT_EQ(returned, reclaimable);
  // The dead records went too: nothing is left to gain.
  EXPECT_EQ(table.reclaimable_bytes(), 0u);
  EXPECT_EQ(table.sparse_entries(), table.live());
  ExpectKept(table, kept, removed);
}

TEST(HandleTableTest, FullTableIsResourceExhausted) {
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kLarge, 1024, kKey).ok());
  // Rounded up to whole pages.
  for (uint32_t i = 0; i < 2 * HandleTable::kEntriesPerPage; ++i) {
    ASSERT_TRUE(table.Insert(i).ok());
  }
  auto more = table.Insert(1);
  EXPECT_EQ(more.status().code(), absl::StatusCode::kResourceExhausted);
}

// A new page that the OS refuses: the Insert fails, nothing changes, and
// once the OS gives memory again the next Insert succeeds.
TEST(HandleTableTest, ARefusedPageFailsTheInsertAndChangesNothing) {
  FaultInjectingOs os;
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 20, kKey, os).ok());
  std::vector<Kept> kept;
  for (uint32_t i = 0; i < HandleTable::kEntriesPerPage; ++i) {
    absl::StatusOr<HandleTable::Inserted> in = table.Insert(i);
    ASSERT_TRUE(in.ok()) << in.status();
    kept.push_back({in->handle, in->index, i});
  }
  const uint64_t resident = table.resident_bytes();
  os.FailAt(OsCall::kCommit, 1, ENOMEM, /*repeat=*/true);
  const absl::StatusOr<HandleTable::Inserted> refused = table.Insert(7);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), ::testing::HasSubstr("handle table"));
  EXPECT_EQ(table.resident_bytes(), resident);
  EXPECT_EQ(table.live(), kept.size());
  EXPECT_TRUE(table.CheckResidency().ok()) << table.CheckResidency();
  os.Heal();
  absl::StatusOr<HandleTable::Inserted> in = table.Insert(7);
  ASSERT_TRUE(in.ok()) << in.status();
  kept.push_back({in->handle, in->index, 7});
  ExpectKept(table, kept, {});
}

// Purges refused while a compaction moves scattered survivors to the
// sparse store: the pages go back into service with every entry, nothing
// is counted as returned, and the compaction says why. Once the OS purges
// again, a compaction returns exactly its projection.
TEST(HandleTableTest, ARefusedPurgeOfSparsifiedPagesKeepsThemInService) {
  FaultInjectingOs os;
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 22, kKey, os).ok());
  std::vector<Kept> kept;
  std::vector<uint64_t> removed;
  Scatter(table, 40, 10, &kept, &removed);
  ASSERT_GT(table.reclaimable_bytes(), 0u);
  os.FailAt(OsCall::kPurge, 1, EIO, /*repeat=*/true);
  uint64_t freed = 0;
  table.StartCompaction();
  EXPECT_TRUE(table.Compact(absl::InfiniteFuture(), &freed));
  EXPECT_THAT(table.failure().message(),
              ::testing::AllOf(::testing::HasSubstr("returning pages"),
                               ::testing::HasSubstr(std::strerror(EIO))));
  EXPECT_EQ(freed, 0u);
  EXPECT_EQ(table.sparse_pages(), 0u);
  EXPECT_TRUE(table.CheckResidency().ok()) << table.CheckResidency();
  ExpectKept(table, kept, removed);

  os.Heal();
  const uint64_t resident = table.resident_bytes();
  const uint64_t reclaimable = table.reclaimable_bytes();
  ASSERT_GT(reclaimable, 0u);
  EXPECT_EQ(table.Compact(), reclaimable);
  EXPECT_TRUE(table.failure().ok()) << table.failure();
  EXPECT_EQ(resident - table.resident_bytes(), reclaimable);
  EXPECT_EQ(table.reclaimable_bytes(), 0u);
  EXPECT_TRUE(table.CheckResidency().ok()) << table.CheckResidency();
  ExpectKept(table, kept, removed);
}

// A purge of empty pages refused: they stay present and counted, and are
// returned by the next compaction once the OS purges again.
TEST(HandleTableTest, ARefusedPurgeOfEmptyPagesKeepsThemCounted) {
  FaultInjectingOs os;
  HandleTable table;
  ASSERT_TRUE(table.Init(PoolKind::kSmall, 1 << 20, kKey, os).ok());
  std::vector<Kept> kept;
  std::vector<uint64_t> removed;
  std::vector<HandleTable::Inserted> all;
  for (uint32_t i = 0; i < 8 * HandleTable::kEntriesPerPage; ++i) {
    absl::StatusOr<HandleTable::Inserted> in = table.Insert(i);
    ASSERT_TRUE(in.ok()) << in.status();
    all.push_back(*in);
  }
  for (uint32_t i = 0; i < all.size(); ++i) {
    const uint32_t page = HandleTable::PageOf(all[i].index);
    if (page >= 2 && page < 6) {
      table.Remove(all[i].index);
      removed.push_back(all[i].handle);
    } else {
      kept.push_back({all[i].handle, all[i].index, i});
    }
  }
  const uint64_t resident = table.resident_bytes();
  const uint64_t reclaimable = table.reclaimable_bytes();
  ASSERT_EQ(reclaimable, 4 * HandleTable::kPageBytes);
  os.FailAt(OsCall::kPurge, 1, EIO, /*repeat=*/true);
  uint64_t freed = 0;
  table.StartCompaction();
  EXPECT_TRUE(table.Compact(absl::InfiniteFuture(), &freed));
  EXPECT_FALSE(table.failure().ok());
  EXPECT_EQ(freed, 0u);
  EXPECT_EQ(table.resident_bytes(), resident);
  EXPECT_EQ(table.reclaimable_bytes(), reclaimable);
  EXPECT_TRUE(table.CheckResidency().ok()) << table.CheckResidency();

  os.Heal();
  EXPECT_EQ(table.Compact(), reclaimable);
  EXPECT_TRUE(table.CheckResidency().ok()) << table.CheckResidency();
  ExpectKept(table, kept, removed);
}

}  // namespace
}  // namespace poold::pools
