// ExtentPool: the large pool. Each block is a page-granular extent carved
// from a large reserved chunk. A chunk starts with its page map (the extent
// record id at the first and last page of every extent, for O(1) coalescing),
// whose pages are committed as extents' boundaries first fall in them;
// extent records live in a side array; free extents sit in size bins, kept
// apart by whether their pages are still resident ("dirty", reused first and
// without page faults) or already returned to the OS ("clean", zero pages).
// Free neighbours of the same kind are coalesced. Dirty free bytes beyond the
// retained amount, and those unused for longer than the cache decay, are
// purged a piece (kPurgePieceBytes) at a time: the first piece at once when
// a block is freed or PurgeStale runs, the rest by PurgeDue, which the owner
// calls between other work; a chunk with nothing but clean free space is
// unmapped.
// Large blocks never move: compaction purges and unmaps.
#ifndef POOLD_WORKER_POOLS_EXTENT_POOL_H_
#define POOLD_WORKER_POOLS_EXTENT_POOL_H_

#include <array>
#include <cstdint>
#include <initializer_list>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/pools/block_info.h"
#include "worker/pools/block_ref.h"
#include "worker/pools/fragmentation_stats.h"
#include "worker/pools/handle_table.h"
#include "worker/pools/os_interface.h"
#include "worker/pools/pool_analysis.h"
#include "worker/pools/reserved_array.h"
#include "worker/pools/sip_hash.h"

namespace poold::pools {

struct ExtentPoolOptions {
  // Size of a chunk; a block larger than a chunk gets a chunk of its own.
  uint64_t chunk_bytes = uint64_t{256} << 20;
  // Dirty (resident) free bytes kept for reuse before purging.
  uint64_t retained_bytes = uint64_t{64} << 20;
  uint32_t max_chunks = 1u << 14;
  uint32_t max_extents = 1u << 22;
  uint32_t max_handles = 1u << 22;
  // Keys the handles' check tags.
  SipKey handle_key;
  // Every map, commit, purge and unmap of the pool goes through it; it must
  // outlive the pool.
  OsInterface* os = &OsInterface::System();
};

// What one bounded purge step did.
struct PurgeProgress {
  bool done = false;
  uint64_t bytes_purged = 0;
  uint64_t chunks_unmapped = 0;
  // Not OK when the OS refused a purge: the step ended there (done is set),
  // the extent it was purging still dirty and counted.
  absl::Status failure;
};

class ExtentPool {
 public:
  ExtentPool() = default;
  ExtentPool(const ExtentPool&) = delete;
  ExtentPool& operator=(const ExtentPool&) = delete;
  ~ExtentPool();

  // REQUIRES: called once before use.
  absl::Status Init(const ExtentPoolOptions& options);

  // Allocates a zeroed block of `size` bytes and copies `data` to its start,
  // but for the `written_next` bytes after `data`, which may hold anything
  // (the caller writes them before anyone reads the block). Their pages from
  // the first whole one (with the page they end in) may not be resident yet:
  // the caller commits them (Commit) before it writes them;
  // resident_bytes() counts them from the start.
  // May add at most `headroom` bytes to resident_bytes(); when it would need
  // more, fails with RESOURCE_EXHAUSTED and changes nothing.
  // REQUIRES: size >= kLargeMinBytes; data.size() + written_next <= size.
  absl::StatusOr<BlockInfo> Allocate(uint64_t size, absl::string_view data,
                                     uint64_t headroom,
                                     uint64_t written_next = 0);

  // Makes the pages of bytes [offset, offset + length) of a live block
  // resident (see Allocate's written_next). NOT_FOUND for any other handle,
  // OUT_OF_RANGE past its end, and the OS's error (RESOURCE_EXHAUSTED when
  // it has no memory) when it refuses; the block stays as it was.
  absl::Status Commit(uint64_t handle, uint64_t offset, uint64_t length);

  // The bytes of a live block; NOT_FOUND for any other handle.
  absl::StatusOr<BlockRef> Lookup(uint64_t handle);

  // Frees a live block; NOT_FOUND for any other handle (nothing changes).
  // When the pool then holds more dirty free bytes than the retained
  // amount, it purges at most one piece of them at once; the rest waits for
  // PurgeDue.
  absl::Status Free(uint64_t handle);
  // Frees a live block whose bytes were written, and pages committed, only
  // up to `written` (an allocation stopped midway, see Allocate's
  // written_next): its pages after those are counted as returned, as they
  // never were resident (any that a failed Commit made resident are purged),
  // and the written ones as a freed block's. As Free when nothing was left
  // unwritten.
  // REQUIRES: the block's pages were fresh (BlockInfo::fresh_pages), and
  // data.size() + written_next was its size.
  absl::Status FreeUnfinished(uint64_t handle, uint64_t written);

