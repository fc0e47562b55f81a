// HandleTable: entry encoding, lowest-page-first reuse, page release.
#include "worker/pools/handle_table.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "worker/pools/os_memory.h"

namespace poold::pools {
namespace {

// Entry layout: bit 0 live | bits 1..46 payload (live) or next free slot + 1
// (free) | bits 48..63 generation.
constexpr uint64_t kLiveBit = 1;
constexpr int kGenerationShift = 48;

uint16_t GenerationOf(uint64_t entry) {
  return static_cast<uint16_t>(entry >> kGenerationShift);
}
uint64_t FreeEntry(uint16_t generation, uint16_t next_plus_one) {
  return (uint64_t{generation} << kGenerationShift) |
         (uint64_t{next_plus_one} << 1);
}
uint16_t NextOf(uint64_t free_entry) {
  return static_cast<uint16_t>((free_entry >> 1) & 0xFFFF);
}

// splitmix64's finaliser: a cheap, well-mixed 64-bit hash.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

constexpr uint64_t kIndexMask = (uint64_t{1} << HandleTable::kMaxIndexBits) - 1;

}  // namespace

HandleTable::~HandleTable() {
  OsMemory::Unmap(reinterpret_cast<char*>(entries_), reserved_bytes_);
}

absl::Status HandleTable::Init(PoolKind pool, uint32_t max_entries,
                               uint64_t key) {
  CHECK(entries_ == nullptr);
  pool_ = pool;
  key_ = key;
  max_entries = std::min<uint64_t>(max_entries, kIndexMask + 1);
  max_pages_ = (max_entries + kEntriesPerPage - 1) / kEntriesPerPage;
  reserved_bytes_ = uint64_t{max_pages_} * kPageBytes;
  absl::StatusOr<char*> base = OsMemory::Reserve(reserved_bytes_);
  if (!base.ok()) return base.status();
  entries_ = reinterpret_cast<uint64_t*>(*base);
  if (absl::Status s = pages_.Init(max_pages_); !s.ok()) return s;
  if (absl::Status s = pages_with_room_.Init(max_pages_); !s.ok()) return s;
  if (absl::Status s = revivable_.Init(max_pages_); !s.ok()) return s;
  return empty_.Init(max_pages_);
}

std::optional<PoolKind> HandleTable::PoolOf(uint64_t handle) {
  const uint64_t bits = (handle >> kMaxIndexBits) & 3;
  if (bits > PoolIndex(PoolKind::kLarge)) return std::nullopt;
  return static_cast<PoolKind>(bits);
}

uint64_t HandleTable::MakeHandle(uint32_t index, uint16_t generation) const {
  const uint64_t body = uint64_t{index} |
                        (uint64_t{PoolIndex(pool_)} << kMaxIndexBits) |
                        (uint64_t{generation} << 32);
  const uint64_t check = Mix(body ^ key_) >> 48;
  return body | (check << 48);
}

uint64_t HandleTable::InsertGrowthBytes() const {
  if (pages_with_room_.Lowest().has_value()) return 0;
  // Reopening or opening a page commits it; opening a new one may also grow
  // the page records and index sets by a page each at most.
  uint64_t bytes = kPageBytes;
  if (!revivable_.Lowest().has_value()) {
    bytes += pages_.GrowthBytes(pages_used_ + 1);
  }
  return bytes;
}

void HandleTable::OpenPage(uint32_t page) {
  PageInfo& info = pages_[page];
  uint64_t* entries = entries_ + uint64_t{page} * kEntriesPerPage;
  OsMemory::Commit(reinterpret_cast<char*>(entries), kPageBytes);
  for (uint32_t slot = 0; slot < kEntriesPerPage; ++slot) {
    const uint16_t next = slot + 1 < kEntriesPerPage ? slot + 2 : 0;
    entries[slot] = FreeEntry(info.base_generation, next);
  }
  info.free_head = 1;
  info.live = 0;
  info.state = kPresent;
  ++present_pages_;
  pages_with_room_.Insert(page);
  empty_.Insert(page);  // until its first Insert
  ++empty_pages_;
}

absl::StatusOr<HandleTable::Inserted> HandleTable::Insert(uint64_t payload) {
  DCHECK_LE(payload, kMaxPayload);
  uint32_t page;
  if (std::optional<size_t> p = pages_with_room_.Lowest()) {
    page = static_cast<uint32_t>(*p);
  } else if (std::optional<size_t> r = revivable_.Lowest()) {
    page = static_cast<uint32_t>(*r);
    revivable_.Erase(page);
    OpenPage(page);
  } else {
    if (pages_used_ >= max_pages_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the ", PoolName(pool_), " pool's handle table is full (",
          uint64_t{max_pages_} * kEntriesPerPage, " handles)"));
    }
    page = pages_used_;
    const uint32_t count = page + 1;
    CHECK(pages_.Grow(count) && pages_with_room_.Grow(count) &&
          revivable_.Grow(count) && empty_.Grow(count));
    ++pages_used_;
    OpenPage(page);
  }
  PageInfo& info = pages_[page];
  DCHECK_NE(info.free_head, 0);
  const uint32_t slot = info.free_head - 1u;
  const uint32_t index = page * kEntriesPerPage + slot;
  const uint64_t old = entries_[index];
  info.free_head = NextOf(old);
  if (info.free_head == 0) pages_with_room_.Erase(page);
  if (info.live++ == 0) {
    empty_.Erase(page);
    --empty_pages_;
  }
  const uint16_t generation = GenerationOf(old) + 1;
  entries_[index] =
      (uint64_t{generation} << kGenerationShift) | (payload << 1) | kLiveBit;
  ++live_;
  return Inserted{MakeHandle(index, generation), index};
}

