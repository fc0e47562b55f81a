// Tests of SlabCompactor against allocations and frees between its steps,
// as the worker serves them between slices.
#include "worker/pools/slab_compactor.h"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/pools/fault_injecting_os.h"
#include "worker/pools/slab_pool.h"

namespace poold::pools {
namespace {

SlabPoolOptions Options() {
  SlabPoolOptions options;
  options.pool = PoolKind::kSmall;
  options.span_bytes = 64 << 10;
  options.spans_per_chunk = 16;
  options.max_spans = 1 << 12;
  options.retained_bytes = 1 << 20;  // emptied spans stay cached, reusable
  options.max_handles = 1 << 20;
  options.handle_key = SipKey{3, 4};
  return options;
}

struct Block {
  uint64_t handle;
  uint64_t size;
};

std::string Contents(uint64_t handle, uint64_t size) {
  std::string s(size, '\0');
  for (uint64_t i = 0; i < size; ++i) s[i] = static_cast<char>(handle * 7 + i);
  return s;
}

uint64_t AllocateFilled(SlabPool& pool, uint64_t size) {
  absl::StatusOr<BlockInfo> block = pool.Allocate(size, "", UINT64_MAX);
  EXPECT_TRUE(block.ok()) << block.status();
  const std::string data = Contents(block->handle, size);
  std::memcpy(pool.Lookup(block->handle)->data, data.data(), size);
  return block->handle;
}

// Allocates `count` filled blocks of `size` bytes, noted in `kept`.
void Keep(SlabPool& pool, int count, uint64_t size, std::vector<Block>* kept) {
  for (int i = 0; i < count; ++i) {
    kept->push_back({AllocateFilled(pool, size), size});
  }
}

// Steps `compactor` until it is done.
void Finish(SlabCompactor& compactor) {
  while (!compactor.Step(absl::Now() + absl::Milliseconds(10))) {
  }
}

// Each block has its size and its bytes.
void ExpectIntact(SlabPool& pool, const std::vector<Block>& blocks) {
  for (const Block& block : blocks) {
    absl::StatusOr<BlockRef> ref = pool.Lookup(block.handle);
    ASSERT_TRUE(ref.ok()) << ref.status();
    ASSERT_EQ(ref->size, block.size) << "handle " << block.handle;
    ASSERT_EQ(std::string(ref->data, block.size),
              Contents(block.handle, block.size))
        << "handle " << block.handle;
  }
}

// A span that a class gives up during a compaction (its last blocks freed
// by a client) goes to the cache, and a client's allocation in another
// class can take it at once. When that class is being compacted too, blocks
// move into the reused span; the compactor must not take the span for the
// one it marked (its reverse map for that span has the old class's few
// slots; writing a slot past them overwrote the reverse map of the next
// span, and moving that span's blocks then failed a CHECK).
TEST(SlabCompactorTest, ASpanReusedByAnotherClassMidCompactionIsNotMarked) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(Options()).ok());
  const SizeClasses& classes = pool.classes();
  const uint32_t big = classes.Get(classes.ClassFor(1000)).slots;
  const uint32_t tiny = classes.Get(classes.ClassFor(16)).slots;
  ASSERT_LT(big, 100u);
  ASSERT_GT(tiny, 2100u);
  std::vector<Block> kept;

  // 16-byte class: a full span and a second one with 10 blocks high up,
  // which becomes the class's tail (packed down into its lowest slots).
  std::vector<uint64_t> handles;
  for (uint32_t i = 0; i < tiny + 2010; ++i) {
    handles.push_back(AllocateFilled(pool, 16));
  }
  for (uint32_t i = 0; i < handles.size(); ++i) {
    if (i < tiny || i >= tiny + 2000) {
      kept.push_back({handles[i], 16});
    } else {
      ASSERT_TRUE(pool.Free(handles[i]).ok());
    }
  }

