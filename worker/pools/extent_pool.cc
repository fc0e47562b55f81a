// ExtentPool: page-granular extents in chunks, size bins, coalescing, purge.
#include "worker/pools/extent_pool.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "worker/pools/memory_limit_error.h"
#include "worker/pools/os_memory.h"

namespace poold::pools {

ExtentPool::~ExtentPool() {
  for (uint32_t k = 0; k < chunk_slots_used_; ++k) {
    if (chunks_[k].base != nullptr) {
      if (absl::Status s = options_.os->Unmap(
              chunks_[k].base, uint64_t{chunks_[k].pages} * page_);
          !s.ok()) {
        LOG(WARNING) << "a large chunk stays mapped: " << s;
      }
    }
  }
}

absl::Status ExtentPool::Init(const ExtentPoolOptions& options) {
  options_ = options;
  start_ = absl::Now();
  page_ = OsMemory::PageSize();
  if (absl::Status s = extents_.Init(options.max_extents, *options.os); !s.ok())
    return s;
  if (absl::Status s = chunks_.Init(options.max_chunks, *options.os); !s.ok())
    return s;
  return handles_.Init(PoolKind::kLarge, options.max_handles,
                       options.handle_key, *options.os);
}

int ExtentPool::BinFor(uint64_t pages) {
  if (pages < 4) return static_cast<int>(pages);
  const int log2 = std::bit_width(pages) - 1;
  const int sub = static_cast<int>((pages >> (log2 - 2)) & 3);
  return 4 * (log2 - 1) + sub;
}

absl::StatusOr<uint32_t> ExtentPool::NewRecord() {
  uint32_t id;
  if (free_records_ != 0) {
    id = free_records_ - 1;
    free_records_ = extents_[id].next;
  } else {
    id = static_cast<uint32_t>(extents_.size());
    if (!extents_.Grow(id + 1u)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the large pool has no room for more extents (",
                       extents_.capacity(), ")"));
    }
  }
  extents_[id] = Extent{};
  return id;
}

void ExtentPool::FreeRecord(uint32_t id) {
  extents_[id] = Extent{};
  extents_[id].next = free_records_;
  free_records_ = id + 1;
}

uint64_t ExtentPool::NewRecordGrowthBytes() const {
  return free_records_ != 0 ? 0 : extents_.GrowthBytes(extents_.size() + 1);
}

void ExtentPool::SetMapEntry(uint32_t chunk, uint32_t page, uint32_t value) {
  Chunk& c = chunks_[chunk];
  const uint32_t map_page = MapPageOf(page);
  if (!MapPageCommitted(c, map_page)) {
    if (absl::Status s =
            options_.os->Commit(c.base + uint64_t{map_page} * page_, page_);
        !s.ok()) {
      // The write below faults the page in as the commit would have: it is
      // resident, and counted, either way (or the kernel's OOM killer acts).
      LOG_EVERY_N(WARNING, 100)
          << "large pool: a page of a chunk's map was not prefaulted: " << s;
    }
    c.map_committed |= uint64_t{1} << map_page;
    ++c.map_pages;
    header_bytes_ += page_;
  }
  PageMap(chunk)[page] = value;
}

uint64_t ExtentPool::MapGrowthBytes(
    uint32_t chunk, std::initializer_list<uint64_t> pages) const {
  const Chunk& c = chunks_[chunk];
  uint64_t fresh = 0;  // map pages to commit, as bits
  for (uint64_t page : pages) {
    const uint32_t map_page = MapPageOf(static_cast<uint32_t>(page));
    if (!MapPageCommitted(c, map_page)) fresh |= uint64_t{1} << map_page;
  }
  return std::popcount(fresh) * page_;
}

void ExtentPool::SetBoundary(uint32_t id) {
  const Extent& e = extents_[id];
  SetMapEntry(e.chunk, e.first, id + 1);
  SetMapEntry(e.chunk, e.first + e.pages - 1, id + 1);
}

