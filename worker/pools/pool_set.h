// PoolSet: the engine's front door. It owns the small, medium and large
// pools, routes each request by size or handle, enforces the block size and
// memory limits, and runs defragmentations in bounded steps.
//
// Not thread-safe by design: one owner (the worker thread) calls everything.
#ifndef POOLD_WORKER_POOLS_POOL_SET_H_
#define POOLD_WORKER_POOLS_POOL_SET_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/pools/block_info.h"
#include "worker/pools/defrag_report.h"
#include "worker/pools/extent_pool.h"
#include "worker/pools/fragmentation_stats.h"
#include "worker/pools/memory_limit_error.h"
#include "worker/pools/os_interface.h"
#include "worker/pools/pool_analysis.h"
#include "worker/pools/pool_kind.h"
#include "worker/pools/slab_compactor.h"
#include "worker/pools/slab_pool.h"

namespace poold::pools {

struct PoolSetOptions {
  // Largest block; bigger requests are INVALID_ARGUMENT.
  uint64_t max_block_bytes = uint64_t{64} << 20;
  // Resident bytes the pools may hold in all (0 = no limit). An allocation
  // that would pass it first purges caches and compacts, then fails with
  // RESOURCE_EXHAUSTED.
  uint64_t memory_limit_bytes = 0;
  // Empty memory each pool keeps resident for quick reuse, at most; what
  // was emptied longer than `cache_decay` ago goes back to the OS when the
  // owner calls ReleaseStaleCaches().
  uint64_t small_retained_bytes = uint64_t{32} << 20;
  uint64_t medium_retained_bytes = uint64_t{64} << 20;
  uint64_t large_retained_bytes = uint64_t{128} << 20;
  absl::Duration cache_decay = absl::Seconds(1);
  // Seed of the handles' 128-bit tag key: 0 picks a random key, so handles
  // of an earlier process are rejected and tags cannot be predicted; any
  // other value gives a fixed key (tests).
  uint64_t handle_key = 0;
  // Each pool's way to the OS, by PoolKind (tests make one pool's calls
  // fail); each must outlive the set.
  std::array<OsInterface*, kPoolCount> os = {
      &OsInterface::System(), &OsInterface::System(), &OsInterface::System()};
};

class PoolSet {
 public:
  // Builds the three pools (reserving address space, not memory).
  static absl::StatusOr<std::unique_ptr<PoolSet>> Create(
      const PoolSetOptions& options);

  PoolSet(const PoolSet&) = delete;
  PoolSet& operator=(const PoolSet&) = delete;
  ~PoolSet();

  // Allocates a zeroed block and copies `data` to its start. When `size` is
  // 0 the block is data.size() long. INVALID_ARGUMENT for a zero size, a
  // size above max_block_bytes, or data longer than size;
  // RESOURCE_EXHAUSTED when the block does not fit under the memory limit
  // (a MemoryLimitError, whose MemoryLimitGrowth() says how many more
  // resident bytes it needed): Allocate never compacts, which could take
  // long; the owner may defragment, in slices, and retry when
  // headroom_bytes() + reclaimable_bytes() covers the growth. On error
  // nothing changes.
  // The `written_next` bytes after `data` may be left as they were, not
  // zeroed, in a large block: the caller writes them (with Write) before
  // anything reads the block, and commits each piece first (CommitBytes):
  // so a 64 MiB block's pages are not all made resident in one call.
  // INVALID_ARGUMENT when they pass its end.
  absl::StatusOr<BlockInfo> Allocate(uint64_t size, absl::string_view data,
                                     uint64_t written_next = 0);

  // Copies `data` into the block at `offset`. NOT_FOUND for an unknown,
  // freed or forged handle; OUT_OF_RANGE when offset + data.size() passes
  // the end of the block (computed without overflow).
  absl::Status Write(uint64_t handle, uint64_t offset, absl::string_view data);

  // Bytes [offset, offset + length) of the block; length 0 = to the end.
  // The view is valid until the next non-const call. Errors as for Write.
  absl::StatusOr<absl::string_view> Read(uint64_t handle, uint64_t offset,
                                         uint64_t length);

  // Hints the CPU to fetch what a Read, Write or Free of `handle` will
  // touch (see SlabPool::Prefetch): kEntry first, kBlock a few operations
  // later. For the small and medium pools; any handle, nothing changes.
  // A caller that knows the handles of its next operations (a batch) asks
  // for kEntry kPrefetchEntriesAhead operations ahead and for kBlock
  // kPrefetchBlocksAhead ahead: a small operation whose memory is cached
  // takes about an eighth of a cache miss of a large table.
  void Prefetch(uint64_t handle, SlabPool::PrefetchStep step) const;
  static constexpr size_t kPrefetchEntriesAhead = 16;
  static constexpr size_t kPrefetchBlocksAhead = 8;

  // Makes the pages of bytes [offset, offset + length) of a block resident
  // before they are written (see Allocate's written_next); does nothing for
  // a small or medium block, whose spans are resident whole. Errors as for
  // Write, or the OS's refusal (RESOURCE_EXHAUSTED when it has no memory).
  absl::Status CommitBytes(uint64_t handle, uint64_t offset, uint64_t length);

