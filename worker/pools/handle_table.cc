// HandleTable: entry encoding, lowest-page-first reuse, page release and the
// sparse store.
#include "worker/pools/handle_table.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "worker/pools/os_memory.h"

namespace poold::pools {
namespace {

// Pages of a pass between two looks at the clock.
constexpr uint32_t kPagesPerClockCheck = 32;

}  // namespace

HandleTable::~HandleTable() {
  if (entries_ == nullptr) return;
  if (absl::Status s =
          os_->Unmap(reinterpret_cast<char*>(entries_), reserved_bytes_);
      !s.ok()) {
    LOG(WARNING) << "the handle table's address space stays mapped: " << s;
  }
}

absl::Status HandleTable::Init(PoolKind pool, uint32_t max_entries,
                               const SipKey& key, OsInterface& os) {
  CHECK(entries_ == nullptr);
  os_ = &os;
  static_assert(kEntriesPerPage * kEntryBytes < kPageBytes,
                "DenseEntry reads one byte past an entry");
  CHECK_EQ(OsMemory::PageSize(), kPageBytes);
  pool_ = pool;
  key_ = key;
  max_pages_ = std::min<uint32_t>(
      (uint64_t{max_entries} + kEntriesPerPage - 1) / kEntriesPerPage,
      uint32_t{1} << (kMaxIndexBits - kSlotBits));
  reserved_bytes_ = uint64_t{max_pages_} * kPageBytes;
  absl::StatusOr<char*> base = os_->Reserve(reserved_bytes_);
  if (!base.ok()) return base.status();
  entries_ = reinterpret_cast<uint64_t*>(*base);
  if (absl::Status s = pages_.Init(max_pages_, os); !s.ok()) return s;
  if (absl::Status s = pages_with_room_.Init(max_pages_, os); !s.ok()) return s;
  if (absl::Status s = revivable_.Init(max_pages_, os); !s.ok()) return s;
  if (absl::Status s = empty_.Init(max_pages_, os); !s.ok()) return s;
  if (absl::Status s = sparse_.Init(max_pages_, os); !s.ok()) return s;
  // A store holds at most every sparse page's records.
  const size_t records = size_t{max_pages_} * kSparseMaxLive;
  for (SparseStore& store : stores_) {
    if (absl::Status s = store.records.Init(records, os); !s.ok()) return s;
  }
  return absl::OkStatus();
}

namespace {

absl::Status CommitFailed(PoolKind pool, const absl::Status& s) {
  return absl::Status(s.code(),
                      absl::StrCat("the ", PoolName(pool),
                                   " pool's handle table: ", s.message()));
}

absl::Status PurgeFailed(PoolKind pool, const absl::Status& s) {
  return absl::Status(
      s.code(),
      absl::StrCat("the ", PoolName(pool),
                   " pool's handle table: returning pages: ", s.message()));
}

absl::Status StoreCannotGrow(PoolKind pool) {
  return absl::ResourceExhaustedError(
      absl::StrCat("the ", PoolName(pool),
                   " pool's handle table could not commit pages for its "
                   "sparse store"));
}

}  // namespace

std::optional<PoolKind> HandleTable::PoolOf(uint64_t handle) {
  const uint64_t bits = (handle >> kMaxIndexBits) & 3;
  if (bits > PoolIndex(PoolKind::kLarge)) return std::nullopt;
  return static_cast<PoolKind>(bits);
}

void HandleTable::CountSmallPage(uint32_t before, uint32_t after) {
  const bool was = before > 0 && before <= kSparseMaxLive;
  const bool is = after > 0 && after <= kSparseMaxLive;
  candidates_ += is;
  candidates_ -= was;
  if (is) candidate_live_ += after;
  if (was) candidate_live_ -= before;
}

uint64_t HandleTable::InsertGrowthBytes() const {
  if (pages_with_room_.Lowest().has_value()) return 0;
  // Reopening, bringing back or opening a page commits it; opening a new one
  // may also grow the page records and index sets by a page each at most.
  uint64_t bytes = kPageBytes;
  if (!sparse_.Lowest().has_value() && !revivable_.Lowest().has_value()) {
    bytes += pages_.GrowthBytes(pages_used_ + 1);
  }
  return bytes;
}

absl::Status HandleTable::OpenPage(uint32_t page) {
  if (absl::Status s = os_->Commit(EntryAddress(page << kSlotBits), kPageBytes);
      !s.ok()) {
    return CommitFailed(pool_, s);
  }
  PageInfo& info = pages_[page];
  for (uint32_t slot = 0; slot < kEntriesPerPage; ++slot) {
    const uint16_t next = slot + 1 < kEntriesPerPage ? slot + 2 : 0;
    SetDenseEntry((page << kSlotBits) + slot,
                  FreeEntry(info.base_generation, next));
  }
  info.free_head = 1;
  info.live = 0;
  info.state = kPresent;
  ++present_pages_;
  pages_with_room_.Insert(page);
  empty_.Insert(page);  // until its first Insert
  ++empty_pages_;
  return absl::OkStatus();
}

absl::StatusOr<HandleTable::Inserted> HandleTable::Insert(uint64_t payload) {
  DCHECK_LE(payload, kMaxPayload);
  uint32_t page;
  if (std::optional<size_t> p = pages_with_room_.Lowest()) {
    page = static_cast<uint32_t>(*p);
  } else if (std::optional<size_t> s = sparse_.Lowest()) {
    // A page of scattered survivors: its free entries are the cheapest room.
    page = static_cast<uint32_t>(*s);
    if (absl::Status st = Densify(page); !st.ok()) return st;
    if (pages_[page].free_head == 0) return Insert(payload);  // all retired
  } else if (std::optional<size_t> r = revivable_.Lowest()) {
    page = static_cast<uint32_t>(*r);
    if (absl::Status st = OpenPage(page); !st.ok()) return st;
    revivable_.Erase(page);
  } else {
    if (pages_used_ >= max_pages_) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the ", PoolName(pool_), " pool's handle table is full (",
          uint64_t{max_pages_} * kEntriesPerPage, " handles)"));
    }
    page = pages_used_;
    const uint32_t count = page + 1;
    // (Each Grow is kept if a later one fails; a retry finds it done.)
    if (!pages_.Grow(count) || !pages_with_room_.Grow(count) ||
        !revivable_.Grow(count) || !empty_.Grow(count) ||
        !sparse_.Grow(count)) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the ", PoolName(pool_),
                       " pool's handle table could not commit its records"));
    }
    if (absl::Status st = OpenPage(page); !st.ok()) return st;
    ++pages_used_;
  }
  PageInfo& info = pages_[page];
  DCHECK_NE(info.free_head, 0);
  const uint32_t slot = info.free_head - 1u;
  const uint32_t index = (page << kSlotBits) + slot;
  const uint64_t old = DenseEntry(index);
  info.free_head = NextOf(old);
  if (info.free_head == 0) pages_with_room_.Erase(page);
  if (info.live == 0) {
    empty_.Erase(page);
    --empty_pages_;
  }
  CountCandidate(info.live, info.live + 1u);
  ++info.live;
  const uint16_t generation = GenerationOf(old) + 1;
  SetDenseEntry(index, LiveEntry(generation, payload));
  ++live_;
  return Inserted{MakeHandle(index, generation), index};
}