void ExtentPool::InsertFree(uint32_t id, uint8_t state) {
  Extent& e = extents_[id];
  Bins& bins = BinsOf(state);
  const int bin = BinFor(e.pages);
  e.state = state;
  e.bin = static_cast<uint8_t>(bin);
  e.prev = 0;
  e.next = bins.heads[bin];
  if (e.next != 0) extents_[e.next - 1].prev = id + 1;
  bins.heads[bin] = id + 1;
  bins.nonempty[bin / 64] |= uint64_t{1} << (bin % 64);
  ++chunks_[e.chunk].free_extents;
  ++free_extents_;
  if (state == kDirty) {
    dirty_bytes_ += uint64_t{e.pages} * page_;
    e.cached_at = MillisSinceStart(absl::Now());
  }
}

void ExtentPool::RemoveFree(uint32_t id) {
  Extent& e = extents_[id];
  DCHECK(e.state == kDirty || e.state == kClean);
  Bins& bins = BinsOf(e.state);
  if (e.prev != 0) {
    extents_[e.prev - 1].next = e.next;
  } else {
    bins.heads[e.bin] = e.next;
    if (e.next == 0)
      bins.nonempty[e.bin / 64] &= ~(uint64_t{1} << (e.bin % 64));
  }
  if (e.next != 0) extents_[e.next - 1].prev = e.prev;
  e.prev = e.next = 0;
  --chunks_[e.chunk].free_extents;
  --free_extents_;
  if (e.state == kDirty) dirty_bytes_ -= uint64_t{e.pages} * page_;
  e.state = kNone;
}

uint32_t ExtentPool::Coalesce(uint32_t id) {
  const uint8_t state = extents_[id].state;
  RemoveFree(id);
  const uint32_t chunk = extents_[id].chunk;
  const Chunk& c = chunks_[chunk];
  // Left neighbour: its last page is just before our first.
  if (extents_[id].first > c.header_pages) {
    const uint32_t left = MapEntry(chunk, extents_[id].first - 1);
    if (left != 0 && extents_[left - 1].state == state) {
      RemoveFree(left - 1);
      extents_[left - 1].pages += extents_[id].pages;
      FreeRecord(id);
      id = left - 1;
    }
  }
  // Right neighbour: its first page is just after our last.
  const uint32_t end = extents_[id].first + extents_[id].pages;
  if (end < c.pages) {
    const uint32_t right = MapEntry(chunk, end);
    if (right != 0 && extents_[right - 1].state == state) {
      RemoveFree(right - 1);
      extents_[id].pages += extents_[right - 1].pages;
      FreeRecord(right - 1);
    }
  }
  SetBoundary(id);
  InsertFree(id, state);
  return id;
}

uint32_t ExtentPool::FindFree(uint64_t pages, uint8_t state) const {
  const Bins& bins = BinsOf(state);
  const int start = BinFor(pages);
  for (uint32_t id = bins.heads[start]; id != 0; id = extents_[id - 1].next) {
    if (extents_[id - 1].pages >= pages) return id;
  }
  // Every extent in a higher bin is large enough.
  for (int word = (start + 1) / 64; word < 2; ++word) {
    uint64_t mask = bins.nonempty[word];
    if (word == (start + 1) / 64) mask &= ~uint64_t{0} << ((start + 1) % 64);
    if (mask != 0) return bins.heads[word * 64 + std::countr_zero(mask)];
  }
  return 0;
}

uint64_t ExtentPool::HeaderPagesFor(uint64_t total_pages) {
  const uint64_t page = OsMemory::PageSize();
  return (total_pages * sizeof(uint32_t) + page - 1) / page;
}

uint64_t ExtentPool::ChunkPagesFor(uint64_t pages) const {
  const uint64_t standard = options_.chunk_bytes / page_;
  if (pages + HeaderPagesFor(standard) <= standard) return standard;
  uint64_t header = HeaderPagesFor(pages);
  while (HeaderPagesFor(pages + header) > header) ++header;
  return pages + header;
}

