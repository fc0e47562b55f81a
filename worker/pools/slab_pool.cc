// SlabPool: spans, chunks, fullness lists, the free-span cache and counters.
#include "worker/pools/slab_pool.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "worker/pools/memory_limit_error.h"
#include "worker/pools/os_memory.h"
#include "worker/pools/prefetch.h"

namespace poold::pools {

SlabPool::~SlabPool() {
  for (uint32_t k = 0; k < chunk_slots_used_; ++k) {
    if (chunks_[k].base != nullptr) {
      if (absl::Status s = options_.os->Unmap(
              chunks_[k].base,
              uint64_t{options_.spans_per_chunk} * options_.span_bytes);
          !s.ok()) {
        LOG(WARNING) << "a " << PoolName(options_.pool)
                     << " chunk stays mapped: " << s;
      }
    }
  }
}

absl::Status SlabPool::Init(const SlabPoolOptions& options) {
  CHECK(options.pool != PoolKind::kLarge);
  CHECK_EQ(options.span_bytes % OsMemory::PageSize(), 0u);
  CHECK_GT(options.spans_per_chunk, 0u);
  options_ = options;
  start_ = absl::Now();
  classes_ = std::make_unique<SizeClasses>(options.pool, options.span_bytes,
                                           options.bitmap_in_span);
  const int slot_bits = std::bit_width(classes_->max_slots() - 1);
  const int delta_bits = HandleTable::kPayloadBits - kSpanBits - slot_bits;
  CHECK_GE(delta_bits, std::bit_width(classes_->max_delta()))
      << "span, slot and size delta must fit a handle-table payload";
  slot_mask_ = (1u << slot_bits) - 1;
  delta_shift_ = kSpanBits + slot_bits;
  max_guest_delta_ = (1u << delta_bits) - 1;
  max_host_.assign(classes_->count(), 0);
  min_block_.assign(classes_->count(), 0);
  for (uint32_t i = 0, h = 0; i < classes_->count(); ++i) {
    // The smallest block of class i is one byte above the slot below it.
    const uint32_t smallest =
        i > 0 ? classes_->Get(i - 1).slot_bytes + 1
              : (options.pool == PoolKind::kSmall ? 1 : kMediumMinBytes);
    min_block_[i] = smallest;
    h = std::max(h, i);
    while (h + 1 < classes_->count() &&
           classes_->Get(h + 1).slot_bytes - smallest <= max_guest_delta_) {
      ++h;
    }
    max_host_[i] = h;
  }
  counters_.assign(classes_->count(), ClassCounters{});
  heads_.assign(size_t{classes_->count()} * kListsPerClass, 0);

  const uint32_t max_spans = std::min(options.max_spans, 1u << 20);
  const uint32_t max_chunks = std::max(1u, max_spans / options.spans_per_chunk);
  const size_t span_capacity = size_t{max_chunks} * options.spans_per_chunk;
  if (absl::Status s = spans_.Init(span_capacity, *options.os); !s.ok())
    return s;
  if (absl::Status s = chunks_.Init(max_chunks, *options.os); !s.ok()) return s;
  if (absl::Status s = clean_.Init(span_capacity, *options.os); !s.ok())
    return s;
  if (!options.bitmap_in_span) {
    absl::Status s = side_bitmaps_.Init(
        span_capacity * classes_->max_bitmap_words(), *options.os);
    if (!s.ok()) return s;
  }
  return handles_.Init(options.pool, options.max_handles, options.handle_key,
                       *options.os);
}

uint64_t* SlabPool::Bitmap(uint32_t id) {
  if (options_.bitmap_in_span) return reinterpret_cast<uint64_t*>(SpanBase(id));
  return &side_bitmaps_[size_t{id} * classes_->max_bitmap_words()];
}

const uint64_t* SlabPool::Bitmap(uint32_t id) const {
  if (options_.bitmap_in_span) {
    return reinterpret_cast<const uint64_t*>(SpanBase(id));
  }
  return &side_bitmaps_[size_t{id} * classes_->max_bitmap_words()];
}

uint32_t SlabPool::SlotsWithin(const SizeClass& c, uint64_t committed) {
  if (committed <= c.header_bytes) return 0;
  return static_cast<uint32_t>(
      std::min<uint64_t>(c.slots, (committed - c.header_bytes) / c.slot_bytes));
}

uint32_t SlabPool::GrowthTarget(const SizeClass& c, uint32_t committed,
                                uint64_t end) {
  const uint64_t needed = OsMemory::RoundUpToPage(end);
  // A span's first slot commits only what it needs, so a class of a few
  // blocks holds a page or two; a span that keeps filling doubles.
  if (committed == 0) return static_cast<uint32_t>(needed);
  const uint64_t step =
      std::min<uint64_t>(std::max<uint64_t>(uint64_t{committed} + kGrowBytes,
                                            2 * uint64_t{committed}),
                         c.committed_bytes);
  return static_cast<uint32_t>(std::max(needed, step));
}

void SlabPool::SetCommitted(uint32_t id, uint32_t committed) {
  Span& span = spans_[id];
  DCHECK(span.state == kActive || span.state == kEvacuating);
  const SizeClass& c = classes_->Get(span.class_index);
  ClassCounters& counters = counters_[span.class_index];
  counters.committed_bytes += committed;
  counters.committed_bytes -= span.committed;
  counters.committed_slots += SlotsWithin(c, committed);
  counters.committed_slots -= SlotsWithin(c, span.committed);
  span_bytes_in_use_ += committed;
  span_bytes_in_use_ -= span.committed;
  span.committed = committed;
}

absl::Status SlabPool::GrowSpan(uint32_t id, uint64_t end,
                                uint64_t max_growth) {
  const Span& span = spans_[id];
  if (end <= span.committed) return absl::OkStatus();
  const SizeClass& c = classes_->Get(span.class_index);
  uint64_t target = GrowthTarget(c, span.committed, end);
  if (target - span.committed > max_growth) {
    // Whole pages only: the committed prefix stays page-aligned.
    const uint64_t page = OsMemory::PageSize();
    target = std::max(OsMemory::RoundUpToPage(end),
                      span.committed + max_growth / page * page);
  }
  char* const start = SpanBase(id) + span.committed;
  const uint64_t bytes = target - span.committed;
  ++span_os_calls_;
  if (absl::Status s = options_.os->Commit(start, bytes); !s.ok()) {
    // Pages the call made resident before it failed go back, so that
    // residency stays what we count.
    if (absl::Status undo = options_.os->Purge(start, bytes); !undo.ok()) {
      LOG(WARNING) << PoolName(options_.pool)
                   << " pool: pages of a failed commit stay resident: " << undo;
    }
    return absl::Status(s.code(),
                        absl::StrCat(PoolName(options_.pool),
                                     " pool: growing a span: ", s.message()));
  }
  SetCommitted(id, static_cast<uint32_t>(target));
  return absl::OkStatus();
}

absl::Status SlabPool::TrimSpan(uint32_t id, uint64_t end) {
  const Span& span = spans_[id];
  const uint64_t keep = OsMemory::RoundUpToPage(end);
  if (keep >= span.committed) return absl::OkStatus();
  ++span_os_calls_;
  if (absl::Status s =
          options_.os->Purge(SpanBase(id) + keep, span.committed - keep);
      !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat(PoolName(options_.pool),
                                     " pool: trimming a span: ", s.message()));
  }
  SetCommitted(id, static_cast<uint32_t>(keep));
  return absl::OkStatus();
}