std::optional<uint32_t> HandleTable::Find(uint64_t handle) const {
  const uint32_t index = static_cast<uint32_t>(handle & kIndexMask);
  if (index >= index_end()) return std::nullopt;
  if (((handle >> kMaxIndexBits) & 3) != PoolIndex(pool_)) return std::nullopt;
  // Entries of released pages read as zero (not live): no page check needed.
  const uint64_t entry = entries_[index];
  if (!(entry & kLiveBit)) return std::nullopt;
  const uint16_t generation = GenerationOf(entry);
  if (MakeHandle(index, generation) != handle) return std::nullopt;
  return index;
}

bool HandleTable::IsLive(uint32_t index) const {
  // Entries of released pages read as zero (not live).
  return index < index_end() && (entries_[index] & kLiveBit);
}

bool HandleTable::PagePresent(uint32_t page) const {
  return page < pages_used_ && pages_[page].state == kPresent;
}

void HandleTable::SetPayload(uint32_t index, uint64_t payload) {
  DCHECK(IsLive(index));
  DCHECK_LE(payload, kMaxPayload);
  uint64_t& entry = entries_[index];
  entry = (entry & ~(kMaxPayload << 1)) | (payload << 1);
}

void HandleTable::Remove(uint32_t index) {
  DCHECK(IsLive(index));
  const uint32_t page = index / kEntriesPerPage;
  const uint32_t slot = index % kEntriesPerPage;
  PageInfo& info = pages_[page];
  const uint16_t generation = GenerationOf(entries_[index]);
  if (generation == kMaxGeneration) {
    // Exhausted: never reused, so no stale handle can ever match again.
    entries_[index] = FreeEntry(generation, 0);
  } else {
    if (info.free_head == 0) pages_with_room_.Insert(page);
    entries_[index] = FreeEntry(generation, info.free_head);
    info.free_head = static_cast<uint16_t>(slot + 1);
  }
  --live_;
  if (--info.live == 0) {
    empty_.Insert(page);
    ++empty_pages_;
  }
}

void HandleTable::ReleasePage(uint32_t page) {
  PageInfo& info = pages_[page];
  const uint64_t* entries = entries_ + uint64_t{page} * kEntriesPerPage;
  uint16_t max_generation = info.base_generation;
  for (uint32_t slot = 0; slot < kEntriesPerPage; ++slot) {
    max_generation = std::max(max_generation, GenerationOf(entries[slot]));
  }
  // Reopened entries start above every generation handed out here, so no
  // handle issued before the release can match an entry after it.
  info.base_generation = max_generation;
  info.free_head = 0;
  info.state = max_generation == kMaxGeneration ? kRetired : kReleased;
  if (info.state == kReleased) revivable_.Insert(page);
  pages_with_room_.Erase(page);
  empty_.Erase(page);
  --empty_pages_;
  --present_pages_;
}

bool HandleTable::ReleaseEmptyPages(absl::Time deadline, uint64_t* freed) {
  while (std::optional<size_t> lowest = empty_.Lowest()) {
    // A run of neighbouring empty pages goes back in one madvise.
    const uint32_t first = static_cast<uint32_t>(*lowest);
    uint32_t end = first;
    while (end < pages_used_ && empty_.Contains(end) && end - first < 1024) {
      ReleasePage(end);
      ++end;
    }
    OsMemory::Purge(
        reinterpret_cast<char*>(entries_ + uint64_t{first} * kEntriesPerPage),
        uint64_t{end - first} * kPageBytes);
    *freed += uint64_t{end - first} * kPageBytes;
    if (absl::Now() >= deadline) return !empty_.Lowest().has_value();
  }
  return true;
}

uint64_t HandleTable::resident_bytes() const {
  return present_pages_ * kPageBytes + pages_.resident_bytes() +
         pages_with_room_.resident_bytes() + revivable_.resident_bytes() +
         empty_.resident_bytes();
}

}  // namespace poold::pools