absl::StatusOr<uint32_t> ExtentPool::MapChunk(uint64_t pages) {
  uint32_t k = 0;
  while (k < chunk_slots_used_ && chunks_[k].base != nullptr) ++k;
  if (k == chunk_slots_used_ && !chunks_.Grow(k + 1)) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the large pool has no room for more chunks (",
                     chunks_.capacity(), ")"));
  }
  const uint64_t total = ChunkPagesFor(pages);
  absl::StatusOr<char*> base = options_.os->Reserve(total * page_);
  if (!base.ok()) return base.status();
  absl::StatusOr<uint32_t> id = NewRecord();
  if (!id.ok()) {
    if (absl::Status undo = options_.os->Unmap(*base, total * page_);
        !undo.ok()) {
      LOG_EVERY_N(WARNING, 100)
          << "large pool: a chunk that could not be set up stays mapped: "
          << undo;
    }
    return id.status();
  }
  if (k == chunk_slots_used_) ++chunk_slots_used_;
  const uint32_t header = static_cast<uint32_t>(HeaderPagesFor(total));
  chunks_[k] =
      Chunk{*base, static_cast<uint32_t>(total), header, 0, 0, 0, 0, 0};
  if (header > kLazyMapPages) {
    // A map this large belongs to a chunk of one huge block: all of it.
    if (absl::Status s = options_.os->Commit(*base, uint64_t{header} * page_);
        !s.ok()) {
      FreeRecord(*id);
      if (absl::Status undo = options_.os->Unmap(*base, total * page_);
          !undo.ok()) {
        LOG_EVERY_N(WARNING, 100)
            << "large pool: a chunk that could not be set up stays mapped: "
            << undo;
      }
      return absl::Status(
          s.code(),
          absl::StrCat("large pool: committing a chunk's map: ", s.message()));
    }
    chunks_[k].map_committed = ~uint64_t{0};
    chunks_[k].map_pages = header;
    header_bytes_ += uint64_t{header} * page_;
  }
  ++chunks_mapped_;
  Extent& e = extents_[*id];
  e.chunk = k;
  e.first = header;
  e.pages = static_cast<uint32_t>(total - header);
  SetBoundary(*id);
  InsertFree(*id, kClean);
  return *id;
}

absl::Status ExtentPool::UnmapChunkIfEmpty(uint32_t chunk) {
  Chunk& c = chunks_[chunk];
  if (c.used != 0 || c.free_extents != 1) return absl::OkStatus();
  const uint32_t id = MapEntry(chunk, c.header_pages) - 1;
  const Extent& e = extents_[id];
  if (e.state != kClean || e.pages != c.pages - c.header_pages) {
    return absl::OkStatus();
  }
  if (absl::Status s = options_.os->Unmap(c.base, uint64_t{c.pages} * page_);
      !s.ok()) {
    return absl::Status(
        s.code(),
        absl::StrCat("large pool: unmapping an empty chunk: ", s.message()));
  }
  RemoveFree(id);
  FreeRecord(id);
  header_bytes_ -= uint64_t{c.map_pages} * page_;
  --chunks_mapped_;
  c = Chunk{};
  return absl::OkStatus();
}

void ExtentPool::MaybeUnmapChunk(uint32_t chunk) {
  if (absl::Status s = UnmapChunkIfEmpty(chunk); !s.ok()) {
    // It stays mapped and in service, its map pages counted; the next
    // defragmentation tries again.
    LOG_EVERY_N(WARNING, 100) << s;
  }
}