  // 1000-byte class: three spans. The first keeps one block, the second
  // ten, at the slots where the overflow from the first would land; the
  // third forty. The first two are evacuated, the third is the tail.
  handles.clear();
  for (uint32_t i = 0; i < 3 * big; ++i) {
    handles.push_back(AllocateFilled(pool, 1000));
  }
  const uint32_t overflow = 100 - big;  // slot 100 of the first span's map
  uint64_t doomed = 0;
  for (uint32_t i = 0; i < 3 * big; ++i) {
    const uint32_t span = i / big, slot = i % big;
    const bool keep = (span == 0 && slot == 0) ||
                      (span == 1 && slot >= overflow && slot < overflow + 10) ||
                      (span == 2 && slot < 40);
    if (!keep) {
      ASSERT_TRUE(pool.Free(handles[i]).ok());
    } else if (span == 0) {
      doomed = handles[i];
    } else {
      kept.push_back({handles[i], 1000});
    }
  }

  SlabCompactor compactor(pool);
  // A deadline already passed: each step plans one class.
  const absl::Time past = absl::InfinitePast();
  ASSERT_FALSE(compactor.Step(past));  // the 16-byte class
  ASSERT_FALSE(compactor.Step(past));  // the 1000-byte class

  // Between steps, a client frees the first 1000-byte span's last block
  // (the span is retired into the cache) and allocates a hundred 16-byte
  // blocks: the full span has no room and the tail takes none, so they go
  // into a new span, the cached one.
  ASSERT_TRUE(pool.Free(doomed).ok());
  for (int i = 0; i < 100; ++i) {
    kept.push_back({AllocateFilled(pool, 16), 16});
  }

  Finish(compactor);
  EXPECT_EQ(compactor.spans_abandoned(), 0u);
  ExpectIntact(pool, kept);
  const absl::Status invariants = pool.CheckInvariants();
  EXPECT_TRUE(invariants.ok()) << invariants;
  EXPECT_EQ(pool.Stats(false).stats.blocks, kept.size());
  // The reused span kept the pages its old class had committed; the next
  // compaction returns them, and then nothing is left to reclaim.
  SlabCompactor again(pool);
  Finish(again);
  ExpectIntact(pool, kept);
  EXPECT_EQ(pool.Stats(false).stats.reclaimable_bytes, 0u);
}

// A step can end in the middle of a class's plan, with some of the spans it
// chose not marked yet. If frees empty one of those meanwhile and another
// class takes it from the cache, the rest of the plan must leave it alone.
TEST(SlabCompactorTest, ASpanEmptiedBeforeItIsMarkedIsLeftToItsNewClass) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(Options()).ok());
  const uint32_t big = pool.classes().Get(pool.classes().ClassFor(1000)).slots;
  // 200 spans of 1000-byte blocks, one block left in each: the plan keeps
  // the fewest that hold 200 blocks and evacuates the rest, lowest first.
  std::vector<uint64_t> all, singles;
  for (uint32_t i = 0; i < 200 * big; ++i) {
    all.push_back(AllocateFilled(pool, 1000));
  }
  for (uint32_t i = 0; i < all.size(); ++i) {
    if (i % big == 0) {
      singles.push_back(all[i]);
    } else {
      ASSERT_TRUE(pool.Free(all[i]).ok());
    }
  }
  SlabCompactor compactor(pool);
  // With its deadline passed, the first step marks 64 spans and stops.
  ASSERT_FALSE(compactor.Step(absl::InfinitePast()));

  std::vector<Block> kept;
  for (size_t k = 0; k < singles.size(); ++k) {
    // Spans 100 to 109 were chosen but not marked yet: empty them.
    if (k >= 100 && k < 110) {
      ASSERT_TRUE(pool.Free(singles[k]).ok());
    } else {
      kept.push_back({singles[k], 1000});
    }
  }
  // 16-byte blocks: their class has no span, so they take cached ones.
  Keep(pool, 3000, 16, &kept);

  Finish(compactor);
  ExpectIntact(pool, kept);
  const absl::Status invariants = pool.CheckInvariants();
  EXPECT_TRUE(invariants.ok()) << invariants;
  const PoolStats stats = pool.Stats(true);
  EXPECT_EQ(stats.stats.blocks, kept.size());
  for (const auto& c : stats.classes) {
    EXPECT_EQ(c.stats.blocks, c.slot_bytes == 16 ? 3000u : singles.size() - 10)
        << c.slot_bytes;
  }
}