  // Frees a block; its handle never resolves again. NOT_FOUND as for Write.
  absl::Status Free(uint64_t handle);
  // Frees a block allocated on fresh pages (BlockInfo::fresh_pages) whose
  // bytes were written, and its pages committed, only up to `written`: the
  // pages never committed count as returned to the OS (see
  // ExtentPool::FreeUnfinished), not as resident. As Free otherwise.
  absl::Status FreeUnfinished(uint64_t handle, uint64_t written);

  // The current handle of the block whose table entry `handle` names,
  // whatever `handle`'s tag; nullopt when no block lives there.
  std::optional<uint64_t> LiveHandleAt(uint64_t handle) const;

  // Exact counters of every pool and their total.
  PoolSetStats Stats(bool include_classes) const;

  // What a full defragmentation of `pool` would do now.
  PoolAnalysis Analyze(PoolKind pool) const;

  // Starts a defragmentation of `pools` (in the order small, medium, large;
  // empty = all; duplicates count once). FAILED_PRECONDITION when one is
  // running.
  absl::Status BeginDefrag(const std::vector<PoolKind>& pools);

  bool defrag_running() const { return run_ != nullptr; }

  // Runs the defragmentation for about `budget` (one slice) and says what
  // that slice did, and whether the defragmentation has finished.
  // REQUIRES: defrag_running().
  DefragProgress DefragStep(absl::Duration budget);

  // Ends the defragmentation and returns its report. If it has finished,
  // the report's stop_reason is kFinished. If not, it stops at once (memory
  // consistent; the pool in progress is PARTIAL and pools not reached are
  // SKIPPED, both with the reason's text) and the report carries
  // `stop_reason` (kFinished then counts as kDeadline).
  // REQUIRES: defrag_running().
  DefragReport EndDefrag(DefragStopReason stop_reason);

  // Returns to the OS the empty memory cached for longer than
  // options().cache_decay. Cheap when there is none; call it periodically.
  // The large pool's free extents go back a piece at a time until
  // `deadline` (what is left waits for PurgeLargeDue). Returns the bytes
  // released.
  uint64_t ReleaseStaleCaches(absl::Time now,
                              absl::Time deadline = absl::InfiniteFuture());

  // Whether the large pool holds free resident bytes to return to the OS
  // (beyond what it retains, after a large block was freed, or stale ones
  // ReleaseStaleCaches left for lack of time): PurgeLargeDue has work.
  // Never while a defragmentation runs: its own purge returns them, counted
  // in its report (bytes reclaimed = the pools' resident drop).
  bool large_purge_due() const { return run_ == nullptr && large_.purge_due(); }
  // Returns those bytes to the OS a piece (ExtentPool::kPurgePieceBytes) at
  // a time until none is left or `deadline` passes (at least one piece).
  // Returns the bytes released.
  uint64_t PurgeLargeDue(absl::Time deadline) {
    return large_.PurgeDue(deadline);
  }

  // Returns to the OS the empty memory cached beyond the pools' retained
  // amounts. A defragmentation stopped for its deadline leaves the spans it
  // emptied cached, so that its report is answered in time; the caller
  // trims them after answering. Returns the bytes released.
  uint64_t TrimCaches();

  // Everything the pools hold from the OS.
  uint64_t resident_bytes() const;

  // Bytes a full defragmentation of every pool would return to the OS now
  // (the sum of the pools' exact reclaimable_bytes).
  uint64_t reclaimable_bytes() const;

  // Resident bytes the memory limit still allows (UINT64_MAX without one).
  uint64_t headroom_bytes() const;

  // For tests and checks (slow: asks the OS about every page of every
  // chunk): INTERNAL, naming the pool, unless the block memory each pool
  // counts as resident is exactly what the OS has resident (mincore(2)).
  absl::Status CheckResidency() const;

  // For tests and checks (slow): INTERNAL unless the slab pools' span
  // records, bitmaps and counters agree (SlabPool::CheckInvariants).
  absl::Status CheckInvariants() const;

  // Live handles whose entries the pools' handle tables keep in their sparse
  // stores (for tests and checks).
  uint64_t sparse_handles() const;

  const PoolSetOptions& options() const { return options_; }

 private:
  struct DefragRun;

  explicit PoolSet(const PoolSetOptions& options);

  absl::StatusOr<BlockInfo> AllocateIn(PoolKind pool, uint64_t size,
                                       absl::string_view data,
                                       uint64_t written_next);
  absl::StatusOr<BlockRef> Lookup(uint64_t handle);
  uint64_t Headroom() const;
  PoolStats StatsOf(PoolKind pool, bool include_classes) const;
  // Advances the current pool of `run_`; true when that pool is finished.
  bool StepPool(absl::Time deadline);
  void FinishPool(DefragOutcome outcome, absl::string_view reason);
  // Finishes the current pool as FAILED: the OS refused `failure`'s call.
  // The reason says which, and what was done before it; logged at WARNING.
  void FailPool(const absl::Status& failure);

  PoolSetOptions options_;
  SlabPool small_;
  SlabPool medium_;
  ExtentPool large_;
  std::unique_ptr<DefragRun> run_;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_POOL_SET_H_