absl::StatusOr<BlockInfo> ExtentPool::Allocate(uint64_t size,
                                               absl::string_view data,
                                               uint64_t headroom,
                                               uint64_t written_next) {
  DCHECK_GE(size, kLargeMinBytes);
  DCHECK_LE(data.size(), size);
  const uint64_t pages = (size + page_ - 1) / page_;
  if (pages >= (uint64_t{1} << 31)) {
    return absl::ResourceExhaustedError("block too large for the large pool");
  }
  uint64_t growth = handles_.InsertGrowthBytes() + NewRecordGrowthBytes();
  uint32_t found = FindFree(pages, kDirty);
  if (found == 0) {
    found = FindFree(pages, kClean);
    growth += pages * page_;
    if (found == 0) {
      // A new chunk: its map gets the boundaries of the block and of the
      // rest (at most four map pages), or all of a huge block's map.
      const uint64_t total = ChunkPagesFor(pages);
      const uint64_t header = HeaderPagesFor(total);
      growth +=
          std::min<uint64_t>(header > kLazyMapPages ? header : 4, header) *
              page_ +
          NewRecordGrowthBytes() + chunks_.GrowthBytes(chunk_slots_used_ + 1);
    }
  }
  if (found != 0) {
    // The boundaries of the block and of what remains of the extent.
    const Extent& e = extents_[found - 1];
    growth +=
        MapGrowthBytes(e.chunk, {e.first, e.first + pages - 1, e.first + pages,
                                 uint64_t{e.first} + e.pages - 1});
  }
  if (growth > headroom) {
    return MemoryLimitError(
        absl::StrCat("allocating ", size, " bytes needs ", growth,
                     " more resident bytes than the memory limit allows"),
        growth);
  }
  absl::StatusOr<HandleTable::Inserted> entry = handles_.Insert(0);
  if (!entry.ok()) return entry.status();
  if (found == 0) {
    absl::StatusOr<uint32_t> fresh = MapChunk(pages);
    if (!fresh.ok()) {
      handles_.Remove(entry->index);
      return fresh.status();
    }
    found = *fresh + 1;
  }
  uint32_t id = found - 1;
  if (extents_[id].state == kClean) {
    // Fresh zero pages: make them resident now, as counted, before anything
    // changes, so that a refusal leaves the pool as it was.
    // All but the pages of the bytes written next from the first whole one
    // (with the page they end in): the caller commits those piece by piece
    // (Commit) as it writes them.
    const Extent& e = extents_[id];
    char* block = chunks_[e.chunk].base + uint64_t{e.first} * page_;
    const uint64_t skip_from =
        (data.size() + page_ - 1) / page_ * page_;  // first whole page
    const uint64_t skip_to =
        (data.size() + written_next + page_ - 1) / page_ * page_;
    absl::Status s;
    if (skip_from < skip_to) {
      if (skip_from > 0) s = options_.os->Commit(block, skip_from);
      if (s.ok() && skip_to < pages * page_) {
        s = options_.os->Commit(block + skip_to, pages * page_ - skip_to);
      }
    } else {
      s = options_.os->Commit(block, pages * page_);
    }
    if (!s.ok()) {
      if (absl::Status undo = options_.os->Purge(block, pages * page_);
          !undo.ok()) {
        LOG_EVERY_N(WARNING, 100)
            << "large pool: pages of a failed commit stay resident: " << undo;
      }
      handles_.Remove(entry->index);
      MaybeUnmapChunk(e.chunk);  // a chunk mapped for this block goes back
      return absl::Status(
          s.code(), absl::StrCat("large pool: committing a block's pages: ",
                                 s.message()));
    }
  }
  uint32_t rest = 0;
  if (extents_[id].pages > pages) {
    absl::StatusOr<uint32_t> record = NewRecord();
    if (!record.ok()) {
      handles_.Remove(entry->index);
      MaybeUnmapChunk(extents_[id].chunk);
      return record.status();
    }
    rest = *record + 1;
  }
  Extent& e = extents_[id];
  const uint8_t state = e.state;
  RemoveFree(id);
  if (rest != 0) {
    Extent& r = extents_[rest - 1];
    r.chunk = e.chunk;
    r.first = e.first + static_cast<uint32_t>(pages);
    r.pages = e.pages - static_cast<uint32_t>(pages);
    e.pages = static_cast<uint32_t>(pages);
    SetBoundary(rest - 1);
    InsertFree(rest - 1, state);
  }
  e.state = kUsed;
  e.size = size;
  SetBoundary(id);
  ++chunks_[e.chunk].used;
  char* block = chunks_[e.chunk].base + uint64_t{e.first} * page_;
  if (state != kClean) {
    const uint64_t set = data.size() + written_next;
    std::memset(block + set, 0, size - set);
  }
  if (!data.empty()) std::memcpy(block, data.data(), data.size());
  handles_.SetPayload(entry->index, id);
  ++blocks_;
  live_bytes_ += size;
  used_bytes_ += pages * page_;
  return BlockInfo{.handle = entry->handle,
                   .pool = PoolKind::kLarge,
                   .size = size,
                   .slot_bytes = pages * page_,
                   .fresh_pages = state == kClean};
}

