// SlabPool: the small or the medium pool. Blocks live in slots of size
// classes; a span is a page-aligned run of equal slots carved from a large
// reserved chunk. Per span, an occupancy bitmap (at the span's head in the
// small pool, in a side array in the medium pool) and a 20-byte record; per
// block, one 8-byte handle-table entry naming its span, slot and exact size.
//
// A span commits only the pages its class uses (header and slots); the rest
// of it stays untouched address space, so classes that divide the span badly
// waste no memory and spans can be small.
//
// Policy: allocation takes the fullest non-full span of the class (spans are
// kept in eighths of fullness); a span that empties goes to a free-span cache
// shared by all classes (most recently freed first); beyond the retained
// amount the oldest cached span is purged (MADV_DONTNEED); a chunk whose spans
// are all purged is unmapped. New spans come from the cache, then from the
// lowest purged span, then from a new chunk.
//
// Compaction (see SlabCompactor) marks spans as evacuating: they take no new
// allocations, and their blocks are moved into the fullest spans.
#ifndef POOLD_WORKER_POOLS_SLAB_POOL_H_
#define POOLD_WORKER_POOLS_SLAB_POOL_H_

#include <cstdint>
#include <memory>
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
#include "worker/pools/pool_analysis.h"
#include "worker/pools/pool_kind.h"
#include "worker/pools/reserved_array.h"
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
  uint64_t handle_key = 0;
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

  // Frees a live block; NOT_FOUND for any other handle (nothing changes).
  absl::Status Free(uint64_t handle);

  // Counters of the pool (and of each class in use when asked).
  PoolStats Stats(bool include_classes) const;

  // Stats plus what a full compaction would move and reclaim now.
  PoolAnalysis Analyze() const;

  uint64_t resident_bytes() const;

  // Returns every cached empty span and empty handle-table page to the OS.
  // Returns the bytes released.
  uint64_t PurgeCaches();

  // Returns cached empty spans that have been cached for at least `age` to
  // the OS (unless a compaction is running; it purges them itself). Returns
  // the bytes released.
  uint64_t PurgeStaleCachedSpans(absl::Time now, absl::Duration age);

  // Returns cached empty spans to the OS, neighbours in one call, until none
  // is left (true) or `deadline` passes (false). Adds the spans purged to
  // `*purged`.
  bool PurgeCachedSpans(absl::Time deadline, uint64_t* purged);

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
    uint16_t class_index;
    uint8_t state;
    uint8_t list;
  };
  static_assert(sizeof(Span) == 20);

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
  };

  // Handle-table payload: span (20 bits) | slot (14 bits) | size delta (12).
  static uint64_t Pack(uint32_t span, uint32_t slot, uint32_t delta) {
    return uint64_t{span} | (uint64_t{slot} << 20) | (uint64_t{delta} << 34);
  }
  static uint32_t SpanOf(uint64_t payload) { return payload & 0xFFFFF; }
  static uint32_t SlotOf(uint64_t payload) { return (payload >> 20) & 0x3FFF; }
  static uint32_t DeltaOf(uint64_t payload) { return (payload >> 34) & 0xFFF; }

  char* SpanBase(uint32_t id) const {
    return chunks_[id / options_.spans_per_chunk].base +
           uint64_t{id % options_.spans_per_chunk} * options_.span_bytes;
  }
  uint64_t* Bitmap(uint32_t id);
  char* SlotAddress(uint32_t id, const SizeClass& c, uint32_t slot) const {
    return SpanBase(id) + c.header_bytes + uint64_t{slot} * c.slot_bytes;
  }

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
  // Committed bytes of a span of the class.
  uint64_t Committed(uint32_t class_index) const {
    return classes_->Get(class_index).committed_bytes;
  }
  // Takes a span for the class (cache, purged span, new chunk).
  absl::StatusOr<uint32_t> NewSpan(uint32_t class_index);
  absl::Status MapChunk();
  void UnmapChunk(uint32_t chunk);
  // Takes a free slot in an active span. REQUIRES: span not full.
  uint32_t TakeSlot(uint32_t id);
  // Clears a slot's bit and updates counters; releases the span when empty.
  void ReleaseSlot(uint32_t id, uint32_t slot, uint64_t size);
  // An active or evacuating span with no live slot leaves its class for the
  // free-span cache; beyond the retained amount the oldest cached spans are
  // purged (unless a compaction holds them for one batched purge).
  void RetireSpan(uint32_t id);
  // Marks a cached span purged (its memory already returned) and unmaps its
  // chunk when nothing else in it is held.
  void MarkPurged(uint32_t id);
  // Purges the oldest cached spans beyond the retained amount.
  void TrimCachedSpans();
  void PurgeSpan(uint32_t id);
  uint64_t SideMetadataBytes() const;
  uint32_t MillisSinceStart(absl::Time now) const {
    return static_cast<uint32_t>(absl::ToInt64Milliseconds(now - start_));
  }

  SlabPoolOptions options_;
  absl::Time start_;
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
  uint64_t dirty_bytes_ = 0;  // committed bytes of the cached spans
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