void SlabPool::ListPush(uint32_t id, uint8_t list) {
  Span& span = spans_[id];
  uint32_t& head = ListHead(span.class_index, list);
  span.list = list;
  span.prev = 0;
  span.next = head;
  if (head != 0) spans_[head - 1].prev = id + 1;
  head = id + 1;
}

void SlabPool::ListRemove(uint32_t id) {
  Span& span = spans_[id];
  if (span.prev != 0) {
    spans_[span.prev - 1].next = span.next;
  } else {
    ListHead(span.class_index, span.list) = span.next;
  }
  if (span.next != 0) spans_[span.next - 1].prev = span.prev;
  span.prev = span.next = 0;
}

void SlabPool::PushDirty(uint32_t id) {
  Span& span = spans_[id];
  span.state = kDirty;
  span.hint = MillisSinceStart(absl::Now());
  span.prev = 0;
  span.next = dirty_head_;
  if (dirty_head_ != 0) spans_[dirty_head_ - 1].prev = id + 1;
  dirty_head_ = id + 1;
  if (dirty_tail_ == 0) dirty_tail_ = id + 1;
  ++dirty_spans_;
  dirty_bytes_ += span.committed;
}

void SlabPool::RemoveDirty(uint32_t id) {
  Span& span = spans_[id];
  DCHECK_EQ(span.state, kDirty);
  if (span.prev != 0) {
    spans_[span.prev - 1].next = span.next;
  } else {
    dirty_head_ = span.next;
  }
  if (span.next != 0) {
    spans_[span.next - 1].prev = span.prev;
  } else {
    dirty_tail_ = span.prev;
  }
  span.prev = span.next = 0;
  --dirty_spans_;
  dirty_bytes_ -= span.committed;
}

uint8_t SlabPool::ActiveListFor(const Span& span) const {
  const SizeClass& c = classes_->Get(span.class_index);
  if (span.live >= c.slots) return kFullList;
  return static_cast<uint8_t>((span.live * c.bucket_multiplier) >> 32);
}

void SlabPool::Refile(uint32_t id) {
  Span& span = spans_[id];
  DCHECK_EQ(span.state, kActive);
  const uint8_t list = ActiveListFor(span);
  if (list == span.list) return;
  ClassCounters& counters = counters_[span.class_index];
  if (span.list == kFullList) --counters.full_spans;
  if (list == kFullList) ++counters.full_spans;
  ListRemove(id);
  ListPush(id, list);
}

uint32_t SlabPool::FindAllocSpan(uint32_t class_index) const {
  const uint32_t* heads = &heads_[size_t{class_index} * kListsPerClass];
  for (int list = kBuckets - 1; list >= 0; --list) {
    if (heads[list] != 0) return heads[list] - 1;
  }
  return kNoSpan;
}

uint64_t SlabPool::NewSpanGrowthBytes(uint32_t class_index) const {
  const SizeClass& c = classes_->Get(class_index);
  // A new span commits what its first slot needs.
  const uint64_t first_slot = SlotsEnd(c, 1);
  if (dirty_head_ != 0) {
    const uint32_t cached = spans_[dirty_head_ - 1].committed;
    if (cached >= first_slot) return 0;
    return GrowthTarget(c, cached, first_slot) - cached;
  }
  const uint64_t committed = GrowthTarget(c, 0, first_slot);
  if (clean_.Lowest().has_value()) return committed;
  const size_t spans = size_t{chunk_slots_used_ + 1} * options_.spans_per_chunk;
  uint64_t bytes = committed + spans_.GrowthBytes(spans) +
                   chunks_.GrowthBytes(chunk_slots_used_ + 1);
  if (!options_.bitmap_in_span) {
    bytes += side_bitmaps_.GrowthBytes(spans * classes_->max_bitmap_words());
  }
  return bytes;
}