absl::StatusOr<BlockRef> ExtentPool::Lookup(uint64_t handle) {
  std::optional<uint32_t> index = handles_.Find(handle);
  if (!index.has_value()) {
    return absl::NotFoundError(absl::StrCat("no block with handle ", handle));
  }
  const Extent& e = extents_[handles_.Payload(*index)];
  return BlockRef{chunks_[e.chunk].base + uint64_t{e.first} * page_, e.size};
}

absl::Status ExtentPool::Commit(uint64_t handle, uint64_t offset,
                                uint64_t length) {
  absl::StatusOr<BlockRef> block = Lookup(handle);
  if (!block.ok()) return block.status();
  if (offset > block->size || length > block->size - offset) {
    return absl::OutOfRangeError(
        absl::StrCat("committing ", length, " bytes at offset ", offset,
                     " passes the end of the block (", block->size, " bytes)"));
  }
  if (length == 0) return absl::OkStatus();
  // Whole pages (the extent is page-aligned and a whole number of pages).
  const uint64_t from = offset / page_ * page_;
  const uint64_t to = (offset + length + page_ - 1) / page_ * page_;
  if (absl::Status s = options_.os->Commit(block->data + from, to - from);
      !s.ok()) {
    return absl::Status(
        s.code(),
        absl::StrCat("large pool: committing a block's pages: ", s.message()));
  }
  return absl::OkStatus();
}

uint32_t ExtentPool::Release(uint32_t index) {
  const uint32_t id = static_cast<uint32_t>(handles_.Payload(index));
  handles_.Remove(index);
  Extent& e = extents_[id];
  --blocks_;
  live_bytes_ -= e.size;
  used_bytes_ -= uint64_t{e.pages} * page_;
  --chunks_[e.chunk].used;
  e.size = 0;
  return id;
}

void ExtentPool::InsertFreed(uint32_t id) {
  InsertFree(id, kDirty);
  id = Coalesce(id);
  if (!purge_blocked_ && dirty_bytes_ > options_.retained_bytes) {
    if (absl::Status s = PurgePiece(id, nullptr); !s.ok()) {
      LOG_EVERY_N(WARNING, 100) << s;  // the free stands; the pages wait
      purge_blocked_ = true;
    }
  }
}

absl::Status ExtentPool::Free(uint64_t handle) {
  std::optional<uint32_t> index = handles_.Find(handle);
  if (!index.has_value()) {
    return absl::NotFoundError(absl::StrCat("no block with handle ", handle));
  }
  InsertFreed(Release(*index));
  return absl::OkStatus();
}

