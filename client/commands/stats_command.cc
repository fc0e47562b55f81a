// poolctl stats [--classes] [--history] [--consistent]: fragmentation
// statistics of every pool, the worker's activity and latency, and its
// automatic defragmentation.
#include "absl/flags/flag.h"
#include "client/commands/commands.h"
#include "client/exit_codes.h"
#include "client/poolctl_flags.h"

namespace poold::client {

int RunStats(CommandEnv& env, const Args& /*args*/) {
  if (int code = env.Connect(); code != kExitOk) return code;
  absl::StatusOr<v1::GetStatsResponse> stats = env.client().GetStats(
      absl::GetFlag(FLAGS_classes), absl::GetFlag(FLAGS_history),
      absl::GetFlag(FLAGS_consistent));
  if (!stats.ok()) return env.Failed(stats.status());
  return env.Print(env.formatter().Stats(*stats));
}

}  // namespace poold::client