absl::Status SlabPool::MapChunk() {
  uint32_t k = 0;
  while (k < chunk_slots_used_ && chunks_[k].base != nullptr) ++k;
  if (k == chunk_slots_used_) {
    if (k >= chunks_.capacity()) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the ", PoolName(options_.pool),
                       " pool has no room for "
                       "more spans (",
                       chunks_.capacity(), " chunks)"));
    }
    const size_t spans = size_t{k + 1} * options_.spans_per_chunk;
    // (Each Grow is kept if a later one fails; a retry finds it done.)
    if (!chunks_.Grow(k + 1) || !spans_.Grow(spans) || !clean_.Grow(spans) ||
        (!options_.bitmap_in_span &&
         !side_bitmaps_.Grow(spans * classes_->max_bitmap_words()))) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the ", PoolName(options_.pool),
                       " pool could not commit the records of a new chunk"));
    }
    ++chunk_slots_used_;
  }
  const uint64_t bytes =
      uint64_t{options_.spans_per_chunk} * options_.span_bytes;
  absl::StatusOr<char*> base = options_.os->Reserve(bytes);
  if (!base.ok()) return base.status();
  chunks_[k] = Chunk{*base, 0, 0};
  const uint32_t first = k * options_.spans_per_chunk;
  for (uint32_t id = first; id < first + options_.spans_per_chunk; ++id) {
    spans_[id] = Span{};
    spans_[id].state = kClean;
    clean_.Insert(id);
  }
  ++chunks_mapped_;
  return absl::OkStatus();
}

void SlabPool::UnmapChunk(uint32_t chunk) {
  if (absl::Status s = options_.os->Unmap(
          chunks_[chunk].base,
          uint64_t{options_.spans_per_chunk} * options_.span_bytes);
      !s.ok()) {
    // Its spans stay clean (purged) and in service; only address space is
    // held.
    LOG_EVERY_N(WARNING, 100) << PoolName(options_.pool)
                              << " pool: an empty chunk stays mapped: " << s;
    return;
  }
  const uint32_t first = chunk * options_.spans_per_chunk;
  for (uint32_t id = first; id < first + options_.spans_per_chunk; ++id) {
    DCHECK_EQ(spans_[id].state, kClean);
    clean_.Erase(id);
    spans_[id].state = kUnmapped;
  }
  chunks_[chunk].base = nullptr;
  --chunks_mapped_;
}

absl::StatusOr<uint32_t> SlabPool::NewSpan(uint32_t class_index) {
  uint32_t id;
  const SizeClass& c = classes_->Get(class_index);
  uint32_t committed = 0;
  bool reused = false;
  if (dirty_head_ != 0) {
    id = dirty_head_ - 1;  // still resident: no page faults
    RemoveDirty(id);
    reused = true;
    // Keep what the new class can use of the committed part.
    committed = spans_[id].committed;
    if (committed > c.committed_bytes) {
      if (absl::Status s = options_.os->Purge(SpanBase(id) + c.committed_bytes,
                                              committed - c.committed_bytes);
          !s.ok()) {
        // It stays cached as it was; the class takes a clean span instead.
        LOG_EVERY_N(WARNING, 100) << PoolName(options_.pool)
                                  << " pool: a cached span stays whole: " << s;
        PushDirty(id);
        reused = false;
        committed = 0;
      } else {
        committed = c.committed_bytes;
      }
    }
  }
  if (!reused) {
    std::optional<size_t> clean = clean_.Lowest();
    if (!clean.has_value()) {
      if (absl::Status s = MapChunk(); !s.ok()) return s;
      clean = clean_.Lowest();
      CHECK(clean.has_value());
    }
    id = static_cast<uint32_t>(*clean);
    clean_.Erase(id);
    ++chunks_[id / options_.spans_per_chunk].in_use;
  }
  Span& span = spans_[id];
  span.live = 0;
  span.hint = 0;
  span.committed = 0;
  span.class_index = static_cast<uint16_t>(class_index);
  span.state = kActive;
  SetCommitted(id, committed);
  // The header and the first slot, committed now (so resident memory is what
  // we count); later slots as they are taken.
  if (absl::Status s = GrowSpan(id, SlotsEnd(c, 1)); !s.ok()) {
    // Back to the cache with what it held (a clean span holds nothing).
    SetCommitted(id, 0);
    spans_[id].committed = committed;
    PushDirty(id);
    return s;
  }
  uint64_t* bitmap = Bitmap(id);
  std::memset(bitmap, 0, size_t{c.bitmap_words} * 8);
  if (c.slots % 64 != 0) {
    // Bits past the last slot read as taken, so searches need no bound.
    bitmap[c.bitmap_words - 1] = ~uint64_t{0} << (c.slots % 64);
  }
  ++counters_[class_index].spans;
  ListPush(id, 0);
  return id;
}

uint32_t SlabPool::LowestFreeSlot(uint32_t id) {
  Span& span = spans_[id];
  const uint64_t* bitmap = Bitmap(id);
  uint32_t word = span.hint;
  while (bitmap[word] == ~uint64_t{0}) ++word;
  DCHECK_LT(word, classes_->Get(span.class_index).bitmap_words);
  span.hint = word;
  return word * 64 + std::countr_one(bitmap[word]);
}

uint32_t SlabPool::HighestLiveSlot(uint32_t id) const {
  const SizeClass& c = classes_->Get(spans_[id].class_index);
  const uint64_t* bitmap = Bitmap(id);
  for (uint32_t word = c.bitmap_words; word-- > 0;) {
    uint64_t bits = bitmap[word];
    if (word == c.bitmap_words - 1 && c.slots % 64 != 0) {
      bits &= ~(~uint64_t{0} << (c.slots % 64));  // drop the padding bits
    }
    if (bits != 0) return word * 64 + 63 - std::countl_zero(bits);
  }
  LOG(FATAL) << "span " << id << " has no live slot";
}

