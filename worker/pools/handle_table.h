// HandleTable: the stable names of one pool's blocks. A handle is 64 bits:
// a table index, the pool, a generation and a check tag. The entry behind it
// holds a 46-bit payload that the pool uses to find the block (span and slot,
// or extent record) and that compaction rewrites when the block moves.
//
// Handle layout (bit 0 = least significant):
//   0..29 index | 30..31 pool | 32..47 generation | 48..63 check tag
// The check tag is derived from the rest and a per-process key, so a forged
// or stale handle (also one from an earlier poold process) is rejected.
// An entry is 8 bytes; entries live in 4 KiB pages committed on demand.
// Freed entries are reused lowest page first (to keep pages dense), with a
// new generation; an entry whose generation is exhausted is retired for good.
// Pages whose entries are all free stay resident until ReleaseEmptyPages().
#ifndef POOLD_WORKER_POOLS_HANDLE_TABLE_H_
#define POOLD_WORKER_POOLS_HANDLE_TABLE_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "worker/pools/index_set.h"
#include "worker/pools/pool_kind.h"
#include "worker/pools/reserved_array.h"

namespace poold::pools {

class HandleTable {
 public:
  static constexpr uint32_t kEntriesPerPage = 512;
  static constexpr int kPayloadBits = 46;
  static constexpr uint64_t kMaxPayload = (uint64_t{1} << kPayloadBits) - 1;
  static constexpr uint32_t kMaxIndexBits = 30;

  HandleTable() = default;
  HandleTable(const HandleTable&) = delete;
  HandleTable& operator=(const HandleTable&) = delete;
  ~HandleTable();

  // Sets up a table for `pool` holding at most `max_entries` handles
  // (rounded up to whole pages; at most 2^30). `key` salts the check tags.
  absl::Status Init(PoolKind pool, uint32_t max_entries, uint64_t key);

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

  // The entry index of a live handle of this table; nullopt for an unknown,
  // freed, forged or other pool's handle.
  std::optional<uint32_t> Find(uint64_t handle) const;

  // Payload of a live entry. REQUIRES: IsLive(index).
  uint64_t Payload(uint32_t index) const {
    return (entries_[index] >> 1) & kMaxPayload;
  }
  // Hints the CPU to fetch an entry soon to be used (never faults).
  void Prefetch(uint32_t index) const {
    __builtin_prefetch(entries_ + index, 1);
  }
  // Rewrites the payload of a live entry (the block moved).
  void SetPayload(uint32_t index, uint64_t payload);

  // True when `index` is a live entry (safe for any index).
  bool IsLive(uint32_t index) const;

  // Frees a live entry: its handle never resolves again.
  // REQUIRES: IsLive(index).
  void Remove(uint32_t index);

  // One past the highest entry index ever handed out, for scans. Entries in
  // pages that are not resident read as not live.
  uint32_t index_end() const { return pages_used_ * kEntriesPerPage; }
  // Whether page `page` is resident (scans skip others).
  bool PagePresent(uint32_t page) const;
  // The kEntriesPerPage raw entries of a present page, for fast scans; decode
  // them with EntryIsLive() and EntryPayload().
  const uint64_t* PageEntries(uint32_t page) const {
    return entries_ + uint64_t{page} * kEntriesPerPage;
  }
  static bool EntryIsLive(uint64_t entry) { return entry & 1; }
  static uint64_t EntryPayload(uint64_t entry) {
    return (entry >> 1) & kMaxPayload;
  }

  // Returns pages with no live entry to the OS (neighbours in one call)
  // until none is left (true) or `deadline` passes (false). Adds the bytes
  // freed to `*freed`.
  bool ReleaseEmptyPages(absl::Time deadline, uint64_t* freed);
  // All of them, whatever the time; returns the bytes freed.
  uint64_t ReleaseEmptyPages() {
    uint64_t freed = 0;
    ReleaseEmptyPages(absl::InfiniteFuture(), &freed);
    return freed;
  }
  // Bytes ReleaseEmptyPages() would free now.
  uint64_t empty_page_bytes() const { return empty_pages_ * kPageBytes; }

  uint64_t live() const { return live_; }
  // Everything this table holds from the OS.
  uint64_t resident_bytes() const;

 private:
  static constexpr uint64_t kPageBytes = kEntriesPerPage * sizeof(uint64_t);
  static constexpr uint16_t kMaxGeneration = 0xFFFF;

  enum PageState : uint8_t { kNever = 0, kPresent, kReleased, kRetired };
  struct PageInfo {
    uint16_t live;
    uint16_t free_head;  // slot + 1 of the first free entry; 0 = none
    uint16_t base_generation;
    uint8_t state;
    uint8_t unused;
  };

  uint64_t MakeHandle(uint32_t index, uint16_t generation) const;
  void OpenPage(uint32_t page);
  // Forgets a page whose memory is (about to be) returned to the OS.
  void ReleasePage(uint32_t page);

  PoolKind pool_ = PoolKind::kSmall;
  uint64_t key_ = 0;
  uint32_t max_pages_ = 0;
  uint32_t pages_used_ = 0;  // pages ever opened: [0, pages_used_)
  uint64_t* entries_ = nullptr;
  uint64_t reserved_bytes_ = 0;
  uint64_t present_pages_ = 0;
  uint64_t empty_pages_ = 0;
  uint64_t live_ = 0;
  ReservedArray<PageInfo> pages_;
  IndexSet pages_with_room_;  // present pages with a free entry
  IndexSet revivable_;        // released pages that can be reopened
  IndexSet empty_;            // present pages with no live entry
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_HANDLE_TABLE_H_
