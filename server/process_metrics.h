// ProcessMetrics: what the standard Prometheus process_* metrics report about
// poold, read from /proc when asked.
#ifndef POOLD_SERVER_PROCESS_METRICS_H_
#define POOLD_SERVER_PROCESS_METRICS_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace poold {

// Meanings follow the Prometheus client libraries' process collector.
struct ProcessMetrics {
  double cpu_seconds = 0;         // user + system time so far
  double start_time_seconds = 0;  // since the Unix epoch
  uint64_t resident_memory_bytes = 0;
  uint64_t virtual_memory_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;  // the soft RLIMIT_NOFILE
};

// Reads the calling process's metrics from /proc/self/stat, /proc/stat (boot
// time), /proc/self/fd and getrlimit. INTERNAL, naming the file, when one
// cannot be read or parsed. Thread-safe.
absl::StatusOr<ProcessMetrics> ReadProcessMetrics();

}  // namespace poold

#endif  // POOLD_SERVER_PROCESS_METRICS_H_
