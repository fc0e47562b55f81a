// HandleTable: the stable names of one pool's blocks. A handle is 64 bits:
// a table index, the pool and a check tag. The entry behind it
// holds a 39-bit payload that the pool uses to find the block (span and slot,
// or extent record) and that compaction rewrites when the block moves.
//
// Handle layout (bit 0 = least significant):
//   0..29 index | 30..31 pool | 32..63 check tag
// The check tag is the keyed SipHash-1-3 of the index, the pool and the
// entry's generation (kept in the table, not in the handle) under a random
// per-process 128-bit key. A stale handle (its entry has a new generation), a
// forged one, or one from an earlier poold process is rejected, and without
// the key a tag cannot be derived from the handles a client holds: guessing
// one takes about 2^31 tries.
//
// An entry is 7 bytes: 585 of them fill a 4 KiB page, committed on demand.
// An index is page * 1024 + slot (slot < 585), so that finding an entry
// takes shifts, not a division.
// Freed entries are reused lowest page first (to keep pages dense), with a
// new generation; an entry whose generation is exhausted is retired for good.
//
// Compaction of the table (Compact) gives back what scattered survivors pin:
// pages with no live entry are returned to the OS, and the live entries of
// pages holding at most kSparseMaxLive of them move into a sparse store (9
// bytes each, sorted by slot) so that their page can go back to the OS too.
// Such a "sparse" page takes no new entries until an insertion finds no room
// elsewhere and brings it back. Handles never change: a lookup that misses
// the page finds the entry in the store.
#ifndef POOLD_WORKER_POOLS_HANDLE_TABLE_H_
#define POOLD_WORKER_POOLS_HANDLE_TABLE_H_

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/pools/index_set.h"
#include "worker/pools/os_interface.h"
#include "worker/pools/pool_kind.h"
#include "worker/pools/prefetch.h"
#include "worker/pools/reserved_array.h"
#include "worker/pools/sip_hash.h"

namespace poold::pools {

class HandleTable {
 public:
  static constexpr uint32_t kEntryBytes = 7;
  static constexpr uint32_t kPageBytes = 4096;
  static constexpr uint32_t kEntriesPerPage = kPageBytes / kEntryBytes;  // 585
  static constexpr int kSlotBits = 10;
  static constexpr uint32_t kIndexesPerPage = 1u << kSlotBits;
  static_assert(kEntriesPerPage <= kIndexesPerPage);
  static constexpr int kPayloadBits = 39;
  static constexpr uint64_t kMaxPayload = (uint64_t{1} << kPayloadBits) - 1;
  static constexpr uint32_t kMaxIndexBits = 30;
  // Pages with at most this many live entries move into the sparse store
  // when the table is compacted: 9 bytes each there, against a 4 KiB page
  // for 256 entries or fewer (16 bytes or more each).
  static constexpr uint32_t kSparseMaxLive = 256;
  static constexpr uint32_t kSparseRecordBytes = 9;

  HandleTable() = default;
  HandleTable(const HandleTable&) = delete;
  HandleTable& operator=(const HandleTable&) = delete;
  ~HandleTable();

  // Sets up a table for `pool` holding at most `max_entries` handles
  // (rounded up to whole pages; at most 2^20 pages). `key` keys the check
  // tags. The table's memory goes through `os`, which must outlive it.
  absl::Status Init(PoolKind pool, uint32_t max_entries, const SipKey& key,
                    OsInterface& os = OsInterface::System());

  // The pool a handle names, or nullopt if its pool bits are invalid.
  static std::optional<PoolKind> PoolOf(uint64_t handle);

  struct Inserted {
    uint64_t handle;  // never 0
    uint32_t index;
  };
  // Stores `payload` (<= kMaxPayload) in a free entry and returns the new
  // handle and its entry index. RESOURCE_EXHAUSTED when the table is full.
  absl::StatusOr<Inserted> Insert(uint64_t payload);

  // Bytes the next Insert would commit (a page, or 0).
  uint64_t InsertGrowthBytes() const;

  // The page of an index.
  static uint32_t PageOf(uint32_t index) { return index >> kSlotBits; }

  // The entry index of a live handle of this table; nullopt for an unknown,
  // freed, forged or other pool's handle.
  std::optional<uint32_t> Find(uint64_t handle) const {
    const uint32_t index = static_cast<uint32_t>(handle & kIndexMask);
    if (!InTable(index) ||
        ((handle >> kMaxIndexBits) & 3) != PoolIndex(pool_)) {
      return std::nullopt;
    }
    const uint64_t entry = DenseEntry(index);
    if (!(entry & kLiveBit)) return FindSparse(handle);
    if (MakeHandle(index, GenerationOf(entry)) != handle) return std::nullopt;
    return index;
  }

