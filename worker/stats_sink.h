// StatsSink: where the worker publishes its statistics, so that readers
// (GetStats, /metrics) never wait for the worker or pass through its channel.
#ifndef POOLD_WORKER_STATS_SINK_H_
#define POOLD_WORKER_STATS_SINK_H_

#include "worker/worker_stats.h"

namespace poold {

// Receives each snapshot the worker publishes, as an owned value: the sink
// keeps what it needs, immutable, for its readers (DESIGN.md rule 1).
class StatsSink {
 public:
  virtual ~StatsSink() = default;

  // Takes the worker's latest statistics (with
  // snapshot.history_unchanged, the previous snapshot's defragmentation
  // reports still hold). Called on the
  // worker thread, the first time from the Worker's constructor, so it must
  // not block: a lock that readers hold only to copy a handle is fine.
  virtual void Publish(StatsSnapshot snapshot) = 0;
};

}  // namespace poold

#endif  // POOLD_WORKER_STATS_SINK_H_