HandleTable::SparseRecord* HandleTable::FindRecord(uint32_t index) const {
  const uint32_t page = PageOf(index);
  if (page >= pages_used_) return nullptr;
  const PageInfo& info = pages_[page];
  if (info.state != kSparse) return nullptr;
  const uint16_t slot = static_cast<uint16_t>(index & (kIndexesPerPage - 1));
  const SparseStore& store = stores_[info.store];
  // Records are sorted by slot: binary search.
  uint32_t lo = info.sparse_begin;
  uint32_t hi = info.sparse_begin + info.sparse_count;
  while (lo < hi) {
    const uint32_t mid = lo + (hi - lo) / 2;
    if (RecordSlot(store.records[mid]) < slot) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo == info.sparse_begin + info.sparse_count ||
      RecordSlot(store.records[lo]) != slot) {
    return nullptr;
  }
  return const_cast<SparseRecord*>(&store.records[lo]);
}

std::optional<uint32_t> HandleTable::FindSparse(uint64_t handle) const {
  // Entries of released and sparse pages read as zero (not live) in the
  // page; a sparse page's are in its store.
  const uint32_t index = static_cast<uint32_t>(handle & kIndexMask);
  const uint64_t entry = SparseEntry(index);
  if (!(entry & kLiveBit)) return std::nullopt;
  if (MakeHandle(index, GenerationOf(entry)) != handle) return std::nullopt;
  return index;
}

std::optional<uint64_t> HandleTable::LiveHandleAt(uint64_t handle) const {
  const uint32_t index = static_cast<uint32_t>(handle & kIndexMask);
  if (!InTable(index) || ((handle >> kMaxIndexBits) & 3) != PoolIndex(pool_)) {
    return std::nullopt;
  }
  uint64_t entry = DenseEntry(index);
  if (!(entry & kLiveBit)) entry = SparseEntry(index);
  if (!(entry & kLiveBit)) return std::nullopt;
  return MakeHandle(index, GenerationOf(entry));
}