  // The handle of the live entry that `handle`'s index and pool name,
  // whatever its tag; nullopt when that entry is not live.
  std::optional<uint64_t> LiveHandleAt(uint64_t handle) const;

  // Payload of a live entry. REQUIRES: IsLive(index).
  uint64_t Payload(uint32_t index) const {
    const uint64_t entry = DenseEntry(index);
    if (entry & kLiveBit) [[likely]]
      return (entry >> 1) & kMaxPayload;
    return (SparseEntry(index) >> 1) & kMaxPayload;
  }
  // Hints the CPU to fetch an entry soon to be used (never faults).
  void Prefetch(uint32_t index) const {
    __builtin_prefetch(EntryAddress(index), 1);
  }
  // Hints the CPU to fetch the entry `handle` names, if it is one of this
  // table's (any handle: nothing is read, and a prefetch never faults).
  void PrefetchHandle(uint64_t handle) const {
    const uint32_t index = static_cast<uint32_t>(handle & kIndexMask);
    if (InTable(index)) PrefetchForRead(EntryAddress(index));
  }
  // The payload of the live entry in the page that `handle`'s index names,
  // without checking the rest of the handle (its generation and tag): a
  // hint for prefetching, never an answer to a client. nullopt when the
  // index is outside the table or its entry is not live in its page.
  std::optional<uint64_t> UncheckedPayload(uint64_t handle) const {
    const uint32_t index = static_cast<uint32_t>(handle & kIndexMask);
    if (!InTable(index)) return std::nullopt;
    const uint64_t entry = DenseEntry(index);
    if (!(entry & kLiveBit)) return std::nullopt;
    return (entry >> 1) & kMaxPayload;
  }
  // Rewrites the payload of a live entry (the block moved).
  void SetPayload(uint32_t index, uint64_t payload) {
    DCHECK_LE(payload, kMaxPayload);
    const uint64_t entry = DenseEntry(index);
    if (entry & kLiveBit) [[likely]] {
      SetDenseEntry(index, (entry & ~(kMaxPayload << 1)) | (payload << 1));
      return;
    }
    SetSparsePayload(index, payload);
  }

  // True when `index` is a live entry (safe for any index).
  bool IsLive(uint32_t index) const;

  // Frees a live entry: its handle never resolves again.
  // REQUIRES: IsLive(index).
  void Remove(uint32_t index);

  // One past the highest index of any page ever opened, for scans.
  uint32_t index_end() const { return pages_used_ << kSlotBits; }
  // Calls f(index, payload) for every live entry of page `page`, in index
  // order, wherever the entries are kept.
  template <typename F>
  void ForEachLive(uint32_t page, F&& f) const;

  // Starts a compaction over: one left unfinished by an earlier caller goes
  // on from the first page, so that it also takes the pages that changed
  // meanwhile.
  void StartCompaction();
  // Compacts the table as described above, in steps, until done (true) or
  // `deadline` passes (false; the next call goes on). Adds the bytes it
  // returned to the OS to `*freed` (gross: a pass also commits pages for
  // the store it fills).
  bool Compact(absl::Time deadline, uint64_t* freed);
  // All of it, whatever the time; returns what resident_bytes() dropped by.
  uint64_t Compact() {
    const uint64_t before = resident_bytes();
    StartCompaction();
    uint64_t freed = 0;
    Compact(absl::InfiniteFuture(), &freed);
    const uint64_t after = resident_bytes();
    return before > after ? before - after : 0;
  }
  // Exactly what Compact() would return to the OS now (when no compaction
  // is under way; during one, what is left of it).
  uint64_t reclaimable_bytes() const;
  // OK, or the OS call that stopped the last compaction (cleared by
  // StartCompaction): Compact() then returned true early, with every
  // entry intact and every page it could not return still counted.
  const absl::Status& failure() const { return failure_; }

  uint64_t live() const { return live_; }
  // Live entries in the sparse store, and the pages they belong to.
  uint64_t sparse_entries() const { return sparse_live_; }
  uint64_t sparse_pages() const { return sparse_pages_; }
  // Everything this table holds from the OS.
  uint64_t resident_bytes() const;
  // For tests and checks (slow: mincore(2) over every page ever opened):
  // INTERNAL unless the entry pages the OS has resident are exactly the
  // pages the table counts as present. Reading an entry of a returned page
  // maps the zero page, which the OS reports as resident: call it before
  // looking up handles of sparse pages.
  absl::Status CheckResidency() const;

 private:
  static constexpr uint64_t kLiveBit = 1;
  static constexpr uint64_t kEntryMask = (uint64_t{1} << 56) - 1;
  static constexpr uint16_t kMaxGeneration = 0xFFFF;
  static constexpr uint64_t kIndexMask = (uint64_t{1} << kMaxIndexBits) - 1;
  // Entry layout (56 bits): bit 0 live | bits 1..39 payload (live) or next
  // free slot + 1 (free) | bits 40..55 generation.
  static constexpr int kGenerationShift = 40;