// A class's tail can be emptied by frees after its class is planned, go to
// the cache, serve another class and be marked for that class's
// compaction. The first class's blocks must not move into it then: it
// holds another class's slots (a 500-byte block in a 1000-byte slot was
// read back 1000 bytes long).
TEST(SlabCompactorTest, ATailTakenByAnotherClassTakesNoMoreBlocks) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(Options()).ok());
  const SizeClasses& classes = pool.classes();
  const uint32_t small = classes.Get(classes.ClassFor(500)).slots;
  const uint32_t big = classes.Get(classes.ClassFor(1000)).slots;
  std::vector<Block> kept;
  // 500-byte class: a full span, one with 2 blocks (evacuated into the
  // tail) and one with 3 blocks high up (the tail).
  std::vector<uint64_t> handles;
  for (uint32_t i = 0; i < 3 * small; ++i) {
    handles.push_back(AllocateFilled(pool, 500));
  }
  std::vector<uint64_t> tail_blocks;
  for (uint32_t i = 0; i < handles.size(); ++i) {
    const uint32_t span = i / small, slot = i % small;
    if (span == 0 || (span == 1 && slot < 2)) {
      kept.push_back({handles[i], 500});
    } else if (span == 2 && slot >= small - 3) {
      tail_blocks.push_back(handles[i]);
    } else {
      ASSERT_TRUE(pool.Free(handles[i]).ok());
    }
  }
  // 1000-byte class: one full span, so that its next block opens a span.
  for (uint32_t i = 0; i < big; ++i) {
    kept.push_back({AllocateFilled(pool, 1000), 1000});
  }

  SlabCompactor compactor(pool);
  // A deadline already passed: each step plans one class.
  ASSERT_FALSE(compactor.Step(absl::InfinitePast()));  // the 500-byte class
  // Between steps, the tail's blocks are freed (it goes to the cache) and
  // two 1000-byte blocks take it. It keeps its committed pages, so the
  // 1000-byte class has pages to give back and marks it as its tail.
  for (uint64_t handle : tail_blocks) ASSERT_TRUE(pool.Free(handle).ok());
  Keep(pool, 2, 1000, &kept);

  Finish(compactor);
  ExpectIntact(pool, kept);
  const absl::Status invariants = pool.CheckInvariants();
  EXPECT_TRUE(invariants.ok()) << invariants;
  EXPECT_EQ(pool.Stats(false).stats.blocks, kept.size());
}

// A class of a few blocks gives up its page: its blocks move into the free
// slots of a larger class's last page, keep their sizes and bytes, and the
// projection is what the compaction does.
TEST(SlabCompactorTest, ASparseClassMovesIntoALargerClassesPage) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(Options()).ok());
  std::vector<Block> kept;
  // Three 100-byte blocks, one page; ten 130-byte blocks, one page with
  // room for 20 more.
  Keep(pool, 3, 97, &kept);
  Keep(pool, 10, 130, &kept);
  const uint64_t resident = pool.span_bytes();
  ASSERT_EQ(resident, 2 * 4096u);
  const PoolAnalysis analysis = pool.Analyze();
  EXPECT_EQ(analysis.bytes_to_reclaim, 4096u);
  EXPECT_EQ(analysis.blocks_to_move, 3u);
  EXPECT_EQ(analysis.bytes_to_move, 3 * 100u);

  SlabCompactor compactor(pool);
  Finish(compactor);
  EXPECT_TRUE(compactor.failure().ok()) << compactor.failure();
  EXPECT_EQ(compactor.blocks_moved(), 3u);
  EXPECT_EQ(compactor.bytes_moved(), 3 * 100u);
  EXPECT_EQ(pool.span_bytes(), 4096u);
  EXPECT_EQ(pool.SpanBytesResidentPerOs(), pool.span_bytes());
  ExpectIntact(pool, kept);
  const absl::Status invariants = pool.CheckInvariants();
  EXPECT_TRUE(invariants.ok()) << invariants;
  // Every block is counted in the class that holds it now, at its size.
  const PoolStats stats = pool.Stats(true);
  ASSERT_EQ(stats.classes.size(), 1u);
  EXPECT_EQ(stats.classes[0].slot_bytes, 132u);
  EXPECT_EQ(stats.classes[0].stats.blocks, 13u);
  EXPECT_EQ(stats.classes[0].stats.live_bytes, 3 * 97u + 10 * 130u);
  EXPECT_EQ(stats.stats.reclaimable_bytes, 0u);

  // Guests are freed like any block; the class they came from fills a page
  // of its own again, and the next compaction moves it in again.
  ASSERT_TRUE(pool.Free(kept[0].handle).ok());
  kept.erase(kept.begin());
  kept.push_back({AllocateFilled(pool, 100), 100});
  EXPECT_EQ(pool.span_bytes(), 2 * 4096u);
  SlabCompactor again(pool);
  Finish(again);
  EXPECT_EQ(pool.span_bytes(), 4096u);
  ExpectIntact(pool, kept);
  EXPECT_TRUE(pool.CheckInvariants().ok());
}

