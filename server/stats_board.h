// StatsBoard: the latest statistics the worker published, serialized once as
// GetStatsResponse bytes that every reader (GetStats, /metrics) shares.
#ifndef POOLD_SERVER_STATS_BOARD_H_
#define POOLD_SERVER_STATS_BOARD_H_

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/slice.h"
#include "worker/stats_sink.h"

namespace poold {

// The worker publishes here (on its own thread); readers on any thread take
// the latest without touching the pools or passing through the channel.
// What is shared is immutable bytes held by gRPC slices (reference-counted
// by gRPC): the lock is held only to swap or copy those handles (DESIGN.md
// rule 1).
class StatsBoard final : public StatsSink {
 public:
  // One published snapshot as three serialized parts of a
  // poold.v1.GetStatsResponse. Concatenated, serialized messages merge, so
  // an answer is `without_classes` or `with_classes`, then `history` if
  // asked, then the transport's counters, read when answering.
  struct Published {
    // Every field but transport and recent_defragmentations;
    // pools[].classes empty / filled.
    grpc::Slice without_classes;
    grpc::Slice with_classes;
    // recent_defragmentations only.
    grpc::Slice history;
    // StatsSnapshot::sequence; 0 before the first publication.
    uint64_t sequence = 0;
  };

  StatsBoard() = default;
  StatsBoard(const StatsBoard&) = delete;
  StatsBoard& operator=(const StatsBoard&) = delete;

  // Serializes `snapshot` and makes it the latest; with
  // snapshot.history_unchanged, the latest's reports are kept. One
  // publisher at a time (the worker); thread-safe against readers.
  void Publish(StatsSnapshot snapshot) override;

  // The latest snapshot (sequence 0, empty slices, before the first).
  // Thread-safe; never waits for more than another thread's copy or swap.
  Published Latest() const;

 private:
  mutable absl::Mutex mu_;
  Published latest_ ABSL_GUARDED_BY(mu_);
};

}  // namespace poold

#endif  // POOLD_SERVER_STATS_BOARD_H_