  static uint16_t GenerationOf(uint64_t entry) {
    return static_cast<uint16_t>(entry >> kGenerationShift);
  }
  static uint64_t FreeEntry(uint16_t generation, uint16_t next_plus_one) {
    return (uint64_t{generation} << kGenerationShift) |
           (uint64_t{next_plus_one} << 1);
  }
  static uint16_t NextOf(uint64_t free_entry) {
    return static_cast<uint16_t>((free_entry >> 1) & 0xFFFF);
  }
  static uint64_t LiveEntry(uint16_t generation, uint64_t payload) {
    return (uint64_t{generation} << kGenerationShift) | (payload << 1) |
           kLiveBit;
  }
  // The handle of `index` at `generation`. The tag is never 0, so neither
  // is a handle.
  uint64_t MakeHandle(uint32_t index, uint16_t generation) const {
    const uint64_t body =
        uint64_t{index} | (uint64_t{PoolIndex(pool_)} << kMaxIndexBits);
    uint64_t tag = SipHash13(key_, body | (uint64_t{generation} << 32)) >> 32;
    if (tag == 0) tag = 1;
    return body | (tag << 32);
  }

  enum PageState : uint8_t {
    kNever = 0,  // never opened
    kPresent,    // entries in the page
    kReleased,   // page returned; reopened with generations above its past
    kRetired,    // page returned; every generation used up
    kSparse,     // live entries in a sparse store, page returned
  };
  struct PageInfo {
    uint16_t live;
    uint16_t free_head;  // slot + 1 of the first free entry; 0 = none
    uint16_t base_generation;
    uint8_t state;
    uint8_t store;          // kSparse: which store holds the records
    uint32_t sparse_begin;  // kSparse: first record
    uint16_t sparse_count;  // kSparse: records (live and dead)
    uint16_t unused;
  };
  static_assert(sizeof(PageInfo) == 16);

  // A live (or, once removed, dead) entry of a sparse page: the slot in its
  // page (2 bytes) and the 7-byte entry.
  struct SparseRecord {
    uint8_t bytes[kSparseRecordBytes];
  };
  static_assert(sizeof(SparseRecord) == kSparseRecordBytes);
  struct SparseStore {
    ReservedArray<SparseRecord> records;
    uint64_t live = 0;
  };

  static uint16_t RecordSlot(const SparseRecord& r) {
    uint16_t slot;
    std::memcpy(&slot, r.bytes, 2);
    return slot;
  }
  static uint64_t RecordEntry(const SparseRecord& r) {
    uint64_t entry = 0;
    std::memcpy(&entry, r.bytes + 2, kEntryBytes);
    return entry;
  }
  static void SetRecord(SparseRecord* r, uint16_t slot, uint64_t entry) {
    std::memcpy(r->bytes, &slot, 2);
    std::memcpy(r->bytes + 2, &entry, kEntryBytes);
  }

