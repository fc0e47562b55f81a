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
  const bool done = Advance(deadline);
  if (failure_.ok()) return done;
  // The OS refused a call: every block stays where it is now (readable,
  // counted), marked spans go back to service, and the pool's compaction
  // ends here.
  if (phase_ != Phase::kDone) Stop();
  return true;
}

bool SlabCompactor::Advance(absl::Time deadline) {
  // A phase that ended at the deadline hands the next one to the next step:
  // each phase does at least one piece of work per step.
  for (bool first = true;; first = false) {
    if (!first && absl::Now() >= deadline) return false;
    switch (phase_) {
      case Phase::kPlan:
        if (!PlanClasses(deadline)) return false;
        phase_ = sources_.empty() ? Phase::kPurge : Phase::kScan;
        if (phase_ == Phase::kPurge) pool_.handles_.StartCompaction();
        break;
      case Phase::kScan:
        if (!Scan(deadline)) return false;
        phase_ = Phase::kMove;
        break;
      case Phase::kMove:
        if (!Move(deadline)) return false;
        phase_ = Phase::kPurge;
        pool_.handles_.StartCompaction();
        break;
      case Phase::kPurge:
        // Emptied sources and previously cached spans, in batched calls.
        {
          absl::StatusOr<bool> purged =
              pool_.PurgeCachedSpans(deadline, &spans_released_);
          if (!purged.ok()) {
            failure_ = purged.status();
            return false;
          }
          if (!*purged) return false;
        }
        if (!pool_.handles_.Compact(deadline, &table_bytes_)) {
          return false;
        }
        if (!pool_.handles_.failure().ok()) {
          failure_ = pool_.handles_.failure();
          return false;
        }
        // Spans emptied from now on take the usual way (retired, trimmed
        // down to the retained amount): nothing is purged after this.
        pool_.hold_cached_spans_ = false;
        phase_ = Phase::kRelease;
        break;
      case Phase::kRelease:
        if (!ReleaseBookkeeping(deadline)) return false;
        phase_ = Phase::kDone;
        return true;
      case Phase::kDone:
        return true;
    }
  }
}

void SlabCompactor::UpdateTransientBytes() {
  pool_.transient_bytes_ =
      sources_.capacity() * sizeof(uint32_t) +
      offset_by_span_.capacity() * sizeof(uint32_t) +
      owners_.capacity() * sizeof(uint32_t*) +
      owner_blocks_.capacity() * sizeof(OwnerBlock) +
      plan_spans_.capacity() * sizeof(uint32_t) +
      tail_by_class_.capacity() * sizeof(uint32_t) +
      host_by_class_.capacity() * sizeof(uint32_t) +
      merges_.capacity() * sizeof(uint32_t) + hosts_planned_.capacity() / 8 +
      class_plans_.capacity() * sizeof(class_plans_[0]) +
      ranked_.capacity() * sizeof(ranked_[0]) +
      owner_slots_ * sizeof(uint32_t) + slots_.capacity() * sizeof(uint32_t);
}

bool SlabCompactor::ReleaseBookkeeping(absl::Time deadline) {
  // The moves are over: nothing reads the owner maps any more.
  std::vector<uint32_t*>().swap(owners_);
  while (!owner_blocks_.empty()) {
    const OwnerBlock block = owner_blocks_.back();
    owner_blocks_.pop_back();
    owner_slots_ -= block.slots;
    if (absl::Status s = pool_.options_.os->Unmap(block.base, block.bytes);
        !s.ok()) {
      // Address space only: the scan wrote owners into it, the pool counts
      // none of it.
      LOG_EVERY_N(WARNING, 100)
          << PoolName(pool_.options_.pool)
          << " pool: a compaction's owner map stays mapped: " << s;
    }
    if (!owner_blocks_.empty() && absl::Now() >= deadline) {
      UpdateTransientBytes();
      return false;
    }
  }
  // Assigning {} would keep the capacity; swapping frees it.
  std::vector<uint32_t>().swap(sources_);
  std::vector<uint32_t>().swap(offset_by_span_);
  std::vector<OwnerBlock>().swap(owner_blocks_);
  std::vector<uint32_t>().swap(plan_spans_);
  std::vector<uint32_t>().swap(tail_by_class_);
  std::vector<uint32_t>().swap(host_by_class_);
  std::vector<uint32_t>().swap(merges_);
  std::vector<bool>().swap(hosts_planned_);
  std::vector<SlabPool::ClassCompaction>().swap(class_plans_);
  std::vector<std::pair<uint32_t, uint32_t>>().swap(ranked_);
  std::vector<uint32_t>().swap(slots_);
  owner_slots_ = 0;
  UpdateTransientBytes();
  return true;
}

