// SlabCompactor: one incremental compaction of a SlabPool.
//
// Per size class that has memory to give back, it keeps the fewest spans that
// can hold the class's blocks (the fullest ones) and evacuates the others,
// emptiest first, so the bytes copied are the minimum for the spans released.
// The emptiest span it keeps is the class's tail: the others end full, and
// the tail's blocks move down into its lowest slots, after which its pages
// past the last block go back to the OS. A class thus ends holding its
// blocks plus less than a page (and its spans' unusable ends). A guest class
// (SlabPool::PlanCompaction) evacuates every span into its host's spans
// instead, and its host takes its blocks as if they were its own.
// It runs in phases, each resumable at any point, so the owner can serve
// other operations between steps:
//   plan   mark the spans to evacuate and the tails (they take no new
//          allocations)
//   scan   walk the handle table once, noting which entry owns each live
//          slot of a marked span (a temporary reverse map)
//   move   copy each block of an evacuated span into a free slot of the
//          fullest kept span of its class, else into the tail's lowest free
//          slot, and repoint its handle; then pack each tail the same way,
//          top block first, and trim it
//   purge  return emptied and cached spans and empty handle-table pages
//   release  unmap the reverse map's pieces (one per class) and free the
//          rest of the bookkeeping
// Blocks freed between steps are simply skipped. If allocations between
// steps use up the room a span needed, that span is returned to service
// unfinished instead of growing the pool.
#ifndef POOLD_WORKER_POOLS_SLAB_COMPACTOR_H_
#define POOLD_WORKER_POOLS_SLAB_COMPACTOR_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "worker/pools/slab_pool.h"

namespace poold::pools {

class SlabCompactor {
 public:
  // Compacts `pool`, which must outlive this object and must not be
  // compacted by another SlabCompactor at the same time.
  explicit SlabCompactor(SlabPool& pool);
  SlabCompactor(const SlabCompactor&) = delete;
  SlabCompactor& operator=(const SlabCompactor&) = delete;
  // Abandons unfinished work (see Stop()).
  ~SlabCompactor();

  // Advances until done or `deadline` passes, checked after each piece of
  // work: a class planned, a handle-table page scanned, a block moved, a
  // batch purged, an owner map unmapped. A piece takes microseconds, up to
  // about a millisecond for a handle-table page whose owner entries land on
  // fresh pages (measured under churn_bench). Each call does at least one
  // piece, however late. Returns true when done. When the OS
  // refuses a call (a commit for a destination slot, a trim, a purge), the
  // compaction stops as Stop() does and is done, with failure() saying why:
  // every block is where it was last moved to, readable and counted.
  bool Step(absl::Time deadline);

  // Stops early: spans still marked for evacuation return to service, with
  // the blocks not yet moved where they are. Memory stays consistent. The
  // spans it emptied go back to the OS down to the pool's retained amount,
  // unless `trim_cache` is false: then they stay cached until the pool's
  // next trim (SlabPool::TrimCachedSpans, or the cache decay), which lets a
  // caller short of time answer first.
  void Stop(bool trim_cache = true);

  bool done() const { return phase_ == Phase::kDone; }
  // OK, or the OS call that stopped the compaction.
  const absl::Status& failure() const { return failure_; }
  uint64_t blocks_moved() const { return blocks_moved_; }
  uint64_t bytes_moved() const { return bytes_moved_; }
  uint64_t spans_released() const { return spans_released_; }
  // Spans returned to service unfinished because their class ran out of room.
  uint64_t spans_abandoned() const { return spans_abandoned_; }
  // Owner maps (one per class with marked spans) still mapped.
  size_t owner_maps() const { return owner_blocks_.size(); }

 private:
  enum class Phase { kPlan, kScan, kMove, kPurge, kRelease, kDone };
  static constexpr uint32_t kNoOffset = 0xFFFFFFFF;
  // Moves between the prefetch of a handle-table entry and its use.
  static constexpr size_t kPrefetchDistance = 16;

