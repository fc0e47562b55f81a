// SlabPool: the small or the medium pool. Blocks live in slots of size
// classes; a span is a page-aligned run of equal slots carved from a large
// reserved chunk. Per span, an occupancy bitmap (at the span's head in the
// small pool, in a side array in the medium pool) and a 24-byte record; per
// block, one handle-table entry naming its span, slot and exact size.
//
// A span commits a prefix of its pages: allocation takes the lowest free slot
// of a span, and the prefix grows (doubling, by at least kGrowBytes) when a
// slot past it is taken. A span of a sparse class therefore holds little more
// than its blocks, and the tail of a span past its class's last slot is never
// committed.
//
// Policy: allocation takes the fullest non-full span of the class (spans are
// kept in eighths of fullness); a span that empties goes to a free-span cache
// shared by all classes (most recently freed first); beyond the retained
// amount the oldest cached span is purged (MADV_DONTNEED); a chunk whose spans
// are all purged is unmapped. New spans come from the cache, then from the
// lowest purged span, then from a new chunk.
//
// Compaction (see SlabCompactor) leaves each class in its fewest spans: all
// full but one, the "tail", whose blocks sit in its lowest slots and whose
// pages past them go back to the OS. A class of a few blocks can instead
// move them into a larger class's spans (a guest, see PlanCompaction) and
// keep no page of its own. Spans being emptied or packed are marked
// evacuating and take no new allocations.
#ifndef POOLD_WORKER_POOLS_SLAB_POOL_H_
#define POOLD_WORKER_POOLS_SLAB_POOL_H_

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/pools/block_info.h"
#include "worker/pools/block_ref.h"
#include "worker/pools/fragmentation_stats.h"
#include "worker/pools/handle_table.h"
#include "worker/pools/index_set.h"
#include "worker/pools/os_interface.h"
#include "worker/pools/os_memory.h"
#include "worker/pools/pool_analysis.h"
#include "worker/pools/pool_kind.h"
#include "worker/pools/reserved_array.h"
#include "worker/pools/sip_hash.h"
#include "worker/pools/size_classes.h"

namespace poold::pools {

struct SlabPoolOptions {
  PoolKind pool = PoolKind::kSmall;  // kSmall or kMedium
  uint64_t span_bytes = 64 * 1024;
  uint32_t spans_per_chunk = 256;
  uint32_t max_spans = 1u << 20;  // at most 2^20 (span ids are 20 bits)
  // Empty spans kept resident for reuse before they go back to the OS.
  uint64_t retained_bytes = 4 << 20;
  bool bitmap_in_span = true;
  uint32_t max_handles = 1u << 30;
  // Keys the handles' check tags.
  SipKey handle_key;
  // Every map, commit, purge and unmap of the pool goes through it; it must
  // outlive the pool.
  OsInterface* os = &OsInterface::System();
};

class SlabPool {
 public:
  static constexpr uint32_t kNoSpan = 0xFFFFFFFF;

  SlabPool() = default;
  SlabPool(const SlabPool&) = delete;
  SlabPool& operator=(const SlabPool&) = delete;
  ~SlabPool();

  // REQUIRES: called once before use.
  absl::Status Init(const SlabPoolOptions& options);

  // Allocates a zeroed block of `size` bytes and copies `data` to its start.
  // May add at most `headroom` bytes to resident_bytes(); when it would need
  // more, fails with RESOURCE_EXHAUSTED and changes nothing.
  // REQUIRES: size in the pool's range; data.size() <= size.
  absl::StatusOr<BlockInfo> Allocate(uint64_t size, absl::string_view data,
                                     uint64_t headroom);

  // The bytes of a live block; NOT_FOUND for any other handle.
  absl::StatusOr<BlockRef> Lookup(uint64_t handle);