uint32_t SlabPool::LiveSlotsFrom(uint32_t id, uint32_t first) const {
  const SizeClass& c = classes_->Get(spans_[id].class_index);
  const uint64_t* bitmap = Bitmap(id);
  uint32_t count = 0;
  for (uint32_t word = first / 64; word < c.bitmap_words; ++word) {
    uint64_t bits = bitmap[word];
    if (word == first / 64) bits &= ~uint64_t{0} << (first % 64);
    if (word == c.bitmap_words - 1 && c.slots % 64 != 0) {
      bits &= ~(~uint64_t{0} << (c.slots % 64));
    }
    count += std::popcount(bits);
  }
  return count;
}

uint64_t SlabPool::TakeSlotGrowthBytes(uint32_t id) {
  const Span& span = spans_[id];
  const SizeClass& c = classes_->Get(span.class_index);
  const uint64_t end = SlotsEnd(c, LowestFreeSlot(id) + uint64_t{1});
  if (end <= span.committed) return 0;
  return OsMemory::RoundUpToPage(end) - span.committed;
}

absl::StatusOr<uint32_t> SlabPool::TakeSlot(uint32_t id, uint64_t max_growth) {
  Span& span = spans_[id];
  uint64_t* bitmap = Bitmap(id);
  uint32_t word = span.hint;
  while (bitmap[word] == ~uint64_t{0}) ++word;
  span.hint = word;
  const uint32_t slot = word * 64 + std::countr_one(bitmap[word]);
  const SizeClass& c = classes_->Get(span.class_index);
  const uint64_t end = SlotsEnd(c, slot + uint64_t{1});
  if (end > span.committed) [[unlikely]] {
    if (absl::Status s = GrowSpan(id, end, max_growth); !s.ok()) return s;
  }
  bitmap[word] |= uint64_t{1} << (slot % 64);
  ++span.live;
  if (span.state == kActive) Refile(id);
  return slot;
}

absl::StatusOr<BlockInfo> SlabPool::Allocate(uint64_t size,
                                             absl::string_view data,
                                             uint64_t headroom) {
  DCHECK(PoolForSize(size) == options_.pool);
  DCHECK_LE(data.size(), size);
  const uint32_t class_index = classes_->ClassFor(size);
  const SizeClass& c = classes_->Get(class_index);
  uint32_t id = FindAllocSpan(class_index);
  // Without a memory limit there is nothing to check.
  const uint64_t growth =
      headroom == UINT64_MAX
          ? 0
          : handles_.InsertGrowthBytes() +
                (id == kNoSpan ? NewSpanGrowthBytes(class_index)
                               : TakeSlotGrowthBytes(id));
  if (growth > headroom) {
    return MemoryLimitError(
        absl::StrCat("allocating ", size, " bytes needs ", growth,
                     " more resident bytes than the memory limit allows"),
        growth);
  }
  absl::StatusOr<HandleTable::Inserted> entry = handles_.Insert(0);
  if (!entry.ok()) return entry.status();
  if (id == kNoSpan) {
    absl::StatusOr<uint32_t> span = NewSpan(class_index);
    if (!span.ok()) {
      handles_.Remove(entry->index);
      return span.status();
    }
    id = *span;
  }
  // Under a memory limit, growth steps stop short of it.
  absl::StatusOr<uint32_t> taken = TakeSlot(
      id, headroom == UINT64_MAX ? UINT64_MAX
                                 : headroom - std::min(headroom, growth));
  if (!taken.ok()) {
    handles_.Remove(entry->index);
    if (spans_[id].live == 0) RetireSpan(id);  // the span opened for it
    return taken.status();
  }
  const uint32_t slot = *taken;
  const uint32_t delta = c.slot_bytes - static_cast<uint32_t>(size);
  handles_.SetPayload(entry->index, Pack(id, slot, delta));
  ClassCounters& counters = counters_[class_index];
  ++counters.blocks;
  counters.live_bytes += size;

  char* dest = SlotAddress(id, c, slot);
  if (!data.empty()) std::memcpy(dest, data.data(), data.size());
  std::memset(dest + data.size(), 0, size - data.size());
  return BlockInfo{entry->handle, options_.pool, size, c.slot_bytes};
}

absl::StatusOr<BlockRef> SlabPool::Lookup(uint64_t handle) {
  std::optional<uint32_t> index = handles_.Find(handle);
  if (!index.has_value()) {
    return absl::NotFoundError(absl::StrCat("no block with handle ", handle));
  }
  const uint64_t payload = handles_.Payload(*index);
  const uint32_t id = SpanOf(payload);
  const SizeClass& c = classes_->Get(spans_[id].class_index);
  return BlockRef{SlotAddress(id, c, SlotOf(payload)),
                  uint64_t{c.slot_bytes} - DeltaOf(payload)};
}

void SlabPool::Prefetch(uint64_t handle, PrefetchStep step) const {
  if (step == PrefetchStep::kEntry) {
    handles_.PrefetchHandle(handle);
    return;
  }
  const std::optional<uint64_t> payload = handles_.UncheckedPayload(handle);
  if (!payload.has_value()) return;
  // A live entry's payload names a slot of a span in use, whatever the
  // handle's tag: the address is one of this pool's blocks.
  const uint32_t id = SpanOf(*payload);
  const SizeClass& c = classes_->Get(spans_[id].class_index);
  const char* slot = SlotAddress(id, c, SlotOf(*payload));
  PrefetchForRead(slot);
  // A block of more than a cache line usually spans two.
  if (c.slot_bytes > 64) PrefetchForRead(slot + 64);
}