  // Bytes one purge returns at most: a madvise of 4 MiB takes about 0.3 ms
  // (one of 64 MiB, 4.7 ms), so that no call holds the owner for longer
  // than a defragmentation slice.
  static constexpr uint64_t kPurgePieceBytes = uint64_t{4} << 20;

  // Whether PurgeDue has work: dirty free bytes beyond the retained amount,
  // or stale ones the last PurgeStale left for lack of time (false after a
  // purge the OS refused, until the next PurgeStale).
  bool purge_due() const {
    return !purge_blocked_ &&
           (dirty_bytes_ > options_.retained_bytes || stale_left_);
  }
  // Purges dirty free bytes beyond the retained amount (largest free
  // extents first), then those the last PurgeStale found stale, a piece at a
  // time, unmapping chunks left empty, until none is left or `deadline`
  // passes; at least one piece. Returns the bytes released. When the OS
  // refuses a purge, the extent stays dirty and counted, the refusal is
  // logged, and purge_due() stays false until the next PurgeStale.
  uint64_t PurgeDue(absl::Time deadline);

  PoolStats Stats() const;
  PoolAnalysis Analyze() const;
  uint64_t resident_bytes() const;

  // Resident bytes of the chunks (extents in use, unpurged free extents and
  // page maps) as counted; and as the OS reports them (mincore(2), for tests
  // and checks: slow). The two are equal.
  uint64_t chunk_bytes() const {
    return used_bytes_ + dirty_bytes_ + header_bytes_;
  }
  uint64_t ChunkBytesResidentPerOs() const;

  const HandleTable& handles() const { return handles_; }

  // Purges dirty free extents freed at least `age` ago (unmapping chunks left
  // empty), a piece at a time, until none is left or `deadline` passes
  // (at least one piece): what is left waits for PurgeDue. Returns the
  // bytes released.
  uint64_t PurgeStale(absl::Time now, absl::Duration age,
                      absl::Time deadline = absl::InfiniteFuture());

  // Purges dirty free extents (unmapping chunks left empty) until none is
  // left or `deadline` passes, then compacts the handle table. Call
  // StartPurge() first, then PurgeStep() until it is done (or failed).
  void StartPurge() { handles_.StartCompaction(); }
  PurgeProgress PurgeStep(absl::Time deadline);

 private:
  friend class ExtentPoolPeer;  // tests

  enum State : uint8_t { kNone = 0, kUsed, kDirty, kClean };
  static constexpr int kBins = 128;

  struct Extent {
    uint64_t size;  // requested bytes (used extents)
    uint32_t chunk;
    uint32_t first;  // first page, counted from the chunk base
    uint32_t pages;
    uint32_t prev;       // bin list links, record id + 1 (0 = none)
    uint32_t next;       // also links unused records
    uint32_t cached_at;  // dirty: when freed, ms since the pool started
    uint8_t state;
    uint8_t bin;
  };

  struct Chunk {
    char* base;
    uint32_t pages;         // including the header
    uint32_t header_pages;  // the page map
    uint32_t used;          // used extents
    uint32_t free_extents;
    // Page-map pages committed: a bit per page for maps of at most 64
    // pages; larger maps (chunks of one huge block) are committed whole.
    uint64_t map_committed;
    uint32_t map_pages;  // how many
    uint32_t unused;
  };
  static constexpr uint32_t kLazyMapPages = 64;

  struct Bins {
    std::array<uint32_t, kBins> heads{};
    std::array<uint64_t, 2> nonempty{};
  };

  static int BinFor(uint64_t pages);
  uint32_t* PageMap(uint32_t chunk) {
    return reinterpret_cast<uint32_t*>(chunks_[chunk].base);
  }
  // The page map's page holding the entry of chunk page `page`.
  uint32_t MapPageOf(uint32_t page) const {
    return static_cast<uint32_t>(page * sizeof(uint32_t) / page_);
  }
  bool MapPageCommitted(const Chunk& c, uint32_t map_page) const {
    return map_page >= kLazyMapPages || ((c.map_committed >> map_page) & 1);
  }
  // The map entry of chunk page `page` (0 where none was written: such
  // pages of the map are never read, so they are not made resident).
  uint32_t MapEntry(uint32_t chunk, uint32_t page) {
    if (!MapPageCommitted(chunks_[chunk], MapPageOf(page))) return 0;
    return PageMap(chunk)[page];
  }
  // Writes map entry `page` of `chunk`, committing its map page first.
  void SetMapEntry(uint32_t chunk, uint32_t page, uint32_t value);
  // Bytes SetMapEntry would commit for entries `pages` (0 = none) of chunk.
  uint64_t MapGrowthBytes(uint32_t chunk,
                          std::initializer_list<uint64_t> pages) const;
  Bins& BinsOf(uint8_t state) { return state == kDirty ? dirty_ : clean_; }
  const Bins& BinsOf(uint8_t state) const {
    return state == kDirty ? dirty_ : clean_;
  }