  // Hints the CPU to fetch what a Lookup of `handle` soon will read, in two
  // steps some operations apart: kEntry fetches its handle-table entry;
  // kBlock (once the entry has arrived) the block's first bytes. Any
  // handle is accepted, nothing changes, and nothing faults.
  enum class PrefetchStep { kEntry, kBlock };
  void Prefetch(uint64_t handle, PrefetchStep step) const;

  // Frees a live block; NOT_FOUND for any other handle (nothing changes).
  absl::Status Free(uint64_t handle);

  // Counters of the pool (and of each class in use when asked).
  PoolStats Stats(bool include_classes) const;

  // Stats plus what a full compaction would move and reclaim now.
  PoolAnalysis Analyze() const;

  uint64_t resident_bytes() const;

  // Committed bytes of the spans in use and cached, as counted; and the
  // resident bytes of the pool's chunks as the OS reports them (mincore(2),
  // for tests and checks: slow). The two are equal.
  uint64_t span_bytes() const { return span_bytes_in_use_ + dirty_bytes_; }
  uint64_t SpanBytesResidentPerOs() const;

  // For tests and checks (slow: walks every span): INTERNAL, saying what is
  // wrong, unless every span's records agree with its bitmap and its class's
  // counters (live blocks, committed bytes and slots, lists and states).
  absl::Status CheckInvariants() const;

  // Returns every cached empty span and empty handle-table page to the OS.
  // Returns the bytes released (a span whose purge failed stays cached and
  // is not counted).
  uint64_t PurgeCaches();

  // Returns cached empty spans that have been cached for at least `age` to
  // the OS (unless a compaction is running; it purges them itself). Returns
  // the bytes released. A failed purge is logged; its span stays cached, as
  // if just emptied, and the rest waits for the next call.
  uint64_t PurgeStaleCachedSpans(absl::Time now, absl::Duration age);

  // Returns cached empty spans to the OS until the cache holds no more than
  // the retained amount (a compaction stopped without trimming leaves more).
  // Returns the bytes released; a failed purge keeps its span cached.
  uint64_t TrimCache();

  // Returns cached empty spans to the OS, neighbours in one call, until none
  // is left (true) or `deadline` passes (false). Adds the spans purged to
  // `*purged`. When the OS refuses a purge, the spans not yet purged stay
  // cached (resident, counted) and the error is returned.
  absl::StatusOr<bool> PurgeCachedSpans(absl::Time deadline, uint64_t* purged);

  // A span's committed prefix doubles when it grows, by at least this much
  // (and at most to the end of its class's slots), so that filling a span
  // costs a few system calls (five for a 256 KiB span), not one per page.
  static constexpr uint32_t kGrowBytes = 16 << 10;

  // System calls the pool has made on spans so far (commits and purges);
  // a compaction looks at the clock after each one.
  uint64_t span_os_calls() const { return span_os_calls_; }

  PoolKind pool() const { return options_.pool; }
  const SizeClasses& classes() const { return *classes_; }
  const HandleTable& handles() const { return handles_; }

 private:
  friend class SlabCompactor;
  friend class SlabPoolPeer;  // tests

  // Lists a span can be on. Active spans sit in one fullness bucket per
  // eighth, or in the full list; evacuating spans in their class's list.
  static constexpr uint8_t kBuckets = 8;
  static constexpr uint8_t kFullList = 8;
  static constexpr uint8_t kEvacuatingList = 9;
  static constexpr uint8_t kListsPerClass = 10;

  enum SpanState : uint8_t {
    kUnmapped = 0,
    kClean,
    kDirty,
    kActive,
    kEvacuating
  };

  // Zero bytes are a valid unmapped record.
  struct Span {
    uint32_t live;
    uint32_t prev;  // list links, span id + 1 (0 = none)
    uint32_t next;
    // Active: first bitmap word that may have a free bit. Cached: when it was
    // cached, in milliseconds since the pool started.
    uint32_t hint;
    // Bytes committed from the span's start (a whole number of pages);
    // resident while the span is in use or cached.
    uint32_t committed;
    uint16_t class_index;
    uint8_t state;
    uint8_t list;
  };
  static_assert(sizeof(Span) == 24);

