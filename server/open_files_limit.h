// RaiseOpenFilesLimit: lifts the process's soft limit on open files to its
// hard limit, so that a burst of connections does not exhaust it early.
#ifndef POOLD_SERVER_OPEN_FILES_LIMIT_H_
#define POOLD_SERVER_OPEN_FILES_LIMIT_H_

#include <cstdint>

#include "absl/status/statusor.h"

namespace poold {

struct OpenFilesLimit {
  uint64_t soft_before = 0;
  uint64_t soft = 0;  // now
  uint64_t hard = 0;
};

// Sets RLIMIT_NOFILE's soft limit to its hard limit (process-wide). Returns
// the limits, or the failing call with its errno text.
absl::StatusOr<OpenFilesLimit> RaiseOpenFilesLimit();

}  // namespace poold

#endif  // POOLD_SERVER_OPEN_FILES_LIMIT_H_
