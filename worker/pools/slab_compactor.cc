// SlabCompactor: plan, scan, move and purge, each resumable between steps.
#include "worker/pools/slab_compactor.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <utility>

#include "glog/logging.h"
#include "worker/pools/os_memory.h"

namespace poold::pools {
namespace {

// How many moves run between two looks at the clock.
constexpr uint32_t kMovesPerClockCheck = 16;

}  // namespace

SlabCompactor::SlabCompactor(SlabPool& pool) : pool_(pool) {
  pool_.hold_cached_spans_ = true;
}

SlabCompactor::~SlabCompactor() {
  if (!done()) Stop();
}

bool SlabCompactor::Step(absl::Time deadline) {
  while (true) {
    switch (phase_) {
      case Phase::kPlan:
        if (!PlanClasses(deadline)) return false;
        phase_ = sources_.empty() ? Phase::kPurge : Phase::kScan;
        break;
      case Phase::kScan:
        if (!Scan(deadline)) return false;
        phase_ = Phase::kMove;
        break;
      case Phase::kMove:
        if (!Move(deadline)) return false;
        phase_ = Phase::kPurge;
        break;
      case Phase::kPurge:
        // Emptied sources and previously cached spans, in batched calls.
        if (!pool_.PurgeCachedSpans(deadline, &spans_released_)) return false;
        if (!pool_.handles_.ReleaseEmptyPages(deadline, &table_bytes_)) {
          return false;
        }
        ReleaseBookkeeping();
        pool_.hold_cached_spans_ = false;
        phase_ = Phase::kDone;
        return true;
      case Phase::kDone:
        return true;
    }
  }
}

void SlabCompactor::UpdateTransientBytes() {
  pool_.transient_bytes_ = sources_.capacity() * sizeof(uint32_t) +
                           offset_by_span_.capacity() * sizeof(uint32_t) +
                           owners_.capacity() * sizeof(uint32_t*) +
                           owner_blocks_.capacity() * sizeof(OwnerBlock) +
                           plan_spans_.capacity() * sizeof(uint32_t) +
                           owner_slots_ * sizeof(uint32_t) +
                           slots_.capacity() * sizeof(uint32_t);
}

void SlabCompactor::ReleaseBookkeeping() {
  // Assigning {} would keep the capacity; swapping frees it.
  std::vector<uint32_t>().swap(sources_);
  std::vector<uint32_t>().swap(offset_by_span_);
  std::vector<uint32_t*>().swap(owners_);
  for (const OwnerBlock& block : owner_blocks_) {
    OsMemory::Unmap(block.base, block.bytes);
  }
  std::vector<OwnerBlock>().swap(owner_blocks_);
  std::vector<uint32_t>().swap(plan_spans_);
  std::vector<uint32_t>().swap(slots_);
  owner_slots_ = 0;
  UpdateTransientBytes();
}

bool SlabCompactor::PlanClasses(absl::Time deadline) {
  const SizeClasses& classes = pool_.classes();
  while (next_class_ < classes.count()) {
    const SizeClass& c = classes.Get(next_class_);
    if (plan_next_ == plan_spans_.size()) {
      // Choose the class's sources: its emptiest spans beyond the fewest
      // that can hold its blocks.
      plan_spans_.clear();
      plan_next_ = 0;
      const SlabPool::ClassCounters& counters = pool_.counters_[next_class_];
      const uint64_t needed = (counters.blocks + c.slots - 1) / c.slots;
      const uint64_t release =
          counters.spans > needed ? counters.spans - needed : 0;
      if (release > 0) {
        std::vector<std::pair<uint32_t, uint32_t>> spans;  // (live, id)
        spans.reserve(counters.spans);
        for (uint8_t list = 0; list <= SlabPool::kFullList; ++list) {
          for (uint32_t id = pool_.ListHead(next_class_, list); id != 0;
               id = pool_.spans_[id - 1].next) {
            spans.emplace_back(pool_.spans_[id - 1].live, id - 1);
          }
        }
        if (spans.size() >= release) {  // fewer only after an earlier Stop()
          std::nth_element(spans.begin(), spans.begin() + (release - 1),
                           spans.end());
          for (uint64_t k = 0; k < release; ++k) {
            plan_spans_.push_back(spans[k].second);
          }
          // One owners array for the class, in fresh address space: only
          // the scan writes it, and only for live slots, so pages are
          // touched only where blocks are and unmapping it is cheap.
          const uint64_t bytes =
              OsMemory::RoundUpToPage(release * c.slots * sizeof(uint32_t));
          absl::StatusOr<char*> base = OsMemory::Reserve(bytes);
          if (!base.ok()) {
            LOG(ERROR) << "compaction of the " << PoolName(pool_.pool())
                       << " pool skips a class: " << base.status();
            plan_spans_.clear();
            ++next_class_;
            continue;
          }
          owner_blocks_.push_back({*base, bytes});
          owner_slots_ += release * c.slots;
          if (offset_by_span_.size() < pool_.spans_.size()) {
            offset_by_span_.resize(pool_.spans_.size(), kNoOffset);
          }
        }
      }
      if (plan_spans_.empty()) {
        ++next_class_;
        continue;
      }
    }
    // Mark the sources, a few at a time between looks at the clock.
    uint32_t* block = reinterpret_cast<uint32_t*>(owner_blocks_.back().base);
    for (int n = 0; plan_next_ < plan_spans_.size(); ++plan_next_, ++n) {
      if (n == 64) {
        n = 0;
        if (absl::Now() >= deadline) {
          UpdateTransientBytes();
          return false;
        }
      }
      const uint32_t id = plan_spans_[plan_next_];
      SlabPool::Span& span = pool_.spans_[id];
      if (span.list == SlabPool::kFullList) {
        --pool_.counters_[next_class_].full_spans;
      }
      pool_.ListRemove(id);
      span.state = SlabPool::kEvacuating;
      pool_.ListPush(id, SlabPool::kEvacuatingList);
      offset_by_span_[id] = static_cast<uint32_t>(sources_.size());
      owners_.push_back(block + uint64_t{plan_next_} * c.slots);
      sources_.push_back(id);
    }
    plan_spans_.clear();
    plan_next_ = 0;
    ++next_class_;
    UpdateTransientBytes();
    if (absl::Now() >= deadline) return next_class_ >= classes.count();
  }
  return true;
}

bool SlabCompactor::Scan(absl::Time deadline) {
  const HandleTable& table = pool_.handles_;
  const uint32_t end = table.index_end();
  while (scan_index_ < end) {
    const uint32_t page = scan_index_ / HandleTable::kEntriesPerPage;
    if (table.PagePresent(page)) {
      const uint64_t* entries = table.PageEntries(page);
      for (uint32_t i = 0; i < HandleTable::kEntriesPerPage; ++i) {
        const uint64_t entry = entries[i];
        if (!HandleTable::EntryIsLive(entry)) continue;
        const uint64_t payload = HandleTable::EntryPayload(entry);
        const uint32_t id = SlabPool::SpanOf(payload);
        if (id >= offset_by_span_.size() || offset_by_span_[id] == kNoOffset ||
            pool_.spans_[id].state != SlabPool::kEvacuating) {
          continue;
        }
        owners_[offset_by_span_[id]][SlabPool::SlotOf(payload)] =
            page * HandleTable::kEntriesPerPage + i;
      }
    }
    scan_index_ = (page + 1) * HandleTable::kEntriesPerPage;
    if (absl::Now() >= deadline) return scan_index_ >= end;
  }
  return true;
}

void SlabCompactor::Reinstate(uint32_t id) {
  SlabPool::Span& span = pool_.spans_[id];
  DCHECK_EQ(span.state, SlabPool::kEvacuating);
  pool_.ListRemove(id);
  span.state = SlabPool::kActive;
  span.hint = 0;
  const uint8_t list = pool_.ActiveListFor(span);
  if (list == SlabPool::kFullList)
    ++pool_.counters_[span.class_index].full_spans;
  pool_.ListPush(id, list);
}

bool SlabCompactor::Move(absl::Time deadline) {
  HandleTable& table = pool_.handles_;
  uint32_t since_check = 0;
  for (; move_source_ < sources_.size(); ++move_source_, move_slot_ = 0) {
    const uint32_t id = sources_[move_source_];
    SlabPool::Span& span = pool_.spans_[id];
    // Emptied by frees (and released) since the plan: nothing left to move.
    if (span.state != SlabPool::kEvacuating) continue;
    const uint32_t class_index = span.class_index;
    const SizeClass& c = pool_.classes().Get(class_index);
    uint64_t* bitmap = pool_.Bitmap(id);
    const uint32_t* owners = owners_[offset_by_span_[id]];
    // The live slots still to move, in address order.
    slots_.clear();
    for (uint32_t word = move_slot_ / 64; word < c.bitmap_words; ++word) {
      uint64_t bits = bitmap[word];
      if (word == c.bitmap_words - 1 && c.slots % 64 != 0) {
        bits &= ~(~uint64_t{0} << (c.slots % 64));  // drop the padding bits
      }
      if (word == move_slot_ / 64) bits &= ~uint64_t{0} << (move_slot_ % 64);
      for (; bits != 0; bits &= bits - 1) {
        slots_.push_back(word * 64 + std::countr_zero(bits));
      }
    }
    // Handle-table entries are scattered: fetch them ahead of their moves.
    for (size_t k = 0; k < std::min(kPrefetchDistance, slots_.size()); ++k) {
      table.Prefetch(owners[slots_[k]]);
    }
    for (size_t k = 0; k < slots_.size(); ++k) {
      if (k + kPrefetchDistance < slots_.size()) {
        const uint32_t ahead = slots_[k + kPrefetchDistance];
        table.Prefetch(owners[ahead]);
        const char* block = pool_.SlotAddress(id, c, ahead);
        for (uint32_t off = 0; off < c.slot_bytes && off < 512; off += 64) {
          __builtin_prefetch(block + off);
        }
      }
      const uint32_t slot = slots_[k];
      const uint32_t index = owners[slot];
      CHECK(table.IsLive(index)) << "reverse map out of date";
      const uint64_t payload = table.Payload(index);
      CHECK(SlabPool::SpanOf(payload) == id &&
            SlabPool::SlotOf(payload) == slot)
          << "reverse map out of date";
      const uint32_t dest = pool_.FindAllocSpan(class_index);
      if (dest == SlabPool::kNoSpan) {
        // Allocations since the plan took the room: keep the span.
        Reinstate(id);
        ++spans_abandoned_;
        break;
      }
      const uint32_t dest_slot = pool_.TakeSlot(dest);
      std::memcpy(pool_.SlotAddress(dest, c, dest_slot),
                  pool_.SlotAddress(id, c, slot), c.slot_bytes);
      table.SetPayload(
          index, SlabPool::Pack(dest, dest_slot, SlabPool::DeltaOf(payload)));
      bitmap[slot / 64] &= ~(uint64_t{1} << (slot % 64));
      --span.live;
      ++blocks_moved_;
      bytes_moved_ += c.slot_bytes;
      if (span.live == 0) {
        pool_.RetireSpan(id);  // cached; the purge phase returns it
        break;
      }
      if (++since_check == kMovesPerClockCheck) {
        since_check = 0;
        if (absl::Now() >= deadline) {
          move_slot_ = slot + 1;
          return false;
        }
      }
    }
  }
  return true;
}

void SlabCompactor::Stop() {
  for (uint32_t id : sources_) {
    if (pool_.spans_[id].state == SlabPool::kEvacuating) Reinstate(id);
  }
  pool_.hold_cached_spans_ = false;
  pool_.TrimCachedSpans();
  ReleaseBookkeeping();
  phase_ = Phase::kDone;
}

}  // namespace poold::pools