  struct Chunk {
    char* base;
    uint32_t in_use;  // active, evacuating or dirty spans
    uint32_t unused;
  };

  struct ClassCounters {
    uint64_t blocks = 0;
    uint64_t live_bytes = 0;
    uint32_t spans = 0;  // active + evacuating
    uint32_t full_spans = 0;
    // Sums over the class's spans of their committed bytes, and of the slots
    // that lie wholly inside them.
    uint64_t committed_bytes = 0;
    uint64_t committed_slots = 0;
    // Blocks smaller than the class's own (guests moved in by a
    // compaction), and a bound below their sizes (the smallest moved in
    // since there were none): the class can be a guest only of classes
    // whose slots are at most a payload's delta above it.
    uint64_t guests = 0;
    uint32_t guest_floor = 0;
  };

  // What a full compaction would leave of one class.
  struct ClassCompaction {
    // Spans kept: all full but the tail, which holds `tail_blocks` blocks in
    // its lowest slots (tail_blocks == slots: no partial span). A guest
    // class keeps no span.
    uint64_t keep = 0;
    uint64_t tail_blocks = 0;
    // Committed bytes after (a host's with its guests' blocks); and what
    // the class gives back: now minus after, when positive (else the class
    // is left alone and this is 0, unless it hosts guests). A host's gain
    // is what it commits beyond its layout after (a host never grows); a
    // guest's is its committed bytes.
    uint64_t committed_after = 0;
    uint64_t gain = 0;
    // The class whose spans end holding this class's blocks: itself, or a
    // larger class (its host) when this class is a guest.
    uint32_t host = 0;
    // Blocks of guest classes this class takes in (counted in keep and
    // tail_blocks).
    uint64_t guest_blocks = 0;
    // All its blocks go to its host.
    bool guest = false;
    // Planned: spans to mark (gain > 0, or blocks to move in or out).
    bool planned() const { return gain > 0 || guest_blocks > 0 || guest; }
  };

  // Handle-table payload: span (20 bits) | slot | size delta (slot size
  // minus block size). The slot is as wide as the pool's classes need, the
  // delta takes the rest of the table's 39 bits (small: 13 and 6 bits;
  // medium: 8 and 11), so that a block can live in a slot up to
  // max_guest_delta_ bytes larger than itself (a guest, see PlanCompaction).
  static constexpr int kSpanBits = 20;
  uint64_t Pack(uint32_t span, uint32_t slot, uint32_t delta) const {
    return uint64_t{span} | (uint64_t{slot} << kSpanBits) |
           (uint64_t{delta} << delta_shift_);
  }
  static uint32_t SpanOf(uint64_t payload) {
    return payload & ((1u << kSpanBits) - 1);
  }
  uint32_t SlotOf(uint64_t payload) const {
    return (payload >> kSpanBits) & slot_mask_;
  }
  uint32_t DeltaOf(uint64_t payload) const {
    return static_cast<uint32_t>(payload >> delta_shift_);
  }

  char* SpanBase(uint32_t id) const {
    return chunks_[id / options_.spans_per_chunk].base +
           uint64_t{id % options_.spans_per_chunk} * options_.span_bytes;
  }
  uint64_t* Bitmap(uint32_t id);
  const uint64_t* Bitmap(uint32_t id) const;
  char* SlotAddress(uint32_t id, const SizeClass& c, uint32_t slot) const {
    return SpanBase(id) + c.header_bytes + uint64_t{slot} * c.slot_bytes;
  }
  // Offset from the span's start of the end of `slots` slots.
  static uint64_t SlotsEnd(const SizeClass& c, uint64_t slots) {
    return c.header_bytes + slots * c.slot_bytes;
  }
  // Slots of the class wholly inside `committed` bytes.
  static uint32_t SlotsWithin(const SizeClass& c, uint64_t committed);
  // Slots in the fewest pages that hold `blocks` blocks of the class: a
  // packed span keeps its blocks below this index.
  static uint32_t PackedSlots(const SizeClass& c, uint64_t blocks) {
    return SlotsWithin(c, OsMemory::RoundUpToPage(SlotsEnd(c, blocks)));
  }
  // The committed size a span grows to when it must hold `end` bytes.
  static uint32_t GrowthTarget(const SizeClass& c, uint32_t committed,
                               uint64_t end);

