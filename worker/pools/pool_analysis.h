// PoolAnalysis: a pool's statistics plus what a full compaction would do now.
#ifndef POOLD_WORKER_POOLS_POOL_ANALYSIS_H_
#define POOLD_WORKER_POOLS_POOL_ANALYSIS_H_

#include <cstdint>

#include "worker/pools/fragmentation_stats.h"
#include "worker/pools/pool_kind.h"

namespace poold::pools {

struct PoolAnalysis {
  PoolKind pool = PoolKind::kSmall;
  FragmentationStats stats;
  uint64_t blocks_to_move = 0;
  uint64_t bytes_to_move = 0;
  uint64_t spans_to_release = 0;
  uint64_t bytes_to_reclaim = 0;  // == stats.reclaimable_bytes
  double ratio_after = 0.0;       // fragmentation ratio after compaction
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_POOL_ANALYSIS_H_