// Which class moves into which is decided when a compaction starts. If
// allocations between its steps fill the host's room, the guest stays where
// it is: the pool does not grow (it grew from 12 to 24 KiB when each step
// made its own plan: the guest went to a host that was no longer planned to
// take it, with a growth step that nothing trimmed).
TEST(SlabCompactorTest, AGuestStaysWhenItsHostIsNoLongerPlannedForIt) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(Options()).ok());
  std::vector<Block> kept;
  Keep(pool, 3, 100, &kept);
  Keep(pool, 10, 130, &kept);
  Keep(pool, 26, 136, &kept);
  const uint64_t before = pool.span_bytes();
  ASSERT_EQ(before, 3 * 4096u);
  SlabCompactor compactor(pool);
  ASSERT_FALSE(compactor.Step(absl::InfinitePast()));  // plans the 100 class
  Keep(pool, 18, 130, &kept);
  const uint64_t grown = pool.span_bytes();
  Finish(compactor);
  EXPECT_TRUE(compactor.failure().ok()) << compactor.failure();
  ExpectIntact(pool, kept);
  const absl::Status invariants = pool.CheckInvariants();
  EXPECT_TRUE(invariants.ok()) << invariants;
  EXPECT_LE(pool.span_bytes(), grown);
  // The next compaction, with nothing between its steps, finishes the job.
  SlabCompactor again(pool);
  Finish(again);
  ExpectIntact(pool, kept);
  EXPECT_LT(pool.span_bytes(), grown);
  EXPECT_EQ(pool.Stats(false).stats.reclaimable_bytes, 0u);
}

// A merge only fills pages its host keeps for its own blocks: it never
// commits one. So when the OS refuses the purge of the guests' emptied
// spans, the merges have not made the pool larger. (When merges could grow
// their host, they did: the host took a page, and the guests' emptied
// spans stayed resident.)
TEST(SlabCompactorTest, RefusedPurgesAfterMergesLeaveThePoolNoLarger) {
  FaultInjectingOs os;
  SlabPoolOptions options = Options();
  options.os = &os;
  SlabPool pool;
  ASSERT_TRUE(pool.Init(options).ok());
  std::vector<Block> kept;
  // 45 blocks of 116 bytes in two pages and ten of 132 in one: the 132
  // class would need a second page to take the 116 class. Three of 100
  // bytes fit the free slots of either.
  Keep(pool, 45, 113, &kept);
  Keep(pool, 10, 130, &kept);
  SlabCompactor packed(pool);  // trims the spans' growth steps
  Finish(packed);
  ASSERT_EQ(pool.span_bytes(), 3 * 4096u);
  Keep(pool, 3, 97, &kept);
  const uint64_t before = pool.span_bytes();
  ASSERT_EQ(before, 4 * 4096u);
  const PoolAnalysis analysis = pool.Analyze();
  EXPECT_EQ(analysis.bytes_to_reclaim, 4096u);
  EXPECT_EQ(analysis.blocks_to_move, 3u);

  os.FailAt(OsCall::kPurge, 1, EIO, /*repeat=*/true);
  SlabCompactor failed(pool);
  Finish(failed);
  EXPECT_FALSE(failed.failure().ok());
  EXPECT_LE(pool.span_bytes(), before);
  EXPECT_EQ(pool.SpanBytesResidentPerOs(), pool.span_bytes());
  ExpectIntact(pool, kept);
  EXPECT_TRUE(pool.CheckInvariants().ok());

  // Once the OS complies, the next compaction returns the page, and the
  // 100-byte class stays where it is.
  os.Heal();
  SlabCompactor healed(pool);
  Finish(healed);
  EXPECT_TRUE(healed.failure().ok()) << healed.failure();
  EXPECT_EQ(pool.span_bytes(), 3 * 4096u);
  ExpectIntact(pool, kept);
  EXPECT_TRUE(pool.CheckInvariants().ok());
  EXPECT_EQ(pool.Stats(false).stats.reclaimable_bytes, 0u);
}