  // List helpers. `list` is per class except the dirty list (class ignored).
  uint32_t& ListHead(uint32_t class_index, uint8_t list) {
    return heads_[class_index * kListsPerClass + list];
  }
  void ListPush(uint32_t id, uint8_t list);
  void ListRemove(uint32_t id);
  void PushDirty(uint32_t id);
  void RemoveDirty(uint32_t id);
  uint8_t ActiveListFor(const Span& span) const;
  // Moves an active span to the list its fullness asks for.
  void Refile(uint32_t id);

  // The span the next block of the class goes to (fullest non-full, not
  // evacuating), or kNoSpan.
  uint32_t FindAllocSpan(uint32_t class_index) const;
  // Bytes a new span for the class would add to resident memory now.
  uint64_t NewSpanGrowthBytes(uint32_t class_index) const;
  // Bytes taking the next slot of span `id` must commit (at least).
  uint64_t TakeSlotGrowthBytes(uint32_t id);
  // Grows span `id`'s committed prefix to hold `end` bytes: by a growth step
  // (GrowthTarget), but by no more than `max_growth` beyond what `end`
  // needs, so that a memory limit is not spent on room not yet used. When
  // the OS refuses the commit, nothing changes and its error is returned.
  absl::Status GrowSpan(uint32_t id, uint64_t end,
                        uint64_t max_growth = UINT64_MAX);
  // Returns span `id`'s pages past `end` (rounded up to a page) to the OS.
  // When the OS refuses, nothing changes and its error is returned.
  absl::Status TrimSpan(uint32_t id, uint64_t end);
  // Sets the committed bytes of in-use span `id`, keeping its class's
  // counters and the pool's total exact (the memory itself is the
  // caller's business).
  void SetCommitted(uint32_t id, uint32_t committed);
  // What a full compaction would leave of the class with `extra` more
  // blocks (from counters only; `host` and `guest_blocks` are not set).
  ClassCompaction OwnCompaction(uint32_t class_index, uint64_t extra) const;
  // What a full compaction would leave of every class (from counters only).
  //
  // A sparse class ends in a page of its own, mostly empty. So a class can
  // move all its blocks into the spans of a larger class (its host) and
  // release every span it has: a guest. It does so only where the free
  // slots of the pages its host keeps for its own blocks take them: a merge
  // never commits a page.
  // The host keeps its number of spans at most, a guest's blocks keep their
  // exact sizes (the payload's delta), and a slot is at most
  // max_guest_delta_ bytes larger than its block (its guests' blocks
  // included). Classes are taken smallest first, each to the smallest class
  // that can take it; a host can then move on into a larger class with its
  // guests, in passes until nothing merges.
  //
  // With `hosts` (a plan's hosts per class), the merges are those instead of
  // new ones: a compaction decides them once, at its start, and plans each
  // class's layout from the counters when it comes to it. A merge that no
  // longer fits the counters is left out.
  void PlanCompaction(std::vector<ClassCompaction>* plan,
                      const std::vector<uint32_t>* hosts = nullptr) const;
  // A bound below the sizes of the class's blocks, its guests' included.
  uint32_t GuestFloor(uint32_t class_index) const;
  // The class's spans as (live, id), the first `release` of them those a
  // full compaction empties and the next one its tail (both in order of
  // (live, id), the rest unordered).
  void RankSpans(uint32_t class_index, uint64_t release,
                 std::vector<std::pair<uint32_t, uint32_t>>* spans) const;
  // The lowest free slot of active or evacuating span `id` (updates the
  // search hint). REQUIRES: the span is not full.
  uint32_t LowestFreeSlot(uint32_t id);
  // The highest live slot of span `id`. REQUIRES: span.live > 0.
  uint32_t HighestLiveSlot(uint32_t id) const;
  // Live slots of span `id` at index `first` or above.
  uint32_t LiveSlotsFrom(uint32_t id, uint32_t first) const;
  // Takes a span for the class (cache, purged span, new chunk). On error
  // (the OS refused memory) nothing changes.
  absl::StatusOr<uint32_t> NewSpan(uint32_t class_index);
  absl::Status MapChunk();
  // Unmaps an empty chunk; when the OS refuses, it stays mapped and in use.
  void UnmapChunk(uint32_t chunk);
  // Takes the lowest free slot of a span, committing its pages (growing by at
  // most `max_growth` beyond what the slot needs). REQUIRES: span not full.
  // When the OS refuses the pages, nothing changes and its error is
  // returned.
  absl::StatusOr<uint32_t> TakeSlot(uint32_t id,
                                    uint64_t max_growth = UINT64_MAX);
  // Clears a slot's bit and updates counters; releases the span when empty.
  void ReleaseSlot(uint32_t id, uint32_t slot, uint64_t size);
  // An active or evacuating span with no live slot leaves its class for the
  // free-span cache; beyond the retained amount the oldest cached spans are
  // purged (unless a compaction holds them for one batched purge).
  void RetireSpan(uint32_t id);
  // Marks a cached span purged (its memory already returned) and unmaps its
  // chunk when nothing else in it is held.
  void MarkPurged(uint32_t id);
  // Purges the oldest cached spans beyond the retained amount (stopping at
  // the first purge the OS refuses).
  void TrimCachedSpans();
  // Purges cached span `id` (already off the cache list) and marks it
  // purged; when the OS refuses, logs it and caches the span again.
  absl::Status PurgeSpan(uint32_t id);
  uint64_t SideMetadataBytes() const;
  uint32_t MillisSinceStart(absl::Time now) const {
    return static_cast<uint32_t>(absl::ToInt64Milliseconds(now - start_));
  }