bool SlabCompactor::PlanClasses(absl::Time deadline) {
  const SizeClasses& classes = pool_.classes();
  if (tail_by_class_.empty()) {
    tail_by_class_.assign(classes.count(), SlabPool::kNoSpan);
    host_by_class_.assign(classes.count(), 0);
    for (uint32_t i = 0; i < classes.count(); ++i) host_by_class_[i] = i;
    hosts_planned_.assign(classes.count(), false);
    // Which classes move into which is decided once, here.
    pool_.PlanCompaction(&class_plans_);
    merges_.resize(classes.count());
    for (uint32_t i = 0; i < classes.count(); ++i) {
      merges_[i] = class_plans_[i].host;
    }
  } else {
    // The layouts of the classes not planned yet, from the counters as they
    // are now (frees and allocations may have run since the last step).
    pool_.PlanCompaction(&class_plans_, &merges_);
  }
  while (next_class_ < classes.count()) {
    const SizeClass& c = classes.Get(next_class_);
    if (plan_next_ == plan_spans_.size()) {
      // Choose the class's sources, its emptiest spans beyond the fewest
      // that can hold its blocks (a guest keeps none), and its tail, the
      // emptiest span kept.
      plan_spans_.clear();
      plan_next_ = 0;
      const SlabPool::ClassCompaction& plan = class_plans_[next_class_];
      if (plan.planned()) {
        host_by_class_[next_class_] = plan.host;
        if (plan.guest_blocks > 0) hosts_planned_[next_class_] = true;
        const uint64_t release = pool_.counters_[next_class_].spans - plan.keep;
        pool_.RankSpans(next_class_, release, &ranked_);
        for (uint64_t k = 0; k < release; ++k) {
          plan_spans_.push_back(ranked_[k].second);
        }
        if (plan.host == next_class_ && plan.tail_blocks < c.slots) {
          plan_spans_.push_back(ranked_[release].second);
          tail_by_class_[next_class_] = ranked_[release].second;
        }
      }
      if (!plan_spans_.empty()) {
        // One owners array for the class, in fresh address space: only
        // the scan and the moves write it, and only for live slots, so
        // pages are touched only where blocks are and unmapping it is cheap.
        const uint64_t bytes = OsMemory::RoundUpToPage(
            plan_spans_.size() * c.slots * sizeof(uint32_t));
        absl::StatusOr<char*> base = pool_.options_.os->Reserve(bytes);
        if (!base.ok()) {
          // The spans planned so far are marked; Step() stops the
          // compaction (and reinstates them) and the pool is FAILED.
          plan_spans_.clear();
          tail_by_class_[next_class_] = SlabPool::kNoSpan;
          failure_ = absl::Status(
              base.status().code(),
              absl::StrCat(PoolName(pool_.pool()),
                           " pool: reserving a compaction's owner map: ",
                           base.status().message()));
          return false;
        }
        owner_blocks_.push_back({*base, bytes, plan_spans_.size() * c.slots});
        owner_slots_ += plan_spans_.size() * c.slots;
        if (offset_by_span_.size() < pool_.spans_.size()) {
          offset_by_span_.resize(pool_.spans_.size(), kNoOffset);
        }
      }
      if (plan_spans_.empty()) {
        ++next_class_;
        continue;
      }
    }
    // Mark the spans, a few at a time between looks at the clock.
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
      // Emptied by frees since the class was planned (a step can end in the
      // middle of its spans): cached, or in service again, maybe for
      // another class. Not this class's to mark any more.
      if (span.state != SlabPool::kActive || span.class_index != next_class_) {
        if (tail_by_class_[next_class_] == id) {
          tail_by_class_[next_class_] = SlabPool::kNoSpan;
        }
        continue;
      }
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
    const uint32_t page = HandleTable::PageOf(scan_index_);
    table.ForEachLive(page, [this](uint32_t index, uint64_t payload) {
      const uint32_t id = SlabPool::SpanOf(payload);
      if (id >= offset_by_span_.size() || offset_by_span_[id] == kNoOffset ||
          pool_.spans_[id].state != SlabPool::kEvacuating) {
        return;
      }
      owners_[offset_by_span_[id]][pool_.SlotOf(payload)] = index;
    });
    scan_index_ = (page + 1) * HandleTable::kIndexesPerPage;
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
  if (tail_by_class_[span.class_index] == id) {
    tail_by_class_[span.class_index] = SlabPool::kNoSpan;
  }
}

uint32_t SlabCompactor::MarkedTail(uint32_t class_index) const {
  const uint32_t tail = tail_by_class_[class_index];
  // A tail emptied by frees since the plan may serve another class now,
  // and even be marked for that class's compaction.
  if (tail == SlabPool::kNoSpan ||
      pool_.spans_[tail].state != SlabPool::kEvacuating ||
      pool_.spans_[tail].class_index != class_index) {
    return SlabPool::kNoSpan;
  }
  return tail;
}

bool SlabCompactor::MoveBlock(uint32_t id, uint32_t slot, uint32_t index,
                              uint32_t dest) {
  HandleTable& table = pool_.handles_;
  SlabPool::Span& span = pool_.spans_[id];
  const SizeClass& c = pool_.classes().Get(span.class_index);
  const uint32_t dest_class = pool_.spans_[dest].class_index;
  const SizeClass& to = pool_.classes().Get(dest_class);
  CHECK(table.IsLive(index)) << "reverse map out of date";
  const uint64_t payload = table.Payload(index);
  CHECK(SlabPool::SpanOf(payload) == id && pool_.SlotOf(payload) == slot)
      << "reverse map out of date";
  absl::StatusOr<uint32_t> taken = pool_.TakeSlot(dest);
  if (!taken.ok()) {
    failure_ = taken.status();
    return false;
  }
  const uint32_t dest_slot = *taken;
  std::memcpy(pool_.SlotAddress(dest, to, dest_slot),
              pool_.SlotAddress(id, c, slot), c.slot_bytes);
  // A guest's block keeps its size: its slot grows, so does its delta.
  const uint32_t delta =
      pool_.DeltaOf(payload) + (to.slot_bytes - c.slot_bytes);
  CHECK_LE(delta, pool_.max_guest_delta_)
      << "a guest slot too large for its block";
  table.SetPayload(index, pool_.Pack(dest, dest_slot, delta));
  if (dest_class != span.class_index) {
    const uint64_t size = uint64_t{to.slot_bytes} - delta;
    SlabPool::ClassCounters& from = pool_.counters_[span.class_index];
    --from.blocks;
    from.live_bytes -= size;
    // The bound below the block's size that the plan used: its class's, or
    // its class's guests' (so that the next plan sees what this one
    // planned for).
    const uint32_t floor = pool_.GuestFloor(span.class_index);
    if (size < pool_.min_block_[span.class_index]) --from.guests;
    SlabPool::ClassCounters& into = pool_.counters_[dest_class];
    ++into.blocks;
    into.live_bytes += size;
    if (size < pool_.min_block_[dest_class]) {
      into.guest_floor =
          into.guests == 0 ? floor : std::min(into.guest_floor, floor);
      ++into.guests;
    }
  }
  // A block that lands in a marked span (a tail) may have to move again. A
  // span marked at the plan but emptied by frees since may be in service
  // again, even for another class: its old map must not be written.
  if (dest < offset_by_span_.size() && offset_by_span_[dest] != kNoOffset &&
      pool_.spans_[dest].state == SlabPool::kEvacuating) {
    owners_[offset_by_span_[dest]][dest_slot] = index;
  }
  pool_.Bitmap(id)[slot / 64] &= ~(uint64_t{1} << (slot % 64));
  if (slot / 64 < span.hint) span.hint = slot / 64;
  --span.live;
  ++blocks_moved_;
  bytes_moved_ += c.slot_bytes;
  return true;
}

bool SlabCompactor::Evacuate(uint32_t id, absl::Time deadline) {
  HandleTable& table = pool_.handles_;
  SlabPool::Span& span = pool_.spans_[id];
  const uint32_t class_index = span.class_index;
  const SizeClass& c = pool_.classes().Get(class_index);
  const uint64_t* bitmap = pool_.Bitmap(id);
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
  uint32_t since_check = 0;
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
    // A guest's blocks go to its host's spans, if the host was planned to
    // take them (else they could grow spans that nothing trims after).
    const uint32_t host = host_by_class_[class_index];
    if (host != class_index && !hosts_planned_[host]) {
      Reinstate(id);
      ++spans_abandoned_;
      return true;
    }
    uint32_t dest = pool_.FindAllocSpan(host);
    if (dest == SlabPool::kNoSpan) {
      // The kept spans are full: the tail's lowest free slots come next.
      dest = MarkedTail(host);
      if (dest == SlabPool::kNoSpan ||
          pool_.spans_[dest].live >= pool_.classes().Get(host).slots) {
        // Allocations since the plan took the room: keep the span.
        Reinstate(id);
        ++spans_abandoned_;
        return true;
      }
    }
    if (!MoveBlock(id, slot, owners[slot], dest)) return false;
    if (span.live == 0) {
      pool_.RetireSpan(id);  // cached; the purge phase returns it
      return true;
    }
    // Every kMovesPerClockCheck moves, and after any move that made a
    // system call (a span grew): one can take milliseconds.
    if (++since_check == kMovesPerClockCheck ||
        pool_.span_os_calls() != os_calls_) {
      since_check = 0;
      os_calls_ = pool_.span_os_calls();
      if (absl::Now() >= deadline) {
        move_slot_ = slot + 1;
        return false;
      }
    }
  }
  return true;
}