absl::Status SlabPool::Free(uint64_t handle) {
  std::optional<uint32_t> index = handles_.Find(handle);
  if (!index.has_value()) {
    return absl::NotFoundError(absl::StrCat("no block with handle ", handle));
  }
  const uint64_t payload = handles_.Payload(*index);
  const uint32_t id = SpanOf(payload);
  const SizeClass& c = classes_->Get(spans_[id].class_index);
  handles_.Remove(*index);
  ReleaseSlot(id, SlotOf(payload), uint64_t{c.slot_bytes} - DeltaOf(payload));
  return absl::OkStatus();
}

void SlabPool::ReleaseSlot(uint32_t id, uint32_t slot, uint64_t size) {
  Span& span = spans_[id];
  uint64_t* bitmap = Bitmap(id);
  const uint32_t word = slot / 64;
  DCHECK(bitmap[word] & (uint64_t{1} << (slot % 64)));
  bitmap[word] &= ~(uint64_t{1} << (slot % 64));
  if (word < span.hint) span.hint = word;
  --span.live;
  ClassCounters& counters = counters_[span.class_index];
  --counters.blocks;
  counters.live_bytes -= size;
  if (size < min_block_[span.class_index]) [[unlikely]]
    --counters.guests;
  if (span.live == 0) {
    RetireSpan(id);
  } else if (span.state == kActive) {
    Refile(id);
  }
}

void SlabPool::RetireSpan(uint32_t id) {
  Span& span = spans_[id];
  DCHECK_EQ(span.live, 0u);
  DCHECK(span.state == kActive || span.state == kEvacuating);
  ClassCounters& counters = counters_[span.class_index];
  if (span.list == kFullList) --counters.full_spans;
  ListRemove(id);
  const uint32_t committed = span.committed;
  SetCommitted(id, 0);         // the class lets go of the span's pages...
  span.committed = committed;  // ...which the cache now holds
  --counters.spans;
  PushDirty(id);
  if (!hold_cached_spans_) TrimCachedSpans();
}

void SlabPool::TrimCachedSpans() {
  while (dirty_bytes_ > options_.retained_bytes) {
    const uint32_t oldest = dirty_tail_ - 1;
    RemoveDirty(oldest);
    if (!PurgeSpan(oldest).ok()) return;  // cached again; a later call retries
  }
}

absl::Status SlabPool::PurgeSpan(uint32_t id) {
  if (absl::Status s = options_.os->Purge(SpanBase(id), spans_[id].committed);
      !s.ok()) {
    LOG_EVERY_N(WARNING, 100) << PoolName(options_.pool)
                              << " pool: a cached span stays resident: " << s;
    PushDirty(id);
    return s;
  }
  MarkPurged(id);
  return absl::OkStatus();
}

void SlabPool::MarkPurged(uint32_t id) {
  Span& span = spans_[id];
  span.state = kClean;
  span.live = 0;
  span.committed = 0;
  clean_.Insert(id);
  const uint32_t chunk = id / options_.spans_per_chunk;
  if (--chunks_[chunk].in_use == 0) UnmapChunk(chunk);
}

uint64_t SlabPool::TrimCache() {
  if (hold_cached_spans_) return 0;
  const uint64_t before = dirty_bytes_;
  TrimCachedSpans();
  return before > dirty_bytes_ ? before - dirty_bytes_ : 0;
}

uint64_t SlabPool::PurgeStaleCachedSpans(absl::Time now, absl::Duration age) {
  if (hold_cached_spans_) return 0;
  const uint32_t now_ms = MillisSinceStart(now);
  const uint32_t age_ms = static_cast<uint32_t>(absl::ToInt64Milliseconds(age));
  uint64_t released = 0;
  // The list's tail is the span cached longest ago.
  while (dirty_tail_ != 0 && now_ms - spans_[dirty_tail_ - 1].hint >= age_ms) {
    const uint32_t oldest = dirty_tail_ - 1;
    const uint64_t bytes = spans_[oldest].committed;
    RemoveDirty(oldest);
    if (!PurgeSpan(oldest).ok()) break;  // cached again, as new
    released += bytes;
  }
  return released;
}

absl::StatusOr<bool> SlabPool::PurgeCachedSpans(absl::Time deadline,
                                                uint64_t* purged) {
  // Batches of spans sorted by address, so that neighbours go back to the OS
  // in one madvise (each call costs a TLB shootdown).
  // About 4 MiB per batch keeps a batch well under a millisecond.
  const size_t kBatch =
      std::max<size_t>(1, (uint64_t{4} << 20) / options_.span_bytes);
  std::vector<uint32_t> batch;
  batch.reserve(kBatch);
  while (dirty_head_ != 0) {
    batch.clear();
    while (dirty_head_ != 0 && batch.size() < kBatch) {
      batch.push_back(dirty_head_ - 1);
      RemoveDirty(dirty_head_ - 1);
    }
    std::sort(batch.begin(), batch.end());
    const uint32_t per_chunk = options_.spans_per_chunk;
    for (size_t i = 0; i < batch.size();) {
      size_t j = i + 1;
      while (j < batch.size() && batch[j] == batch[j - 1] + 1 &&
             batch[j] / per_chunk == batch[i] / per_chunk) {
        ++j;
      }
      if (absl::Status s = options_.os->Purge(SpanBase(batch[i]),
                                              (j - i) * options_.span_bytes);
          !s.ok()) {
        // These spans and the rest of the batch stay cached, as they were.
        for (size_t k = i; k < batch.size(); ++k) PushDirty(batch[k]);
        return absl::Status(
            s.code(),
            absl::StrCat(PoolName(options_.pool),
                         " pool: purging cached spans: ", s.message()));
      }
      for (size_t k = i; k < j; ++k) MarkPurged(batch[k]);
      *purged += j - i;
      i = j;
      // A call can take a millisecond where TLB shootdowns are slow (VMs):
      // look at the clock after each one, and cache the rest again.
      if (i < batch.size() && absl::Now() >= deadline) {
        for (size_t k = i; k < batch.size(); ++k) PushDirty(batch[k]);
        return false;
      }
    }
    if (absl::Now() >= deadline) return dirty_head_ == 0;
  }
  return true;
}

