// Names of defragmentation outcomes, origins and stop reasons, for logs and
// clients.
#include "worker/pools/defrag_report.h"

namespace poold::pools {

absl::string_view DefragOutcomeName(DefragOutcome outcome) {
  switch (outcome) {
    case DefragOutcome::kCleaned:
      return "cleaned";
    case DefragOutcome::kSkipped:
      return "skipped";
    case DefragOutcome::kPartial:
      return "partial";
    case DefragOutcome::kFailed:
      return "failed";
  }
  return "unknown";
}

absl::string_view DefragOriginName(DefragOrigin origin) {
  switch (origin) {
    case DefragOrigin::kRpc:
      return "rpc";
    case DefragOrigin::kMemoryLimit:
      return "memory limit";
    case DefragOrigin::kAutomatic:
      return "automatic";
  }
  return "unknown";
}

absl::string_view DefragStopReasonText(DefragStopReason reason) {
  switch (reason) {
    case DefragStopReason::kFinished:
      return "finished";
    case DefragStopReason::kDeadline:
      return "deadline exceeded";
    case DefragStopReason::kCancelled:
      return "cancelled by the client";
    case DefragStopReason::kShutdown:
      return "server shutting down";
    case DefragStopReason::kNoneWaiting:
      return "no allocation waits for room any more";
    case DefragStopReason::kPreempted:
      return "gave way to a requested defragmentation";
    case DefragStopReason::kTargetReached:
      return "fragmentation below the stop threshold";
  }
  return "unknown";
}

}  // namespace poold::pools
