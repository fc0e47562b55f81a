// SizeClasses: the slot sizes of the small and medium pools and how many slots
// of each fit in a span.
//
// small:  8, 12, 16, ..., 1024 bytes (4 B apart; 255 classes)
// medium: 1024, then 32 steps per power of two up to 65536 (at most 1/32
//         apart; 193 classes: 1/16 steps wasted ~2.3% of live bytes to
//         rounding on the RAMCloud workloads W7 and W8, 1/32 halves that)
// A block of size s is allocated in the smallest class whose slot holds s
// (a compaction may move it into a larger one: SlabPool::PlanCompaction).
#ifndef POOLD_WORKER_POOLS_SIZE_CLASSES_H_
#define POOLD_WORKER_POOLS_SIZE_CLASSES_H_

#include <cstdint>
#include <vector>

#include "worker/pools/pool_kind.h"

namespace poold::pools {

// One size class of a slab pool.
struct SizeClass {
  uint32_t slot_bytes = 0;
  // Slots per span, after the in-span header (if any).
  uint32_t slots = 0;
  // Bytes at the head of each span holding its occupancy bitmap (0 when the
  // pool keeps bitmaps beside its spans); slots start at this offset.
  uint32_t header_bytes = 0;
  // 64-bit words of the occupancy bitmap.
  uint32_t bitmap_words = 0;
  // Bytes of a span this class uses (header and slots, rounded up to a
  // page). Only these are committed; the tail of the span stays untouched
  // address space, so a slot size that divides the span badly wastes no
  // memory.
  uint32_t committed_bytes = 0;
  // floor(live * 8 / slots) == (live * bucket_multiplier) >> 32 for every
  // live < slots: the fullness eighth of a span without a division.
  uint64_t bucket_multiplier = 0;
};

class SizeClasses {
 public:
  // Classes of `pool` (kSmall or kMedium) for spans of `span_bytes`; when
  // `bitmap_in_span`, each span starts with its own occupancy bitmap.
  SizeClasses(PoolKind pool, uint64_t span_bytes, bool bitmap_in_span);

  // Index of the class for blocks of `size` bytes.
  // REQUIRES: size is within the pool's range.
  uint32_t ClassFor(uint64_t size) const;

  const SizeClass& Get(uint32_t index) const { return classes_[index]; }
  uint32_t count() const { return static_cast<uint32_t>(classes_.size()); }

  // Largest number of slots any class has per span.
  uint32_t max_slots() const { return max_slots_; }
  // Largest bitmap (in words) any class needs.
  uint32_t max_bitmap_words() const { return max_bitmap_words_; }
  // Largest difference between a block's size and its slot's.
  uint32_t max_delta() const { return max_delta_; }

 private:
  PoolKind pool_;
  std::vector<SizeClass> classes_;
  uint32_t max_slots_ = 0;
  uint32_t max_bitmap_words_ = 0;
  uint32_t max_delta_ = 0;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_SIZE_CLASSES_H_