absl::Status ExtentPool::FreeUnfinished(uint64_t handle, uint64_t written) {
  std::optional<uint32_t> index = handles_.Find(handle);
  if (!index.has_value()) {
    return absl::NotFoundError(absl::StrCat("no block with handle ", handle));
  }
  const uint32_t id = static_cast<uint32_t>(handles_.Payload(*index));
  const uint64_t bytes = uint64_t{extents_[id].pages} * page_;
  // The pages written so far are resident; those after them were never
  // committed (Allocate leaves the bytes written next to the caller).
  uint64_t kept = (written + page_ - 1) / page_ * page_;
  if (kept >= bytes) return Free(handle);
  const uint32_t chunk = extents_[id].chunk;
  char* const base = chunks_[chunk].base + uint64_t{extents_[id].first} * page_;
  uint32_t tail = id;
  if (kept > 0) {
    absl::StatusOr<uint32_t> record = NewRecord();
    if (record.ok()) {
      tail = *record;
    } else if (options_.os->Purge(base, kept).ok()) {
      kept = 0;  // no record to split with: the whole extent goes back
    } else {
      return Free(handle);  // all of it counted resident
    }
  }
  // They were never committed; but a commit that failed may have made some
  // resident before it failed: those go back (cheap where nothing is
  // resident). When the OS refuses, they stay, uncounted, as after a failed
  // commit in Allocate.
  if (absl::Status s = options_.os->Purge(base + kept, bytes - kept); !s.ok()) {
    LOG_EVERY_N(WARNING, 100) << "large pool: pages a failed commit made "
                                 "resident may stay resident: "
                              << s;
  }
  Release(*index);
  if (tail != id) {
    Extent& head = extents_[id];
    Extent& rest = extents_[tail];
    rest.chunk = chunk;
    rest.first = head.first + static_cast<uint32_t>(kept / page_);
    rest.pages = head.pages - static_cast<uint32_t>(kept / page_);
    rest.size = 0;
    head.pages = static_cast<uint32_t>(kept / page_);
    SetBoundary(id);
    SetBoundary(tail);
  }
  // The head is still kUsed: the tail does not merge with it.
  InsertFree(tail, kClean);
  Coalesce(tail);
  if (tail != id) {
    InsertFreed(id);
  } else {
    MaybeUnmapChunk(chunk);
  }
  return absl::OkStatus();
}

absl::Status ExtentPool::PurgePiece(uint32_t id, PurgeProgress* progress) {
  bool split = false;
  const uint32_t cached_at = extents_[id].cached_at;
  if (uint64_t{extents_[id].pages} * page_ > kPurgePieceBytes) {
    // Split off the tail (still dirty) and purge the head alone; without a
    // record for the tail, the whole extent at once.
    const uint32_t piece_pages =
        static_cast<uint32_t>(kPurgePieceBytes / page_);
    absl::StatusOr<uint32_t> tail = NewRecord();
    if (tail.ok()) {
      split = true;
      RemoveFree(id);
      Extent& head = extents_[id];
      Extent& rest = extents_[*tail];
      rest.chunk = head.chunk;
      rest.first = head.first + piece_pages;
      rest.pages = head.pages - piece_pages;
      head.pages = piece_pages;
      SetBoundary(id);
      SetBoundary(*tail);
      InsertFree(*tail, kDirty);
      InsertFree(id, kDirty);
      // InsertFree stamped both as freed now: they keep their age.
      extents_[*tail].cached_at = cached_at;
      extents_[id].cached_at = cached_at;
    }
  }
  absl::Status purged = PurgeExtent(id, progress);
  if (!purged.ok() && split) {
    // Refused: the extent is whole again, as it was (a later try splits it
    // anew), so that it can still hold a block larger than a piece.
    extents_[Coalesce(id)].cached_at = cached_at;
  }
  return purged;
}

uint32_t ExtentPool::LargestDirty() const {
  DCHECK(dirty_.nonempty[0] != 0 || dirty_.nonempty[1] != 0);
  const int word = dirty_.nonempty[1] != 0 ? 1 : 0;
  const int bin = word * 64 + 63 - std::countl_zero(dirty_.nonempty[word]);
  return dirty_.heads[bin] - 1;
}

