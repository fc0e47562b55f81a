// poolctl watch [--interval=1s] [--iterations=N] [--classes]: the stats table
// refreshed in place on a terminal, with request and reclaim rates between
// two refreshes.
#include <unistd.h>

#include <algorithm>
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/commands/commands.h"
#include "client/exit_codes.h"
#include "client/human_units.h"
#include "client/poolctl_flags.h"

namespace poold::client {
namespace {

absl::Time TakenAt(const v1::GetStatsResponse& stats) {
  return absl::FromUnixSeconds(stats.taken_at().seconds()) +
         absl::Nanoseconds(stats.taken_at().nanos());
}

uint64_t Completed(const v1::GetStatsResponse& stats,
                   const std::string& method) {
  const auto found = stats.worker().commands_completed().find(method);
  return found == stats.worker().commands_completed().end() ? 0 : found->second;
}

// "rates: Read 1520/s, Allocate 310/s; reclaimed 2.0 MiB/s" between two
// snapshots; empty when they are the same snapshot.
std::string RateLine(const v1::GetStatsResponse& before,
                     const v1::GetStatsResponse& after) {
  const double seconds =
      absl::ToDoubleSeconds(TakenAt(after) - TakenAt(before));
  if (seconds <= 0) return "";
  std::vector<std::pair<double, std::string>> rates;
  for (const auto& [method, count] : after.worker().commands_completed()) {
    const uint64_t was = Completed(before, method);
    if (count <= was) continue;
    rates.emplace_back(static_cast<double>(count - was) / seconds, method);
  }
  std::sort(rates.rbegin(), rates.rend());
  std::vector<std::string> parts;
  for (const auto& [rate, method] : rates) {
    parts.push_back(
        absl::StrCat(method, " ", static_cast<uint64_t>(rate + 0.5), "/s"));
  }
  const uint64_t reclaimed_before = before.worker().total_bytes_reclaimed();
  const uint64_t reclaimed_after = after.worker().total_bytes_reclaimed();
  const double reclaimed =
      reclaimed_after > reclaimed_before
          ? static_cast<double>(reclaimed_after - reclaimed_before) / seconds
          : 0;
  return absl::StrCat(
      "rates over ", HumanDuration(TakenAt(after) - TakenAt(before)), ": ",
      parts.empty() ? "no requests" : absl::StrJoin(parts, ", "),
      "; reclaimed ", HumanBytes(static_cast<uint64_t>(reclaimed)), "/s\n");
}

}  // namespace

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
        absl::StrAppend(&frame, RateLine(*previous, *stats));
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
