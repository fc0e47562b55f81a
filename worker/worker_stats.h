// WorkerStats, AutoDefragStats and StatsSnapshot: what GetStats reports about
// the worker thread and, together with the engine's statistics, about the whole
// server.
#ifndef POOLD_WORKER_WORKER_STATS_H_
#define POOLD_WORKER_WORKER_STATS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/auto_defrag_policy.h"
#include "worker/latency_histogram.h"
#include "worker/pools/defrag_report.h"
#include "worker/pools/fragmentation_stats.h"
#include "worker/process_memory.h"

namespace poold {

// The kinds of Command, one per RPC. The order matches Command::Op.
enum class CommandType : uint8_t {
  kAllocate = 0,
  kWrite,
  kRead,
  kFree,
  kGetStats,
  kAnalyzeFragmentation,
  kTriggerDefragmentation,
  kBatch,
};

inline constexpr size_t kCommandTypeCount = 8;

// The RPC name of `type`, e.g. "Allocate": the key of
// poold.v1.WorkerStats.commands_completed.
constexpr absl::string_view CommandTypeName(CommandType type) {
  switch (type) {
    case CommandType::kAllocate:
      return "Allocate";
    case CommandType::kWrite:
      return "Write";
    case CommandType::kRead:
      return "Read";
    case CommandType::kFree:
      return "Free";
    case CommandType::kGetStats:
      return "GetStats";
    case CommandType::kAnalyzeFragmentation:
      return "AnalyzeFragmentation";
    case CommandType::kTriggerDefragmentation:
      return "TriggerDefragmentation";
    case CommandType::kBatch:
      return "Batch";
  }
  return "Unknown";
}

// What the defragmentations of one origin did. Field meanings match
// poold.v1.DefragOriginStats.
struct DefragOriginStats {
  uint64_t runs = 0;
  uint64_t bytes_reclaimed = 0;
  uint64_t bytes_moved = 0;
  uint64_t blocks_moved = 0;
  // [pool][outcome] (by PoolIndex and DefragOutcome): how often a run of this
  // origin left that pool with that outcome.
  std::array<std::array<uint64_t, pools::kDefragOutcomeCount>,
             pools::kPoolCount>
      pool_outcomes = {};
  // How long each of its slices took.
  LatencyHistogram slices;
};

// Activity of the worker thread. Field meanings match poold.v1.WorkerStats.
struct WorkerStats {
  uint64_t queue_depth = 0;  // commands waiting when the snapshot was taken
  uint64_t channel_capacity = 0;
  // Commands the worker completed (with any status), by CommandType.
  std::array<uint64_t, kCommandTypeCount> completed = {};
  uint64_t refused = 0;           // answered RESOURCE_EXHAUSTED: channel full
  uint64_t defragmentations = 0;  // TriggerDefragmentation runs
  uint64_t total_bytes_reclaimed = 0;          // by every defragmentation
  uint64_t memory_limit_defragmentations = 0;  // run to make room
  uint64_t automatic_defragmentations = 0;     // run by --auto_defrag
  uint64_t allocations_waiting_for_room = 0;   // when the snapshot was taken
  uint64_t long_copies_in_progress = 0;        // when the snapshot was taken
  // Commands and batches waiting for blocks that long copies keep busy.
  uint64_t commands_waiting_for_blocks = 0;
  uint64_t heap_trims = 0;           // malloc heap handed back to the OS
  uint64_t heap_bytes_released = 0;  // RSS those trims returned
  // Per pool (by PoolIndex): defragmentations in which it FAILED, and the
  // reason of the last one.
  std::array<uint64_t, pools::kPoolCount> pool_defrag_failures = {};
  std::array<std::string, pools::kPoolCount> last_pool_defrag_failure;
  // By DefragOrigin.
  std::array<DefragOriginStats, pools::kDefragOriginCount> by_origin;
  // By CommandType: time from Submit until the worker began the command,
  // and from then until it was completed.
  std::array<LatencyHistogram, kCommandTypeCount> queue_wait;
  std::array<LatencyHistogram, kCommandTypeCount> service_time;

  uint64_t& completed_of(CommandType type) {
    return completed[static_cast<size_t>(type)];
  }
  uint64_t completed_of(CommandType type) const {
    return completed[static_cast<size_t>(type)];
  }
};

// What automatic defragmentation is doing and why. Field meanings match
// poold.v1.AutoDefragStats.
struct AutoDefragStats {
  AutoDefragState state = AutoDefragState::kDisabled;
  std::string last_decision;  // the reason, in words and figures
  bool last_decision_ran = false;
  absl::Time last_decision_at = absl::InfinitePast();
  absl::Time next_look_at = absl::InfiniteFuture();
  uint64_t runs = 0;
  uint64_t bytes_reclaimed = 0;
  absl::Duration cpu_time;  // the worker thread's CPU time in its slices
  double cpu_share = 0;     // of the run in progress (or the last)
  uint64_t poor_runs = 0;   // in a row, behind the back-off
};

// Everything GetStats answers: the engine's statistics, the worker's and
// the whole process's memory, automatic defragmentation, and (when asked)
// the last defragmentation reports, oldest first.
struct StatsSnapshot {
  // When the worker took it, and its number: 1 for the first one a worker
  // publishes, then one more for each (0: taken for one GetStats call).
  absl::Time taken_at = absl::InfinitePast();
  uint64_t sequence = 0;
  // Only in published snapshots: true when no defragmentation ended since
  // the previous publication, so recent_defragmentations is left empty and
  // the previous one's still holds.
  bool history_unchanged = false;
  pools::PoolSetStats pools;
  WorkerStats worker;
  ProcessMemoryStats process;
  AutoDefragStats auto_defrag;
  std::vector<pools::DefragReport> recent_defragmentations;
};

}  // namespace poold

#endif  // POOLD_WORKER_WORKER_STATS_H_