uint32_t ExtentPool::FirstStale(uint32_t now_ms, uint32_t age_ms) const {
  // Few free extents exist: a scan is cheap. (The difference, not a
  // cutoff: the milliseconds wrap after 49.7 days.)
  for (int bin = 0; bin < kBins; ++bin) {
    for (uint32_t id = dirty_.heads[bin]; id != 0; id = extents_[id - 1].next) {
      if (now_ms - extents_[id - 1].cached_at >= age_ms) return id;
    }
  }
  return 0;
}

bool ExtentPool::PurgeStalePieces(uint32_t now_ms, uint32_t age_ms,
                                  absl::Time deadline) {
  while (uint32_t stale = FirstStale(now_ms, age_ms)) {
    if (absl::Status s = PurgePiece(stale - 1, nullptr); !s.ok()) {
      LOG_EVERY_N(WARNING, 100) << s;  // they stay cached; a later call retries
      purge_blocked_ = true;
      return false;
    }
    if (absl::Now() >= deadline) {
      stale_left_ = FirstStale(now_ms, age_ms) != 0;
      return true;
    }
  }
  stale_left_ = false;
  return true;
}

uint64_t ExtentPool::PurgeDue(absl::Time deadline) {
  const uint64_t before = resident_bytes();
  bool in_time = true;
  while (!purge_blocked_ && dirty_bytes_ > options_.retained_bytes) {
    if (absl::Status s = PurgePiece(LargestDirty(), nullptr); !s.ok()) {
      LOG_EVERY_N(WARNING, 100) << s;  // they stay cached; PurgeStale retries
      purge_blocked_ = true;
      break;
    }
    if (absl::Now() >= deadline) {
      in_time = false;
      break;
    }
  }
  if (in_time && !purge_blocked_ && stale_left_) {
    PurgeStalePieces(stale_now_ms_, stale_age_ms_, deadline);
  }
  const uint64_t after = resident_bytes();
  return before > after ? before - after : 0;
}

absl::Status ExtentPool::PurgeExtent(uint32_t id, PurgeProgress* progress) {
  Extent& e = extents_[id];
  DCHECK_EQ(e.state, kDirty);
  const uint32_t chunk = e.chunk;
  const uint64_t bytes = uint64_t{e.pages} * page_;
  if (absl::Status s = options_.os->Purge(
          chunks_[chunk].base + uint64_t{e.first} * page_, bytes);
      !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("large pool: purging ", bytes,
                                     " bytes of free pages: ", s.message()));
  }
  RemoveFree(id);
  InsertFree(id, kClean);
  Coalesce(id);
  const uint64_t mapped = chunks_mapped_;
  MaybeUnmapChunk(chunk);
  if (progress != nullptr) {
    progress->bytes_purged += bytes;
    progress->chunks_unmapped += mapped - chunks_mapped_;
  }
  return absl::OkStatus();
}

uint64_t ExtentPool::PurgeStale(absl::Time now, absl::Duration age,
                                absl::Time deadline) {
  purge_blocked_ = false;  // PurgeDue may try again
  stale_left_ = false;
  if (dirty_bytes_ == 0) return 0;
  stale_now_ms_ = MillisSinceStart(now);
  stale_age_ms_ = static_cast<uint32_t>(absl::ToInt64Milliseconds(age));
  const uint64_t before = resident_bytes();
  PurgeStalePieces(stale_now_ms_, stale_age_ms_, deadline);
  const uint64_t after = resident_bytes();  // with unmapped chunks' maps
  return before > after ? before - after : 0;
}