bool HandleTable::IsLive(uint32_t index) const {
  if (!InTable(index)) return false;
  return (DenseEntry(index) & kLiveBit) || (SparseEntry(index) & kLiveBit);
}

void HandleTable::SetSparsePayload(uint32_t index, uint64_t payload) {
  SparseRecord* r = FindRecord(index);
  CHECK(r != nullptr);
  SetRecord(r, RecordSlot(*r),
            LiveEntry(GenerationOf(RecordEntry(*r)), payload));
}

void HandleTable::Remove(uint32_t index) {
  DCHECK(IsLive(index));
  const uint32_t page = PageOf(index);
  const uint32_t slot = index & (kIndexesPerPage - 1);
  PageInfo& info = pages_[page];
  --live_;
  if (info.state == kSparse) {
    SparseRecord* r = FindRecord(index);
    CHECK(r != nullptr);
    // A dead record keeps its generation; the page's base generation is
    // already at least as high, so the entry is never handed out with it.
    SetRecord(r, RecordSlot(*r), RecordEntry(*r) & ~kLiveBit);
    --stores_[info.store].live;
    --sparse_live_;
    if (--info.live == 0) {
      // Nothing left: the page is free again (its records are garbage until
      // the next pass drops them).
      sparse_.Erase(page);
      --sparse_pages_;
      info.state =
          info.base_generation == kMaxGeneration ? kRetired : kReleased;
      if (info.state == kReleased) revivable_.Insert(page);
    }
    return;
  }
  const uint16_t generation = GenerationOf(DenseEntry(index));
  if (generation == kMaxGeneration) {
    // Exhausted: never reused, so no stale handle can ever match again.
    SetDenseEntry(index, FreeEntry(generation, 0));
  } else {
    if (info.free_head == 0) pages_with_room_.Insert(page);
    SetDenseEntry(index, FreeEntry(generation, info.free_head));
    info.free_head = static_cast<uint16_t>(slot + 1);
  }
  CountCandidate(info.live, info.live - 1u);
  if (--info.live == 0) {
    empty_.Insert(page);
    ++empty_pages_;
  }
}

uint16_t HandleTable::MaxGenerationOf(uint32_t page) const {
  uint16_t max_generation = pages_[page].base_generation;
  for (uint32_t slot = 0; slot < kEntriesPerPage; ++slot) {
    max_generation = std::max(
        max_generation, GenerationOf(DenseEntry((page << kSlotBits) + slot)));
  }
  return max_generation;
}

