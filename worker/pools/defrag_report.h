// DefragReport: what a defragmentation did, per pool and in total.
#ifndef POOLD_WORKER_POOLS_DEFRAG_REPORT_H_
#define POOLD_WORKER_POOLS_DEFRAG_REPORT_H_

#include <cstddef>
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
  kFailed,   // stopped by an OS failure; `reason` says which and what was
             // done before it (the pool is consistent)
};

inline constexpr size_t kDefragOutcomeCount = 4;

absl::string_view DefragOutcomeName(DefragOutcome outcome);

// Who asked for a defragmentation.
enum class DefragOrigin : uint8_t {
  kRpc,          // a TriggerDefragmentation call
  kMemoryLimit,  // allocations waiting for room under the memory limit
  kAutomatic,    // the worker's own policy (--auto_defrag)
};

inline constexpr size_t kDefragOriginCount = 3;

// "rpc", "memory limit": for logs and clients.
absl::string_view DefragOriginName(DefragOrigin origin);

// Why a defragmentation ended.
enum class DefragStopReason : uint8_t {
  kFinished,       // every pool asked for was done
  kDeadline,       // the caller's deadline (or the test's budget) ran out
  kCancelled,      // the client cancelled
  kShutdown,       // the server is shutting down
  kNoneWaiting,    // a memory-limit run: no allocation waits for room any more
  kPreempted,      // an automatic run gave way to a requested one
  kTargetReached,  // an automatic run: fragmentation below its stop threshold
};

// The reason in words, as reports and logs show it ("deadline exceeded").
absl::string_view DefragStopReasonText(DefragStopReason reason);

// What one slice of a defragmentation did.
struct DefragProgress {
  bool done = false;         // the defragmentation has finished
  uint64_t bytes_moved = 0;  // block bytes copied in this slice
  // Change of the pools' resident bytes in it: a slice can commit pages in
  // the spans it fills as well as return those it empties, so a slice's net
  // drop is bytes_reclaimed - bytes_committed (one of them is 0).
  uint64_t bytes_reclaimed = 0;
  uint64_t bytes_committed = 0;
};

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
  // Who asked for it and when it began (filled by the caller), and why it
  // ended.
  DefragOrigin origin = DefragOrigin::kRpc;
  absl::Time started_at = absl::InfinitePast();
  DefragStopReason stop_reason = DefragStopReason::kFinished;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_DEFRAG_REPORT_H_
