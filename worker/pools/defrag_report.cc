// Names of defragmentation outcomes, for logs and clients.
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

}  // namespace poold::pools