void HandleTable::ReleasePage(uint32_t page, uint16_t max_generation) {
  PageInfo& info = pages_[page];
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

bool HandleTable::Sparsify(uint32_t page) {
  PageInfo& info = pages_[page];
  DCHECK(SparseCandidate(info.state, info.live));
  SparseStore& store = stores_[store_];
  const uint32_t begin = static_cast<uint32_t>(store.records.size());
  if (!store.records.Grow(begin + info.live)) {
    failure_ = StoreCannotGrow(pool_);
    return false;
  }
  uint16_t max_generation = info.base_generation;
  uint32_t k = begin;
  for (uint32_t slot = 0; slot < kEntriesPerPage; ++slot) {
    const uint64_t entry = DenseEntry((page << kSlotBits) + slot);
    max_generation = std::max(max_generation, GenerationOf(entry));
    if (entry & kLiveBit) {
      SetRecord(&store.records[k++], static_cast<uint16_t>(slot), entry);
    }
  }
  DCHECK_EQ(k - begin, info.live);
  CountCandidate(info.live, 0);
  // The free entries' generations are gone with the page: later entries
  // start above all of them.
  info.base_generation = max_generation;
  info.free_head = 0;
  info.state = kSparse;
  info.store = store_;
  info.sparse_begin = begin;
  info.sparse_count = info.live;
  store.live += info.live;
  sparse_live_ += info.live;
  ++sparse_pages_;
  sparse_.Insert(page);
  pages_with_room_.Erase(page);
  --present_pages_;
  return true;
}

bool HandleTable::MoveRecords(uint32_t page, uint8_t target) {
  PageInfo& info = pages_[page];
  DCHECK_EQ(info.state, kSparse);
  SparseStore& from = stores_[info.store];
  SparseStore& to = stores_[target];
  const uint32_t begin = static_cast<uint32_t>(to.records.size());
  if (!to.records.Grow(begin + info.live)) {
    failure_ = StoreCannotGrow(pool_);
    return false;
  }
  uint32_t k = begin;
  for (uint32_t i = 0; i < info.sparse_count; ++i) {
    const SparseRecord& r = from.records[info.sparse_begin + i];
    if (RecordEntry(r) & kLiveBit) to.records[k++] = r;
  }
  DCHECK_EQ(k - begin, info.live);
  from.live -= info.live;
  to.live += info.live;
  info.store = target;
  info.sparse_begin = begin;
  info.sparse_count = info.live;
  return true;
}

absl::Status HandleTable::Densify(uint32_t page, bool resident) {
  PageInfo& info = pages_[page];
  DCHECK_EQ(info.state, kSparse);
  const uint32_t first = (page << kSlotBits);
  if (!resident) {
    if (absl::Status s = os_->Commit(EntryAddress(first), kPageBytes);
        !s.ok()) {
      return CommitFailed(pool_, s);
    }
  }
  const bool reusable = info.base_generation != kMaxGeneration;
  for (uint32_t slot = 0; slot < kEntriesPerPage; ++slot) {
    SetDenseEntry(first + slot, FreeEntry(info.base_generation, 0));
  }
  SparseStore& store = stores_[info.store];
  for (uint32_t i = 0; i < info.sparse_count; ++i) {
    SparseRecord& r = store.records[info.sparse_begin + i];
    const uint64_t entry = RecordEntry(r);
    if (!(entry & kLiveBit)) continue;
    SetDenseEntry(first + RecordSlot(r), entry);
    SetRecord(&r, RecordSlot(r), entry & ~kLiveBit);  // garbage now
  }
  // The free entries, lowest first.
  info.free_head = 0;
  if (reusable) {
    for (uint32_t slot = kEntriesPerPage; slot-- > 0;) {
      if (DenseEntry(first + slot) & kLiveBit) continue;
      SetDenseEntry(first + slot,
                    FreeEntry(info.base_generation, info.free_head));
      info.free_head = static_cast<uint16_t>(slot + 1);
    }
  }
  store.live -= info.live;
  sparse_live_ -= info.live;
  --sparse_pages_;
  sparse_.Erase(page);
  info.state = kPresent;
  ++present_pages_;
  if (info.free_head != 0) pages_with_room_.Insert(page);
  CountCandidate(0, info.live);
  return absl::OkStatus();
}

int64_t HandleTable::SparsePassGain() const {
  // After a pass, one store holds every live sparse entry, packed; the
  // candidates' pages are returned. (Compact finishes an unfinished pass
  // first, and packs again if records died meanwhile in what it had
  // filled: it ends in the same state.)
  const uint64_t records_after = sparse_live_ + candidate_live_;
  const uint64_t store_after =
      OsMemory::RoundUpToPage(records_after * kSparseRecordBytes);
  const uint64_t store_now =
      stores_[0].records.resident_bytes() + stores_[1].records.resident_bytes();
  return static_cast<int64_t>(candidates_ * kPageBytes + store_now) -
         static_cast<int64_t>(store_after);
}

uint64_t HandleTable::reclaimable_bytes() const {
  const int64_t pass = SparsePassGain();
  return empty_pages_ * kPageBytes + (pass > 0 ? pass : 0);
}

bool HandleTable::ReleaseEmptyPages(absl::Time deadline, uint64_t* freed) {
  while (std::optional<size_t> lowest = empty_.Lowest()) {
    // A run of neighbouring empty pages goes back in one madvise.
    const uint32_t first = static_cast<uint32_t>(*lowest);
    uint32_t end = first;
    // Their generations are read before the purge zeroes them.
    max_generations_.clear();
    while (end < pages_used_ && empty_.Contains(end) && end - first < 1024) {
      max_generations_.push_back(MaxGenerationOf(end));
      ++end;
    }
    if (absl::Status s = os_->Purge(EntryAddress(first << kSlotBits),
                                    uint64_t{end - first} * kPageBytes);
        !s.ok()) {
      failure_ = PurgeFailed(pool_, s);  // the pages stay as they are
      return true;
    }
    for (uint32_t page = first; page < end; ++page) {
      ReleasePage(page, max_generations_[page - first]);
    }
    *freed += uint64_t{end - first} * kPageBytes;
    if (absl::Now() >= deadline) return !empty_.Lowest().has_value();
  }
  return true;
}

void HandleTable::FlushPurge(uint64_t* freed) {
  if (purge_end_ == purge_first_) return;
  const uint32_t first = purge_first_;
  const uint32_t end = purge_end_;
  purge_first_ = purge_end_ = 0;
  if (absl::Status s = os_->Purge(EntryAddress(first << kSlotBits),
                                  uint64_t{end - first} * kPageBytes);
      !s.ok()) {
    // The pages are still resident with their entries: back into service.
    for (uint32_t page = first; page < end; ++page) {
      const absl::Status densified = Densify(page, /*resident=*/true);
      CHECK(densified.ok()) << densified;  // commits nothing: cannot fail
    }
    failure_ = PurgeFailed(pool_, s);
    return;
  }
  *freed += uint64_t{end - first} * kPageBytes;
}

bool HandleTable::SparsePass(absl::Time deadline, uint64_t* freed) {
  // Every sparse page moves to the other store, dropping dead records, and
  // every candidate joins it; then the old store is emptied.
  const uint8_t target = pass_target_;
  uint32_t since_check = 0;
  for (; pass_page_ < pages_used_; ++pass_page_) {
    const uint32_t page = pass_page_;
    PageInfo& info = pages_[page];
    if (SparseCandidate(info.state, info.live)) {
      if (!Sparsify(page)) {
        FlushPurge(freed);
        return true;  // failed: the pass stays unfinished
      }
      if (purge_end_ != page && purge_end_ != purge_first_) {
        // (The page just moved is not in this run.)
        FlushPurge(freed);
        if (!failure_.ok()) {
          purge_first_ = page;
          purge_end_ = page + 1;
          FlushPurge(freed);  // alone: returned, or back into service
          return true;
        }
        since_check = kPagesPerClockCheck - 1;  // a system call: look now
      }
      if (purge_end_ == purge_first_) purge_first_ = page;
      purge_end_ = page + 1;
    } else if (info.state == kSparse && info.store != target) {
      if (!MoveRecords(page, target)) {
        FlushPurge(freed);
        return true;
      }
    }
    if (++since_check == kPagesPerClockCheck) {
      since_check = 0;
      if (absl::Now() >= deadline) {
        FlushPurge(freed);
        ++pass_page_;
        return !failure_.ok();
      }
    }
  }
  FlushPurge(freed);
  if (!failure_.ok()) return true;
  SparseStore& old = stores_[target ^ 1];
  DCHECK_EQ(old.live, 0u);
  const uint64_t store_bytes = old.records.resident_bytes();
  if (absl::Status s = old.records.Clear(); !s.ok()) {
    // Its pages stay counted; the pass stays unfinished (else the gain it
    // leaves would start pass after pass).
    failure_ = PurgeFailed(pool_, s);
    return true;
  }
  *freed += store_bytes;
  return true;
}

void HandleTable::StartCompaction() {
  failure_ = absl::OkStatus();
  release_pending_ = true;
  // Pages before the cursor of an unfinished pass may have become candidates
  // meanwhile: it looks at every page again (those already in the target
  // store are skipped).
  pass_page_ = 0;
}

bool HandleTable::Compact(absl::Time deadline, uint64_t* freed) {
  if (!failure_.ok()) return true;
  if (release_pending_) {
    if (!ReleaseEmptyPages(deadline, freed)) return false;
    if (!failure_.ok()) return true;
    release_pending_ = false;
  }
  // A pass left unfinished by an earlier compaction is finished first. The
  // records that died meanwhile in the part of its target that it had
  // filled stay there, so a second pass may follow to pack them.
  while (pass_running_ || SparsePassGain() > 0) {
    if (!pass_running_) {
      pass_running_ = true;
      pass_page_ = 0;
      pass_target_ = store_ ^ 1;
      store_ = pass_target_;  // new records go to the target from now on
    }
    if (!SparsePass(deadline, freed)) return false;
    if (!failure_.ok()) return true;  // the pass stays unfinished
    pass_running_ = false;
  }
  return true;
}

absl::Status HandleTable::CheckResidency() const {
  if (entries_ == nullptr) return absl::OkStatus();
  const uint64_t resident =
      OsMemory::ResidentBytesIn(reinterpret_cast<const char*>(entries_),
                                uint64_t{pages_used_} * kPageBytes);
  if (resident != present_pages_ * kPageBytes) {
    return absl::InternalError(
        absl::StrCat("the ", PoolName(pool_), " pool's handle table counts ",
                     present_pages_ * kPageBytes,
                     " bytes of entry pages; the OS has ", resident));
  }
  return absl::OkStatus();
}

uint64_t HandleTable::resident_bytes() const {
  return present_pages_ * kPageBytes + pages_.resident_bytes() +
         pages_with_room_.resident_bytes() + revivable_.resident_bytes() +
         empty_.resident_bytes() + sparse_.resident_bytes() +
         stores_[0].records.resident_bytes() +
         stores_[1].records.resident_bytes();
}

}  // namespace poold::pools