uint64_t SlabPool::PurgeCaches() {
  const uint64_t cached = dirty_bytes_;
  uint64_t spans = 0;
  if (absl::StatusOr<bool> done =
          PurgeCachedSpans(absl::InfiniteFuture(), &spans);
      !done.ok()) {
    LOG_EVERY_N(WARNING, 100) << done.status();
  }
  return cached - dirty_bytes_ + handles_.Compact();
}

uint64_t SlabPool::SpanBytesResidentPerOs() const {
  uint64_t bytes = 0;
  for (uint32_t k = 0; k < chunk_slots_used_; ++k) {
    if (chunks_[k].base == nullptr) continue;
    bytes += OsMemory::ResidentBytesIn(
        chunks_[k].base,
        uint64_t{options_.spans_per_chunk} * options_.span_bytes);
  }
  return bytes;
}

absl::Status SlabPool::CheckInvariants() const {
  // Every live handle names a live slot of a span in use, with a size its
  // slot holds; their sizes add up to their classes' counters.
  std::vector<uint64_t> live_bytes(classes_->count(), 0);
  std::vector<uint64_t> guests(classes_->count(), 0);
  absl::Status bad_entry;
  for (uint32_t page = 0; page < HandleTable::PageOf(handles_.index_end());
       ++page) {
    handles_.ForEachLive(page, [&](uint32_t index, uint64_t payload) {
      const uint32_t id = SpanOf(payload);
      const uint32_t slot = SlotOf(payload);
      if (id >= spans_.size() ||
          (spans_[id].state != kActive && spans_[id].state != kEvacuating)) {
        bad_entry = absl::InternalError(absl::StrCat("handle entry ", index,
                                                     " names span ", id,
                                                     ", which is not in use"));
        return;
      }
      const uint32_t class_index = spans_[id].class_index;
      const SizeClass& c = classes_->Get(class_index);
      const uint32_t delta = DeltaOf(payload);
      if (slot >= c.slots || delta >= c.slot_bytes ||
          !(Bitmap(id)[slot / 64] & (uint64_t{1} << (slot % 64)))) {
        bad_entry = absl::InternalError(absl::StrCat(
            "handle entry ", index, " names slot ", slot, " of span ", id,
            " (class ", c.slot_bytes, ", delta ", delta, "), not live"));
        return;
      }
      const uint64_t size = uint64_t{c.slot_bytes} - delta;
      live_bytes[class_index] += size;
      if (size < min_block_[class_index]) {
        ++guests[class_index];
        if (size < counters_[class_index].guest_floor) {
          bad_entry = absl::InternalError(absl::StrCat(
              "handle entry ", index, ": a block of ", size, " bytes in class ",
              c.slot_bytes, ", below its guests' floor ",
              counters_[class_index].guest_floor));
        }
      }
    });
    if (!bad_entry.ok()) return bad_entry;
  }
  uint64_t in_use = 0;
  for (uint32_t i = 0; i < classes_->count(); ++i) {
    if (live_bytes[i] != counters_[i].live_bytes ||
        guests[i] != counters_[i].guests) {
      return absl::InternalError(absl::StrCat(
          "class ", classes_->Get(i).slot_bytes, ": counters say ",
          counters_[i].live_bytes, " live bytes and ", counters_[i].guests,
          " guests; the handles hold ", live_bytes[i], " and ", guests[i]));
    }
    const SizeClass& c = classes_->Get(i);
    const ClassCounters& counters = counters_[i];
    uint64_t spans = 0, full = 0, blocks = 0, committed = 0, slots = 0;
    for (uint8_t list = 0; list < kListsPerClass; ++list) {
      for (uint32_t id = heads_[size_t{i} * kListsPerClass + list]; id != 0;
           id = spans_[id - 1].next) {
        const Span& span = spans_[id - 1];
        const uint64_t* bitmap = Bitmap(id - 1);
        uint32_t bits = 0;
        for (uint32_t w = 0; w < c.bitmap_words; ++w) {
          bits += std::popcount(bitmap[w]);
        }
        bits -= c.bitmap_words * 64 - c.slots;  // the padding bits
        const bool evacuating = list == kEvacuatingList;
        if (span.class_index != i || span.list != list ||
            span.state != (evacuating ? kEvacuating : kActive) ||
            span.live != bits || span.live == 0 ||
            (!evacuating && list != ActiveListFor(span)) ||
            span.committed < OsMemory::RoundUpToPage(SlotsEnd(c, 1))) {
          return absl::InternalError(absl::StrCat(
              "span ", id - 1, " of class ", c.slot_bytes, ": live ", span.live,
              ", bitmap ", bits, ", state ", span.state, ", list ", span.list,
              " (on list ", list, "), committed ", span.committed));
        }
        ++spans;
        full += list == kFullList;
        blocks += span.live;
        committed += span.committed;
        slots += SlotsWithin(c, span.committed);
      }
    }
    if (spans != counters.spans || full != counters.full_spans ||
        blocks != counters.blocks || committed != counters.committed_bytes ||
        slots != counters.committed_slots) {
      return absl::InternalError(absl::StrCat(
          "class ", c.slot_bytes, ": counters say ", counters.spans, " spans, ",
          counters.blocks, " blocks, ", counters.committed_bytes,
          " committed; the spans hold ", spans, ", ", blocks, ", ", committed));
    }
    in_use += committed;
  }
  if (in_use != span_bytes_in_use_) {
    return absl::InternalError(absl::StrCat("spans in use commit ", in_use,
                                            " bytes; the pool counts ",
                                            span_bytes_in_use_));
  }
  return absl::OkStatus();
}