  absl::StatusOr<uint32_t> NewRecord();
  void FreeRecord(uint32_t id);
  // Takes the block of handle-table entry `index` out of use (handle,
  // counters); returns its extent, which the caller frees.
  uint32_t Release(uint32_t index);
  // Frees extent `id` (dirty): coalesces it and purges past the retained
  // amount.
  void InsertFreed(uint32_t id);
  uint64_t NewRecordGrowthBytes() const;
  void SetBoundary(uint32_t id);
  void InsertFree(uint32_t id, uint8_t state);
  void RemoveFree(uint32_t id);
  // Merges a free extent with free neighbours of the same state; returns
  // the id of the merged extent (which is in its bin).
  uint32_t Coalesce(uint32_t id);
  // A free extent of `state` with at least `pages` pages, or 0 (id + 1).
  uint32_t FindFree(uint64_t pages, uint8_t state) const;
  static uint64_t HeaderPagesFor(uint64_t total_pages);
  uint64_t ChunkPagesFor(uint64_t pages) const;
  absl::StatusOr<uint32_t> MapChunk(uint64_t pages);
  // Unmaps `chunk` if it holds nothing (one clean free extent); the OS's
  // error when it refuses (the chunk then stays mapped, in service).
  absl::Status UnmapChunkIfEmpty(uint32_t chunk);
  // The same, logging a refusal.
  void MaybeUnmapChunk(uint32_t chunk);
  // When the OS refuses the purge, nothing changes (the extent stays dirty,
  // resident and counted) and its error is returned.
  absl::Status PurgeExtent(uint32_t id, PurgeProgress* progress);
  // Purges the first kPurgePieceBytes of dirty extent `id` (all of it when
  // smaller), splitting off the rest, which stays dirty; as PurgeExtent.
  absl::Status PurgePiece(uint32_t id, PurgeProgress* progress);
  // The dirty free extent in the highest bin (one of the largest); the pool
  // must have one.
  uint32_t LargestDirty() const;
  // A dirty free extent freed at least `age_ms` before `now_ms` (id + 1),
  // or 0.
  uint32_t FirstStale(uint32_t now_ms, uint32_t age_ms) const;
  // Purges pieces of those extents until none is left (stale_left_
  // cleared) or `deadline` passes (stale_left_ set); false when the OS
  // refused one (logged; purge_blocked_ set).
  bool PurgeStalePieces(uint32_t now_ms, uint32_t age_ms, absl::Time deadline);
  uint64_t SideMetadataBytes() const;
  uint64_t LargestFree() const;

  uint32_t MillisSinceStart(absl::Time now) const {
    return static_cast<uint32_t>(absl::ToInt64Milliseconds(now - start_));
  }

  ExtentPoolOptions options_;
  absl::Time start_;
  uint64_t page_ = 4096;
  ReservedArray<Extent> extents_;
  uint32_t free_records_ = 0;  // id + 1 of the first unused record
  ReservedArray<Chunk> chunks_;
  uint32_t chunk_slots_used_ = 0;
  Bins dirty_;
  Bins clean_;
  uint64_t blocks_ = 0;
  uint64_t live_bytes_ = 0;
  uint64_t used_bytes_ = 0;
  uint64_t dirty_bytes_ = 0;
  uint64_t header_bytes_ = 0;
  uint64_t chunks_mapped_ = 0;
  uint64_t free_extents_ = 0;
  // Set by a purge the OS refused outside a defragmentation; cleared by
  // PurgeStale.
  bool purge_blocked_ = false;
  // Stale extents the last PurgeStale left (freed at least stale_age_ms_
  // before stale_now_ms_).
  bool stale_left_ = false;
  uint32_t stale_now_ms_ = 0;
  uint32_t stale_age_ms_ = 0;
  HandleTable handles_;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_EXTENT_POOL_H_