PurgeProgress ExtentPool::PurgeStep(absl::Time deadline) {
  // One madvise of a big extent can take milliseconds: purge a piece at a
  // time between two looks at the clock.
  PurgeProgress progress;
  while (dirty_.nonempty[0] != 0 || dirty_.nonempty[1] != 0) {
    if (absl::Status s = PurgePiece(LargestDirty(), &progress); !s.ok()) {
      progress.failure = std::move(s);
      progress.done = true;
      return progress;
    }
    if (absl::Now() >= deadline) return progress;
  }
  // Empty chunks that a refused unmap left mapped (the analysis counts their
  // maps as reclaimable).
  for (uint32_t k = 0; k < chunk_slots_used_; ++k) {
    if (chunks_[k].base == nullptr || chunks_[k].used != 0) continue;
    const uint64_t mapped = chunks_mapped_;
    if (absl::Status s = UnmapChunkIfEmpty(k); !s.ok()) {
      progress.failure = std::move(s);
      progress.done = true;
      return progress;
    }
    progress.chunks_unmapped += mapped - chunks_mapped_;
  }
  progress.done = handles_.Compact(deadline, &progress.bytes_purged);
  if (!handles_.failure().ok()) progress.failure = handles_.failure();
  return progress;
}

uint64_t ExtentPool::ChunkBytesResidentPerOs() const {
  uint64_t bytes = 0;
  for (uint32_t k = 0; k < chunk_slots_used_; ++k) {
    if (chunks_[k].base == nullptr) continue;
    bytes += OsMemory::ResidentBytesIn(chunks_[k].base,
                                       uint64_t{chunks_[k].pages} * page_);
  }
  return bytes;
}

uint64_t ExtentPool::SideMetadataBytes() const {
  return extents_.resident_bytes() + chunks_.resident_bytes() +
         handles_.resident_bytes();
}

uint64_t ExtentPool::resident_bytes() const {
  return used_bytes_ + dirty_bytes_ + header_bytes_ + SideMetadataBytes();
}

uint64_t ExtentPool::LargestFree() const {
  uint64_t largest = 0;
  for (const Bins* bins : {&dirty_, &clean_}) {
    for (int word = 1; word >= 0; --word) {
      if (bins->nonempty[word] == 0) continue;
      const int bin = word * 64 + 63 - std::countl_zero(bins->nonempty[word]);
      for (uint32_t id = bins->heads[bin]; id != 0;
           id = extents_[id - 1].next) {
        largest = std::max(largest, uint64_t{extents_[id - 1].pages} * page_);
      }
      break;
    }
  }
  return largest;
}

PoolStats ExtentPool::Stats() const {
  PoolStats result;
  result.pool = PoolKind::kLarge;
  FragmentationStats& s = result.stats;
  s.live_bytes = live_bytes_;
  s.allocated_bytes = used_bytes_;
  s.blocks = blocks_;
  s.spans = chunks_mapped_;
  uint64_t empty_chunk_headers = 0;
  for (uint32_t k = 0; k < chunk_slots_used_; ++k) {
    const Chunk& c = chunks_[k];
    if (c.base == nullptr) continue;
    if (c.used == 0) {
      ++s.empty_spans;
      empty_chunk_headers += uint64_t{c.map_pages} * page_;
    } else if (c.free_extents > 0) {
      ++s.partial_spans;
    }
  }
  s.free_bytes = dirty_bytes_;
  s.unpurged_bytes = dirty_bytes_;
  s.free_extents = free_extents_;
  s.largest_free_extent_bytes = LargestFree();
  s.metadata_bytes = SideMetadataBytes() + header_bytes_;
  s.resident_bytes = resident_bytes();
  // A full compaction purges every dirty extent, which unmaps every chunk
  // with no block (and its page map), and drops empty handle-table pages.
  s.reclaimable_bytes =
      dirty_bytes_ + empty_chunk_headers + handles_.reclaimable_bytes();
  return result;
}

PoolAnalysis ExtentPool::Analyze() const {
  PoolAnalysis analysis;
  analysis.pool = PoolKind::kLarge;
  analysis.stats = Stats().stats;
  analysis.spans_to_release = analysis.stats.empty_spans;
  analysis.bytes_to_reclaim = analysis.stats.reclaimable_bytes;
  FragmentationStats after = analysis.stats;
  after.resident_bytes -= analysis.bytes_to_reclaim;
  analysis.ratio_after = after.FragmentationRatio();
  return analysis;
}

}  // namespace poold::pools