  // Step() without the handling of a failure: true when done, false at the
  // deadline or at a failure (failure_ set).
  bool Advance(absl::Time deadline);
  // Returns true when the phase finished before the deadline.
  bool PlanClasses(absl::Time deadline);
  bool Scan(absl::Time deadline);
  bool Move(absl::Time deadline);
  // Empties source `id` (from slot move_slot_ on); false at the deadline.
  bool Evacuate(uint32_t id, absl::Time deadline);
  // Packs tail `id` into its lowest slots and trims it; false at the
  // deadline.
  bool PackTail(uint32_t id, absl::Time deadline);
  // Copies the block in `slot` of marked span `id`, owned by handle-table
  // entry `index`, into the next slot of span `dest`, and repoints it.
  // False, with nothing changed and failure_ set, when the OS refused the
  // destination's pages.
  bool MoveBlock(uint32_t id, uint32_t slot, uint32_t index, uint32_t dest);
  // The class's tail if it is still marked, else kNoSpan.
  uint32_t MarkedTail(uint32_t class_index) const;
  // Puts an evacuating span back into its class's active lists.
  void Reinstate(uint32_t id);
  void UpdateTransientBytes();
  // Frees the temporary bookkeeping (sources, reverse map), unmapping the
  // owner maps one by one until `deadline` passes; true when all is freed.
  // Each unmap interrupts every core that runs the process (TLB shootdown):
  // with a map per compacted class, a few hundred take a millisecond.
  bool ReleaseBookkeeping(absl::Time deadline);

  SlabPool& pool_;
  Phase phase_ = Phase::kPlan;
  absl::Status failure_;
  uint32_t next_class_ = 0;
  uint32_t scan_index_ = 0;
  size_t move_source_ = 0;
  uint32_t move_slot_ = 0;
  // Spans marked (evacuated, or packed when they are their class's tail),
  // and for each span id its position in sources_ (kNoOffset when not
  // marked).
  std::vector<uint32_t> sources_;
  std::vector<uint32_t> offset_by_span_;
  // Per class, its tail while marked (kNoSpan otherwise), and the class
  // whose spans take its blocks (itself, or its host when it is a guest).
  std::vector<uint32_t> tail_by_class_;
  std::vector<uint32_t> host_by_class_;
  // The pool's compaction plan: its merges (each class's host) decided at
  // the first planning step, the layouts computed again at each; and the
  // hosts planned to take guests.
  std::vector<SlabPool::ClassCompaction> class_plans_;
  std::vector<uint32_t> merges_;
  std::vector<bool> hosts_planned_;
  // Per source, the handle-table index of the block in each live slot (a
  // piece of its class's block in owner_blocks_). Only live slots are written
  // (by the scan) and read (by the moves), so the arrays are left
  // uninitialised and cost pages only where blocks are.
  struct OwnerBlock {
    char* base;
    uint64_t bytes;
    uint64_t slots;  // counted in owner_slots_
  };
  std::vector<uint32_t*> owners_;
  std::vector<OwnerBlock> owner_blocks_;
  uint64_t owner_slots_ = 0;
  // The class being planned: its chosen sources (and last its tail, if it
  // has one) and how many are marked.
  std::vector<uint32_t> plan_spans_;
  size_t plan_next_ = 0;
  std::vector<std::pair<uint32_t, uint32_t>> ranked_;  // (live, id)
  // Reused list of the live slots of the span being evacuated.
  std::vector<uint32_t> slots_;
  uint64_t blocks_moved_ = 0;
  uint64_t bytes_moved_ = 0;
  uint64_t spans_released_ = 0;
  uint64_t spans_abandoned_ = 0;
  uint64_t table_bytes_ = 0;  // handle-table pages released
  uint64_t os_calls_ = 0;     // pool_.span_os_calls() at the last clock look
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_SLAB_COMPACTOR_H_
