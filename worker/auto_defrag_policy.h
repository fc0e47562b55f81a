// AutoDefragPolicy: when the worker defragments on its own, which pools, at
// what CPU budget, and why; pure functions of the pools' statistics and the
// recent history, so they are tested without a worker or a clock.
#ifndef POOLD_WORKER_AUTO_DEFRAG_POLICY_H_
#define POOLD_WORKER_AUTO_DEFRAG_POLICY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "worker/pools/defrag_report.h"
#include "worker/pools/fragmentation_stats.h"
#include "worker/pools/pool_kind.h"

namespace poold {

// The knobs (flags --auto_defrag*; Redis's activedefrag settings are the
// model). Fragmentation is FragmentationStats::FragmentationRatio():
// 1 - live / resident, of all pools together.
struct AutoDefragOptions {
  bool enabled = false;
  // No run unless a full defragmentation would return at least this much
  // (the pools' exact reclaimable_bytes).
  uint64_t min_reclaimable_bytes = uint64_t{4} << 20;
  // A run starts at this fragmentation or more, and stops once it is below
  // stop_fragmentation. 0 <= stop <= start < 1.
  double start_fragmentation = 0.10;
  double stop_fragmentation = 0.05;
  // Share of one core a run may use: min_cpu_share at start_fragmentation,
  // rising linearly to max_cpu_share at twice it; and, while clients waste
  // memory fast, at least enough to reclaim kGrowthMargin times as fast as
  // they waste it. 0 < min <= max <= 1.
  double min_cpu_share = 0.01;
  double max_cpu_share = 0.25;
  // Time between two looks at the statistics, and the longest back-off.
  absl::Duration interval = absl::Seconds(1);
  // While waste (resident - live) grows, the next look comes when half the
  // room left below the threshold would be used at the growth rate seen,
  // but no sooner than this after the last. 0 < min_interval <= interval.
  absl::Duration min_interval = absl::Milliseconds(100);
  absl::Duration max_backoff = absl::Seconds(64);
};

// INVALID_ARGUMENT-style text when `options` break the rules above, else "".
std::string AutoDefragOptionsError(const AutoDefragOptions& options);

// What automatic defragmentation is doing now.
enum class AutoDefragState : uint8_t {
  kDisabled,    // --auto_defrag=false
  kIdle,        // looking, nothing worth a run
  kRunning,     // a run is in progress
  kBackingOff,  // recent runs returned little; no run before the back-off ends
};

// "disabled", "idle", "running", "backing off".
absl::string_view AutoDefragStateName(AutoDefragState state);

// What the policy remembers of earlier looks and runs. The worker keeps it
// and feeds it back; the functions below return its next value.
struct AutoDefragHistory {
  uint64_t runs = 0;
  // Consecutive runs that returned little (see RecordAutoDefragRun), and
  // when the back-off they caused ends.
  int poor_runs = 0;
  absl::Time backoff_until = absl::InfinitePast();
  // Fragmentation (all pools) right after the last poor run.
  double fragmentation_after_poor = 0;
  // The last look fell within a back-off (and so could not run).
  bool looked_while_backing_off = false;
  // The worker's count of allocations and frees at the last look and at the
  // end of the last run: when it has not moved, nothing can have changed.
  uint64_t mutations_at_last_look = 0;
  bool looked = false;
  // A run stopped before it was done (it gave way to a requested one): the
  // next look restarts it down to the stop threshold, not the start one.
  bool unfinished = false;
  // Fragmentation (all pools) when the last run was decided: a run after
  // which it is no lower made no headway against the clients.
  double fragmentation_at_start = 0;
  // What the last run aimed at and what it returned, for the reasons.
  uint64_t last_aimed_bytes = 0;
  uint64_t last_reclaimed_bytes = 0;
  // Why the last run counted as poor, in words and figures (empty when it
  // did not).
  std::string last_poor_reason;
  // Waste (resident - live, all pools) at the last look or at the end of
  // the last run, when that was, and how fast it grows (bytes per second:
  // the growth since the previous sighting, or the earlier estimate halved
  // per interval since, whichever is more; 0 when not growing).
  uint64_t waste_bytes = 0;
  absl::Time waste_seen_at = absl::InfinitePast();
  double waste_growth_per_second = 0;
  // Bytes that runs returned per second of the worker's CPU, averaged over
  // recent runs (0 before the first that returned any).
  double reclaimed_per_cpu_second = 0;
};

// Growth of waste below this many bytes per second counts as none.
inline constexpr double kNegligibleGrowthPerSecond = 1024;
// Runs reclaim at least this many times as fast as the clients waste
// memory, CPU ceiling permitting.
inline constexpr double kGrowthMargin = 4;
// What a run is assumed to return per second of CPU before one has been
// measured (compaction copies about 1 GiB/s on one core; a run also scans
// and returns pages).
inline constexpr double kAssumedReclaimedPerCpuSecond = 256.0 * (1 << 20);

// What the worker gives the policy at a look.
struct AutoDefragInput {
  absl::Time now;
  // Allocations and frees completed since the worker started.
  uint64_t mutations = 0;
  // The pools' statistics (Stats(false)), indexed by PoolIndex().
  pools::PoolSetStats stats;
};

// The policy's answer.
struct AutoDefragDecision {
  AutoDefragState state = AutoDefragState::kDisabled;
  bool run = false;
  std::vector<pools::PoolKind> pools;  // when run: the pools worth it
  double cpu_share = 0;                // when run: of one core
  uint64_t aimed_bytes = 0;            // when run: reclaimable of those pools
  absl::Time decided_at = absl::InfinitePast();
  absl::Time next_look = absl::InfiniteFuture();
  std::string reason;  // in words and figures
};

// Whether the worker needs the statistics for a look at `now`: false while
// disabled, or when no allocation or free happened since the last look (an
// idle server costs nothing); true for the first look after a run, and for
// the first once a back-off has ended if the last look fell within it.
// Looks go on while backing off (see DecideAutoDefrag).
bool AutoDefragWantsLook(const AutoDefragOptions& options,
                         const AutoDefragHistory& history, uint64_t mutations,
                         absl::Time now);

// The decision at a look. Also records the look in `history`, with the
// growth of waste since the previous one. While backing off, no run, unless
// fragmentation has climbed to twice the start threshold or more, above
// where the last poor run left it, with at least the minimum reclaimable:
// then a run at the CPU ceiling. The next look is due after `interval`, or
// sooner while waste grows (see AutoDefragOptions::min_interval).
AutoDefragDecision DecideAutoDefrag(const AutoDefragOptions& options,
                                    AutoDefragHistory& history,
                                    const AutoDefragInput& input);

// During a run, after a slice: a non-empty reason when the run should stop
// because `total` fragmentation went below the stop threshold.
std::string AutoDefragStopReason(const AutoDefragOptions& options,
                                 const pools::FragmentationStats& total);

// After a run ended (`report`, which aimed at `aimed_bytes`; `after` is the
// pools' total statistics then): counts it, and backs off when it returned
// little: less than half of what it aimed at, or when clients refragmented
// as fast as it cleaned (fragmentation no lower than when the run was
// decided, and still at or above the start threshold with at least the
// minimum reclaimable). A run that left fragmentation lower, even above the
// start threshold, is not poor: the next look follows at once, as the churn
// of clients that keep changing sizes needs. Each poor run in a row doubles
// the wait before the next run, from `interval` up to `max_backoff`; a run
// that pays resets it. A run that gave way or stopped for shutdown counts
// as neither. `cpu` is the worker's CPU time in the run's slices: with the
// bytes it returned, it updates the reclaim rate that sizes later budgets.
void RecordAutoDefragRun(const AutoDefragOptions& options,
                         AutoDefragHistory& history,
                         const pools::DefragReport& report,
                         uint64_t aimed_bytes,
                         const pools::FragmentationStats& after,
                         absl::Duration cpu, absl::Time now);

// "3.1 MiB": for reasons and logs.
std::string HumanBytes(uint64_t bytes);

}  // namespace poold

#endif  // POOLD_WORKER_AUTO_DEFRAG_POLICY_H_