  // True when `index` names an entry of a page in use (not one of a
  // page's spare bytes, nor past the last page).
  bool InTable(uint32_t index) const {
    return index < index_end() &&
           (index & (kIndexesPerPage - 1)) < kEntriesPerPage;
  }
  char* EntryAddress(uint32_t index) const {
    return reinterpret_cast<char*>(entries_) +
           (uint64_t{index >> kSlotBits} << 12) +
           uint64_t{index & (kIndexesPerPage - 1)} * kEntryBytes;
  }
  // The entry in the page (zero when the page is not resident). Reads the
  // following byte too, which is still in the page: its last byte is spare.
  uint64_t DenseEntry(uint32_t index) const {
    uint64_t value;
    std::memcpy(&value, EntryAddress(index), sizeof(value));
    return value & kEntryMask;
  }
  void SetDenseEntry(uint32_t index, uint64_t entry) {
    char* p = EntryAddress(index);
    uint64_t value;
    std::memcpy(&value, p, sizeof(value));
    value = (value & ~kEntryMask) | entry;
    std::memcpy(p, &value, sizeof(value));
  }
  // The record of `index` in its sparse page, or nullptr.
  SparseRecord* FindRecord(uint32_t index) const;
  // The entry of `index` in its sparse page (0 if none).
  uint64_t SparseEntry(uint32_t index) const {
    const SparseRecord* r = FindRecord(index);
    return r == nullptr ? 0 : RecordEntry(*r);
  }
  // Find() for a handle whose entry is not live in its page.
  std::optional<uint32_t> FindSparse(uint64_t handle) const;
  void SetSparsePayload(uint32_t index, uint64_t payload);
  // Commits page `page` and makes its entries free. When the OS refuses the
  // page, nothing changes and its error is returned.
  absl::Status OpenPage(uint32_t page);
  // The highest generation of any entry of present page `page`.
  uint16_t MaxGenerationOf(uint32_t page) const;
  // Forgets a page whose memory has been returned to the OS; its entries
  // had generations up to `max_generation`.
  void ReleasePage(uint32_t page, uint16_t max_generation);
  // Moves the live entries of present page `page` into store `store_`.
  // False, with failure_ set and nothing changed, when the store's pages
  // cannot be committed.
  bool Sparsify(uint32_t page);
  // Copies the live records of sparse page `page` into store `target`.
  // False as for Sparsify.
  bool MoveRecords(uint32_t page, uint8_t target);
  // Brings sparse page `page` back into its page (which it commits unless
  // `resident`: a page whose purge failed), so it takes new entries again.
  // When the OS refuses the page, nothing changes and its error is returned.
  absl::Status Densify(uint32_t page, bool resident = false);
  // Whether page `page` (with `live` entries) would go to the sparse store.
  static bool SparseCandidate(uint8_t state, uint32_t live) {
    return state == kPresent && live > 0 && live <= kSparseMaxLive;
  }
  // Keeps candidates_ and candidate_live_ exact across a change of a
  // present page's live count from `before` to `after`.
  void CountCandidate(uint32_t before, uint32_t after) {
    // Most changes are of pages with many live entries: one comparison.
    if (std::min(before, after) > kSparseMaxLive) [[likely]]
      return;
    CountSmallPage(before, after);
  }
  void CountSmallPage(uint32_t before, uint32_t after);
  // What a sparse pass would return now (may be negative).
  int64_t SparsePassGain() const;
  bool ReleaseEmptyPages(absl::Time deadline, uint64_t* freed);
  bool SparsePass(absl::Time deadline, uint64_t* freed);
  // Purges the run of pages [purge_first_, purge_end_) collected by a pass.
  // When the OS refuses, the pages (still resident, entries intact) are
  // brought back into service and failure_ is set.
  void FlushPurge(uint64_t* freed);

  PoolKind pool_ = PoolKind::kSmall;
  SipKey key_;
  uint32_t max_pages_ = 0;
  uint32_t pages_used_ = 0;  // pages ever opened: [0, pages_used_)
  OsInterface* os_ = &OsInterface::System();
  uint64_t* entries_ = nullptr;
  uint64_t reserved_bytes_ = 0;
  uint64_t present_pages_ = 0;
  uint64_t empty_pages_ = 0;
  uint64_t live_ = 0;
  ReservedArray<PageInfo> pages_;
  IndexSet pages_with_room_;  // present pages with a free entry
  IndexSet revivable_;        // released pages that can be reopened
  IndexSet empty_;            // present pages with no live entry
  IndexSet sparse_;           // sparse pages
  // Present pages that a sparse pass would move, and their live entries.
  uint64_t candidates_ = 0;
  uint64_t candidate_live_ = 0;
  // Sparse entries: the store new records go to, and the other, empty but
  // during a sparse pass (which moves every sparse page to it).
  std::array<SparseStore, 2> stores_;
  uint8_t store_ = 0;
  uint64_t sparse_live_ = 0;
  uint64_t sparse_pages_ = 0;
  // The compaction under way: whether empty pages are still to be released,
  // whether a sparse pass runs, the store it moves every sparse page to and
  // the next page it looks at.
  bool release_pending_ = false;
  bool pass_running_ = false;
  uint8_t pass_target_ = 0;
  uint32_t pass_page_ = 0;
  uint32_t purge_first_ = 0;
  uint32_t purge_end_ = 0;
  absl::Status failure_;
  std::vector<uint16_t> max_generations_;  // scratch of ReleaseEmptyPages
};

template <typename F>
void HandleTable::ForEachLive(uint32_t page, F&& f) const {
  const PageInfo& info = pages_[page];
  const uint32_t first = page << kSlotBits;
  if (info.state == kPresent) {
    for (uint32_t slot = 0; slot < kEntriesPerPage; ++slot) {
      const uint64_t entry = DenseEntry(first + slot);
      if (entry & kLiveBit) f(first + slot, (entry >> 1) & kMaxPayload);
    }
  } else if (info.state == kSparse) {
    const SparseStore& store = stores_[info.store];
    for (uint32_t k = 0; k < info.sparse_count; ++k) {
      const SparseRecord& r = store.records[info.sparse_begin + k];
      const uint64_t entry = RecordEntry(r);
      if (entry & kLiveBit) {
        f(first + RecordSlot(r), (entry >> 1) & kMaxPayload);
      }
    }
  }
}

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_HANDLE_TABLE_H_
