// DefragReport: what a defragmentation did, per pool and in total.
#ifndef POOLD_WORKER_POOLS_DEFRAG_REPORT_H_
#define POOLD_WORKER_POOLS_DEFRAG_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "worker/pools/fragmentation_stats.h"
#include "worker/pools/pool_kind.h"

namespace poold::pools {

enum class DefragOutcome : uint8_t {
  kCleaned,  // compacted completely
  kSkipped,  // nothing to gain
  kPartial,  // stopped early; consistent, and says what it did
  kFailed,   // could not run; `reason` says why
};

absl::string_view DefragOutcomeName(DefragOutcome outcome);

struct PoolDefragReport {
  PoolKind pool = PoolKind::kSmall;
  DefragOutcome outcome = DefragOutcome::kSkipped;
  std::string reason;
  FragmentationStats before;
  FragmentationStats after;
  uint64_t blocks_moved = 0;
  uint64_t bytes_moved = 0;
  uint64_t spans_released = 0;
  uint64_t bytes_reclaimed = 0;  // before.resident_bytes - after.resident_bytes
  absl::Duration duration;
};

struct DefragReport {
  std::vector<PoolDefragReport> pools;
  uint64_t bytes_reclaimed = 0;
  uint64_t bytes_moved = 0;
  uint64_t blocks_moved = 0;
  uint64_t spans_released = 0;
  uint64_t pools_cleaned = 0;
  uint64_t pools_skipped = 0;
  uint64_t pools_partial = 0;
  uint64_t pools_failed = 0;
  uint64_t slices = 0;
  absl::Duration max_slice;
  absl::Duration duration;
  // Resident set size of the process from the OS; filled by the caller that
  // reads /proc (the engine does not).
  uint64_t rss_before_bytes = 0;
  uint64_t rss_after_bytes = 0;
  // What the caller's trim of the process's malloc heap returned at the end.
  uint64_t heap_released_bytes = 0;
  // Resident bytes of every pool (also those not defragmented) when the
  // defragmentation began and ended.
  uint64_t pools_resident_before_bytes = 0;
  uint64_t pools_resident_after_bytes = 0;
  bool complete = false;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_DEFRAG_REPORT_H_