uint64_t SlabPool::SideMetadataBytes() const {
  return spans_.resident_bytes() + chunks_.resident_bytes() +
         side_bitmaps_.resident_bytes() + clean_.resident_bytes() +
         handles_.resident_bytes() + heads_.capacity() * sizeof(uint32_t) +
         counters_.capacity() * sizeof(ClassCounters) + transient_bytes_;
}

uint64_t SlabPool::resident_bytes() const {
  return dirty_bytes_ + span_bytes_in_use_ + SideMetadataBytes();
}

SlabPool::ClassCompaction SlabPool::OwnCompaction(uint32_t class_index,
                                                  uint64_t extra) const {
  const ClassCounters& counters = counters_[class_index];
  ClassCompaction result;
  result.host = class_index;
  if (counters.spans == 0) return result;
  const SizeClass& c = classes_->Get(class_index);
  // Every span full but the last, whose blocks take its lowest slots.
  const uint64_t blocks = counters.blocks + extra;
  result.keep = (blocks + c.slots - 1) / c.slots;
  result.tail_blocks = blocks - (result.keep - 1) * c.slots;
  result.committed_after =
      (result.keep - 1) * c.committed_bytes +
      OsMemory::RoundUpToPage(SlotsEnd(c, result.tail_blocks));
  if (counters.committed_bytes > result.committed_after) {
    result.gain = counters.committed_bytes - result.committed_after;
  }
  return result;
}

uint32_t SlabPool::GuestFloor(uint32_t class_index) const {
  const ClassCounters& counters = counters_[class_index];
  return counters.guests > 0
             ? std::min(counters.guest_floor, min_block_[class_index])
             : min_block_[class_index];
}

void SlabPool::PlanCompaction(std::vector<ClassCompaction>* plan,
                              const std::vector<uint32_t>* hosts) const {
  const uint32_t count = classes_->count();
  plan->resize(count);
  // Per class: the blocks it ends holding (its own and its guests'), a bound
  // below their sizes, and the bytes it ends committing: its packed layout
  // when it is compacted (it has something to give back, or guests), else
  // what it commits now.
  std::vector<uint64_t> total(count);
  std::vector<uint32_t> floor(count);
  std::vector<uint64_t> outcome(count);
  for (uint32_t i = 0; i < count; ++i) {
    (*plan)[i] = OwnCompaction(i, 0);
    total[i] = counters_[i].blocks;
    floor[i] = GuestFloor(i);
    outcome[i] =
        std::min((*plan)[i].committed_after, counters_[i].committed_bytes);
  }
  // Whether the host `h` can take guest `g`'s blocks, and its plan then.
  // Guests only fill the spans the host has, and only the pages the host
  // keeps for its own blocks: a merge never commits a page, so that when the
  // OS refuses the purge of a guest's emptied span, the merge has not made
  // the pool larger.
  auto can_host = [&](uint32_t g, uint32_t h, ClassCompaction* grown) {
    if (h <= g || h >= count || (*plan)[h].host != h ||
        counters_[h].blocks == 0 ||
        classes_->Get(h).slot_bytes - floor[g] > max_guest_delta_) {
      return false;
    }
    *grown = OwnCompaction(h, total[h] - counters_[h].blocks + total[g]);
    return grown->keep <= counters_[h].spans &&
           grown->committed_after <= outcome[h];
  };
  auto merge = [&](uint32_t g, uint32_t h, ClassCompaction grown) {
    // The class and its own guests go to the host.
    for (uint32_t m = 0; m <= g; ++m) {
      if ((*plan)[m].host == g) (*plan)[m].host = h;
    }
    total[h] += total[g];
    total[g] = 0;
    floor[h] = std::min(floor[h], floor[g]);
    outcome[h] = grown.committed_after;
    outcome[g] = 0;
    grown.guest_blocks = total[h] - counters_[h].blocks;
    (*plan)[h] = grown;
    ClassCompaction& guest = (*plan)[g];
    guest.keep = 0;
    guest.tail_blocks = classes_->Get(g).slots;
    guest.committed_after = 0;
    guest.guest_blocks = 0;
    guest.guest = true;
  };
  // A class that keeps no byte (outcome 0) has nothing to gain by a merge.
  if (hosts != nullptr) {
    for (uint32_t g = 0; g < count; ++g) {
      const uint32_t h = (*hosts)[g];
      if (h == g || total[g] == 0 || outcome[g] == 0) continue;
      ClassCompaction grown;
      if (can_host(g, h, &grown)) merge(g, h, grown);
    }
  } else {
    // Passes until none merges a class into another, so that the pool a
    // compaction leaves has nothing more to merge: it ends at a fixed
    // point, with nothing left to reclaim.
    for (bool merged = true; merged;) {
      merged = false;
      for (uint32_t g = 0; g < count; ++g) {
        if ((*plan)[g].host != g || total[g] == 0 || outcome[g] == 0) {
          continue;
        }
        // The smallest class that can take it (and its guests).
        for (uint32_t h = g + 1; h <= max_host_[g]; ++h) {
          if (classes_->Get(h).slot_bytes - floor[g] > max_guest_delta_) break;
          ClassCompaction grown;
          if (!can_host(g, h, &grown)) continue;
          merge(g, h, grown);
          merged = true;
          break;
        }
      }
    }
  }
  // Gains: a guest gives back its committed bytes, a host what it commits
  // beyond its layout after (a host never grows: see can_host), so the gains
  // add up to what the compaction returns.
  for (uint32_t i = 0; i < count; ++i) {
    ClassCompaction& c = (*plan)[i];
    if (c.guest) {
      c.gain = counters_[i].committed_bytes;
    } else if (c.guest_blocks > 0) {
      const uint64_t committed = counters_[i].committed_bytes;
      DCHECK_LE(c.committed_after, committed);
      c.gain =
          committed > c.committed_after ? committed - c.committed_after : 0;
    }
  }
}