// A block can only be a guest in a slot at most a payload's delta larger:
// a 10-byte block never moves into a 130-byte class.
TEST(SlabCompactorTest, AGuestSlotIsAtMostTheDeltaLarger) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(Options()).ok());
  std::vector<Block> kept;
  Keep(pool, 3, 10, &kept);
  Keep(pool, 10, 130, &kept);
  EXPECT_EQ(pool.Analyze().bytes_to_reclaim, 0u);
  SlabCompactor compactor(pool);
  Finish(compactor);
  EXPECT_EQ(compactor.blocks_moved(), 0u);
  EXPECT_EQ(pool.span_bytes(), 2 * 4096u);
  ExpectIntact(pool, kept);
}

// Fills twenty classes, each with two spans of which one block in ten
// stays (its blocks go to `kept`): a compaction of all twenty.
void FragmentTwentyClasses(SlabPool& pool, std::vector<Block>* kept) {
  for (uint64_t size = 16; size <= 16 * 20; size += 16) {
    const uint32_t slots =
        pool.classes().Get(pool.classes().ClassFor(size)).slots;
    std::vector<uint64_t> handles;
    for (uint32_t i = 0; i < 2 * slots; ++i) {
      handles.push_back(AllocateFilled(pool, size));
    }
    for (size_t i = 0; i < handles.size(); ++i) {
      if (i % 10 == 0) {
        kept->push_back({handles[i], size});
      } else {
        ASSERT_TRUE(pool.Free(handles[i]).ok());
      }
    }
  }
}

// Each owner map is an unmap at the end, and each unmap interrupts every
// core that runs the process: a compaction of many classes must not unmap
// them all in one step. A step past its deadline unmaps one at most.
TEST(SlabCompactorTest, AStepPastItsDeadlineUnmapsOneOwnerMapAtMost) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(Options()).ok());
  std::vector<Block> kept;
  FragmentTwentyClasses(pool, &kept);
  SlabCompactor compactor(pool);
  size_t most_maps = 0;
  size_t most_unmapped_in_a_step = 0;
  bool done = false;
  for (int steps = 0; !done && steps < 100000; ++steps) {
    const size_t before = compactor.owner_maps();
    done = compactor.Step(absl::InfinitePast());
    const size_t after = compactor.owner_maps();
    most_maps = std::max(most_maps, after);
    if (after < before) {
      most_unmapped_in_a_step =
          std::max(most_unmapped_in_a_step, before - after);
    }
  }
  ASSERT_TRUE(done);
  EXPECT_TRUE(compactor.failure().ok()) << compactor.failure();
  EXPECT_GE(most_maps, 20u);
  EXPECT_EQ(compactor.owner_maps(), 0u);
  EXPECT_EQ(most_unmapped_in_a_step, 1u);
  ExpectIntact(pool, kept);
  const absl::Status invariants = pool.CheckInvariants();
  EXPECT_TRUE(invariants.ok()) << invariants;
}

// Stopped while it releases its owner maps (a run ended by shutdown or by
// a requested run), the compactor unmaps the rest at once.
TEST(SlabCompactorTest, StoppedWhileReleasingItUnmapsTheRest) {
  SlabPool pool;
  ASSERT_TRUE(pool.Init(Options()).ok());
  std::vector<Block> kept;
  FragmentTwentyClasses(pool, &kept);
  SlabCompactor compactor(pool);
  size_t before = 0;
  for (int steps = 0; steps < 100000; ++steps) {
    before = compactor.owner_maps();
    ASSERT_FALSE(compactor.Step(absl::InfinitePast()));
    if (compactor.owner_maps() > 0 && compactor.owner_maps() < before) break;
  }
  ASSERT_GT(compactor.owner_maps(), 0u) << "the release never began";
  compactor.Stop();
  EXPECT_TRUE(compactor.done());
  EXPECT_EQ(compactor.owner_maps(), 0u);
  ExpectIntact(pool, kept);
  const absl::Status invariants = pool.CheckInvariants();
  EXPECT_TRUE(invariants.ok()) << invariants;
}

}  // namespace
}  // namespace poold::pools
