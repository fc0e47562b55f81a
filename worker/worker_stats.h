// WorkerStats and StatsSnapshot: what GetStats reports about the worker thread
// and, together with the engine's statistics, about the whole server.
#ifndef POOLD_WORKER_WORKER_STATS_H_
#define POOLD_WORKER_WORKER_STATS_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
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
};

inline constexpr size_t kCommandTypeCount = 7;

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
  }
  return "Unknown";
}

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
  uint64_t heap_trims = 0;           // malloc heap handed back to the OS
  uint64_t heap_bytes_released = 0;  // RSS those trims returned

  uint64_t& completed_of(CommandType type) {
    return completed[static_cast<size_t>(type)];
  }
  uint64_t completed_of(CommandType type) const {
    return completed[static_cast<size_t>(type)];
  }
};

// Everything GetStats answers: the engine's statistics, the worker's and
// the whole process's memory.
struct StatsSnapshot {
  pools::PoolSetStats pools;
  WorkerStats worker;
  ProcessMemoryStats process;
};

}  // namespace poold

#endif  // POOLD_WORKER_WORKER_STATS_H_
