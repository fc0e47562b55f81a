// poolctl watch [--interval=1s] [--iterations=N] [--classes]: the stats table
// refreshed in place on a terminal, with request and reclaim rates between
// two refreshes.
#include <unistd.h>

#include <iostream>
#include <optional>
#include <string>
#include <utility>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/commands/commands.h"
#include "client/exit_codes.h"
#include "client/poolctl_flags.h"

namespace poold::client {

int RunWatch(CommandEnv& env, const Args& /*args*/) {
  const absl::Duration interval = absl::GetFlag(FLAGS_interval);
  if (interval <= absl::ZeroDuration()) {
    return env.UsageError(
        absl::InvalidArgumentError("--interval must be positive"));
  }
  const uint64_t iterations = absl::GetFlag(FLAGS_iterations);
  if (int code = env.Connect(); code != kExitOk) return code;
  // On a terminal each refresh replaces the last; in a pipe or a file the
  // refreshes follow each other.
  const bool terminal = isatty(STDOUT_FILENO) == 1;
  std::optional<v1::GetStatsResponse> previous;
  int code = kExitOk;
  for (uint64_t i = 0; iterations == 0 || i < iterations; ++i) {
    const absl::Time start = absl::Now();
    absl::StatusOr<v1::GetStatsResponse> stats =
        env.client().GetStats(absl::GetFlag(FLAGS_classes));
    absl::StatusOr<std::string> table =
        stats.ok() ? env.formatter().Stats(*stats) : stats.status();
    if (table.ok()) {
      std::string frame = terminal ? "\x1b[H\x1b[2J" : (i > 0 ? "\n" : "");
      absl::StrAppend(&frame, "poolctl watch: every ",
                      absl::FormatDuration(interval), " (Ctrl-C stops)\n");
      if (previous.has_value()) {
        absl::StrAppend(&frame, WatchRateLine(*previous, *stats));
      }
      absl::StrAppend(&frame, *table);
      std::cout << frame << std::flush;
      if (!std::cout) {
        return env.Failed(
            absl::DataLossError("cannot write to standard output"));
      }
      previous = *std::move(stats);
      code = kExitOk;
    } else {
      // The server may come back: say why, and keep watching.
      code = env.Failed(table.status());
    }
    if (iterations != 0 && i + 1 == iterations) break;
    absl::SleepFor(interval - (absl::Now() - start));
  }
  return code;
}

}  // namespace poold::client