void SlabPool::RankSpans(
    uint32_t class_index, uint64_t release,
    std::vector<std::pair<uint32_t, uint32_t>>* spans) const {
  spans->clear();
  for (uint8_t list = 0; list < kListsPerClass; ++list) {
    for (uint32_t id = heads_[size_t{class_index} * kListsPerClass + list];
         id != 0; id = spans_[id - 1].next) {
      spans->emplace_back(spans_[id - 1].live, id - 1);
    }
  }
  // (live, id) pairs are distinct, so the selection does not depend on the
  // order of the lists.
  const size_t ranked = std::min<size_t>(release + 1, spans->size());
  std::partial_sort(spans->begin(), spans->begin() + ranked, spans->end());
}

PoolStats SlabPool::Stats(bool include_classes) const {
  PoolStats result;
  result.pool = options_.pool;
  FragmentationStats& pool = result.stats;
  uint64_t header_bytes = 0;
  std::vector<ClassCompaction> plan;
  PlanCompaction(&plan);
  for (uint32_t i = 0; i < classes_->count(); ++i) {
    const ClassCounters& counters = counters_[i];
    if (counters.spans == 0) continue;
    const SizeClass& c = classes_->Get(i);
    FragmentationStats s;
    s.live_bytes = counters.live_bytes;
    s.blocks = counters.blocks;
    s.allocated_bytes = counters.blocks * c.slot_bytes;
    s.spans = counters.spans;
    s.partial_spans = counters.spans - counters.full_spans;
    // Free slots count where their pages are committed.
    s.free_bytes = (counters.committed_slots - counters.blocks) * c.slot_bytes;
    s.metadata_bytes = uint64_t{counters.spans} * c.header_bytes +
                       counters.blocks * HandleTable::kEntryBytes;
    s.resident_bytes =
        counters.committed_bytes + counters.blocks * HandleTable::kEntryBytes;
    s.reclaimable_bytes = plan[i].gain;
    header_bytes += uint64_t{counters.spans} * c.header_bytes;
    pool.live_bytes += s.live_bytes;
    pool.blocks += s.blocks;
    pool.allocated_bytes += s.allocated_bytes;
    pool.spans += s.spans;
    pool.partial_spans += s.partial_spans;
    pool.free_bytes += s.free_bytes;
    pool.reclaimable_bytes += s.reclaimable_bytes;
    if (include_classes) result.classes.push_back({c.slot_bytes, s});
  }
  pool.empty_spans = dirty_spans_;
  pool.metadata_bytes = SideMetadataBytes() + header_bytes;
  pool.resident_bytes = resident_bytes();
  pool.reclaimable_bytes += dirty_bytes_ + handles_.reclaimable_bytes();
  return result;
}

PoolAnalysis SlabPool::Analyze() const {
  PoolAnalysis analysis;
  analysis.pool = options_.pool;
  analysis.stats = Stats(/*include_classes=*/false).stats;
  std::vector<std::pair<uint32_t, uint32_t>> spans;
  std::vector<ClassCompaction> classes;
  PlanCompaction(&classes);
  for (uint32_t i = 0; i < classes_->count(); ++i) {
    const ClassCompaction& plan = classes[i];
    if (!plan.planned()) continue;
    const SizeClass& c = classes_->Get(i);
    const uint64_t release = counters_[i].spans - plan.keep;
    RankSpans(i, release, &spans);
    DCHECK_EQ(spans.size(), counters_[i].spans);
    // Every block of the spans released moves (a guest's to its host). The
    // kept spans other than the tail end full: their holes take those blocks
    // and the guests', and then the tail's top blocks. The tail's blocks
    // that lie beyond the pages its final count needs move down.
    uint64_t moved = 0;
    for (uint64_t k = 0; k < release; ++k) moved += spans[k].first;
    if (plan.host == i && plan.tail_blocks < c.slots) {
      uint64_t holes = 0;  // in the kept spans other than the tail
      for (size_t k = release + 1; k < spans.size(); ++k) {
        holes += c.slots - spans[k].first;
      }
      const uint64_t incoming = moved + plan.guest_blocks;
      const uint64_t beyond = LiveSlotsFrom(spans[release].second,
                                            PackedSlots(c, plan.tail_blocks));
      moved += std::max(holes > incoming ? holes - incoming : 0, beyond);
    }
    analysis.blocks_to_move += moved;
    analysis.bytes_to_move += moved * c.slot_bytes;
    analysis.spans_to_release += release;
  }
  analysis.spans_to_release += dirty_spans_;
  analysis.bytes_to_reclaim = analysis.stats.reclaimable_bytes;
  FragmentationStats after = analysis.stats;
  after.resident_bytes -= analysis.bytes_to_reclaim;
  analysis.ratio_after = after.FragmentationRatio();
  return analysis;
}

}  // namespace poold::pools