  SlabPoolOptions options_;
  absl::Time start_;
  uint32_t slot_mask_ = 0;
  int delta_shift_ = 0;
  // Largest slot size minus block size a payload can hold.
  uint32_t max_guest_delta_ = 0;
  // Per class, the largest class that may host its blocks (itself at
  // least), and its smallest block size.
  std::vector<uint32_t> max_host_;
  std::vector<uint32_t> min_block_;
  // Temporary bookkeeping of a running compaction, counted as metadata.
  uint64_t transient_bytes_ = 0;
  // Set by a running compaction: emptied spans stay cached until its purge.
  bool hold_cached_spans_ = false;
  std::unique_ptr<SizeClasses> classes_;
  std::vector<ClassCounters> counters_;
  std::vector<uint32_t> heads_;
  uint32_t dirty_head_ = 0;  // span id + 1; most recently freed first
  uint32_t dirty_tail_ = 0;
  uint32_t dirty_spans_ = 0;
  uint64_t dirty_bytes_ = 0;        // committed bytes of the cached spans
  uint64_t span_bytes_in_use_ = 0;  // committed bytes of the spans in use
  uint64_t span_os_calls_ = 0;
  uint32_t chunks_mapped_ = 0;
  uint32_t chunk_slots_used_ = 0;
  ReservedArray<Span> spans_;
  ReservedArray<Chunk> chunks_;
  ReservedArray<uint64_t> side_bitmaps_;  // medium pool only
  IndexSet clean_;                        // purged spans in mapped chunks
  HandleTable handles_;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_SLAB_POOL_H_
