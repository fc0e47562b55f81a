// DefragSession: one defragmentation run by the worker, whoever asked for it
// (an RPC or the memory limit): its start, its slices, its end, its log lines
// and its counters, in one place.
#ifndef POOLD_WORKER_DEFRAG_SESSION_H_
#define POOLD_WORKER_DEFRAG_SESSION_H_

#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "worker/pools/defrag_report.h"
#include "worker/pools/pool_kind.h"
#include "worker/pools/pool_set.h"
#include "worker/worker_stats.h"

namespace poold {

// Drives a defragmentation of the engine from Begin to End. The caller runs
// the slices (Step) and decides when to stop; the session keeps what every
// origin shares: the INFO lines at the start and the end, the per-pool VLOG
// lines, the process's RSS around it, and the worker's counters.
// Worker thread only, like the engine it drives.
class DefragSession {
 public:
  // `engine` must outlive the session.
  DefragSession(pools::PoolSet& engine, pools::DefragOrigin origin);

  // REQUIRES: End() was called, or Begin() failed or never was.
  ~DefragSession();

  DefragSession(const DefragSession&) = delete;
  DefragSession& operator=(const DefragSession&) = delete;

  // Begins a defragmentation of `pools` (empty = all) and logs its start.
  // FAILED_PRECONDITION when the engine is already defragmenting.
  absl::Status Begin(const std::vector<pools::PoolKind>& pools);

  // Runs one slice of about `budget`; returns what it did and whether the
  // defragmentation has finished. REQUIRES: Begin() succeeded, End() not
  // called.
  pools::DefragProgress Step(absl::Duration budget);

  // Ends the defragmentation (stopping it if it has not finished, see
  // PoolSet::EndDefrag), then calls `trim_heap` (which returns the RSS it
  // released) and reads the process's RSS. Logs the outcome at INFO and each
  // pool at VLOG(1), counts the run in `stats`, and returns the report.
  // REQUIRES: Begin() succeeded, End() not called.
  pools::DefragReport End(pools::DefragStopReason reason,
                          absl::FunctionRef<uint64_t()> trim_heap,
                          WorkerStats& stats);

  pools::DefragOrigin origin() const { return origin_; }
  bool running() const { return running_; }
  // Sums over the slices run so far: block bytes moved, and the net drop of
  // the pools' resident bytes (0 if they grew).
  uint64_t bytes_moved() const { return bytes_moved_; }
  uint64_t bytes_reclaimed() const {
    return reclaimed_ > committed_ ? reclaimed_ - committed_ : 0;
  }

 private:
  pools::PoolSet& engine_;
  const pools::DefragOrigin origin_;
  bool running_ = false;
  absl::Time started_at_;
  uint64_t rss_before_ = 0;
  uint64_t bytes_moved_ = 0;
  uint64_t reclaimed_ = 0;
  uint64_t committed_ = 0;
};

}  // namespace poold

#endif  // POOLD_WORKER_DEFRAG_SESSION_H_
