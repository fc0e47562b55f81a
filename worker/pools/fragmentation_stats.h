// FragmentationStats: the exact counters of one size class, one pool or all
// pools, and the snapshot types that group them.
#ifndef POOLD_WORKER_POOLS_FRAGMENTATION_STATS_H_
#define POOLD_WORKER_POOLS_FRAGMENTATION_STATS_H_

#include <array>
#include <cstdint>
#include <vector>

#include "worker/pools/pool_kind.h"

namespace poold::pools {

// Counters kept on every operation (never by scanning the heap). Field
// meanings match poold.v1.FragmentationStats.
struct FragmentationStats {
  uint64_t live_bytes = 0;       // requested sizes of live blocks
  uint64_t allocated_bytes = 0;  // slot sizes / page-rounded extents
  uint64_t resident_bytes = 0;   // everything held from the OS
  uint64_t metadata_bytes = 0;   // bookkeeping, part of resident_bytes
  uint64_t free_bytes = 0;       // free slot bytes in partial spans
  uint64_t blocks = 0;
  uint64_t spans = 0;          // spans in use, or large-pool chunks
  uint64_t partial_spans = 0;  // spans with live and free slots
  uint64_t empty_spans = 0;    // empty spans retained for reuse
  uint64_t reclaimable_bytes = 0;
  uint64_t free_extents = 0;  // large pool
  uint64_t largest_free_extent_bytes = 0;
  uint64_t unpurged_bytes = 0;

  // 1 - live / resident; 0 when nothing is resident.
  double FragmentationRatio() const {
    if (resident_bytes == 0) return 0.0;
    return 1.0 - static_cast<double>(live_bytes) /
                     static_cast<double>(resident_bytes);
  }

  // Adds `other` field by field (largest_free_extent_bytes takes the max).
  void Add(const FragmentationStats& other);

  bool operator==(const FragmentationStats&) const = default;
};

// Statistics of one size class of a slab pool.
struct ClassStats {
  uint64_t slot_bytes = 0;
  FragmentationStats stats;
};

// Statistics of one pool; `classes` only when asked for, classes in use only.
struct PoolStats {
  PoolKind pool = PoolKind::kSmall;
  FragmentationStats stats;
  std::vector<ClassStats> classes;
};

// Statistics of all pools, indexed by PoolIndex(), and their sum.
struct PoolSetStats {
  std::array<PoolStats, kPoolCount> pools;
  FragmentationStats total;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_FRAGMENTATION_STATS_H_