bool SlabCompactor::PackTail(uint32_t id, absl::Time deadline) {
  SlabPool::Span& span = pool_.spans_[id];
  const uint32_t class_index = span.class_index;
  const SizeClass& c = pool_.classes().Get(class_index);
  const uint32_t* owners = owners_[offset_by_span_[id]];
  uint32_t since_check = 0;
  // Top block first: into a kept span's hole while there is one (the kept
  // spans end full), else down into the tail's lowest free slot, until every
  // block lies in the fewest pages that can hold them.
  while (span.live > 0) {
    const uint32_t top = pool_.HighestLiveSlot(id);
    uint32_t dest = pool_.FindAllocSpan(class_index);
    if (dest == SlabPool::kNoSpan) {
      if (top < pool_.PackedSlots(c, span.live)) {
        failure_ = pool_.TrimSpan(id, SlabPool::SlotsEnd(c, top + uint64_t{1}));
        if (!failure_.ok()) return false;
        break;
      }
      dest = id;  // its lowest free slot is below `top`
    }
    if (!MoveBlock(id, top, owners[top], dest)) return false;
    if (span.live == 0) break;  // retired below, before any pause
    // Every kMovesPerClockCheck moves, and after any move that made a
    // system call (a span grew): one can take milliseconds.
    if (++since_check == kMovesPerClockCheck ||
        pool_.span_os_calls() != os_calls_) {
      since_check = 0;
      os_calls_ = pool_.span_os_calls();
      if (absl::Now() >= deadline) return false;
    }
  }
  if (span.live == 0) {
    tail_by_class_[class_index] = SlabPool::kNoSpan;
    pool_.RetireSpan(id);  // emptied into kept spans: cached, then purged
  } else {
    Reinstate(id);
  }
  return true;
}

bool SlabCompactor::Move(absl::Time deadline) {
  for (; move_source_ < sources_.size(); ++move_source_, move_slot_ = 0) {
    const uint32_t id = sources_[move_source_];
    const SlabPool::Span& span = pool_.spans_[id];
    // Emptied by frees (and released) since the plan: nothing left to move.
    if (span.state != SlabPool::kEvacuating) continue;
    const bool tail = tail_by_class_[span.class_index] == id;
    if (!(tail ? PackTail(id, deadline) : Evacuate(id, deadline))) {
      return false;
    }
  }
  return true;
}

void SlabCompactor::Stop(bool trim_cache) {
  for (uint32_t id : sources_) {
    // (No marked span is ever left empty between steps; a span is retired
    // as soon as its last block moves.)
    if (pool_.spans_[id].state == SlabPool::kEvacuating) Reinstate(id);
  }
  pool_.hold_cached_spans_ = false;
  if (trim_cache) pool_.TrimCachedSpans();
  ReleaseBookkeeping(absl::InfiniteFuture());
  phase_ = Phase::kDone;
}

}  // namespace poold::pools
