// AutoDefragPolicy: the decision rules of automatic defragmentation.
#include "worker/auto_defrag_policy.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace poold {
namespace {

std::string Percent(double ratio) {
  return absl::StrFormat("%.1f%%", 100 * ratio);
}

std::string PoolList(const std::vector<pools::PoolKind>& kinds) {
  std::string names;
  for (pools::PoolKind kind : kinds) {
    if (!names.empty()) names += ",";
    names += std::string(pools::PoolName(kind));
  }
  return names;
}

absl::Duration Backoff(const AutoDefragOptions& options, int poor_runs) {
  absl::Duration wait = options.interval;
  for (int i = 0; i < poor_runs && wait < options.max_backoff; ++i) wait *= 2;
  return std::min(wait, options.max_backoff);
}

}  // namespace

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit < 3) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, units[unit]);
}

std::string AutoDefragOptionsError(const AutoDefragOptions& o) {
  if (!(o.start_fragmentation >= 0 && o.start_fragmentation < 1)) {
    return "--auto_defrag_start_fragmentation must be in [0, 1)";
  }
  if (!(o.stop_fragmentation >= 0 &&
        o.stop_fragmentation <= o.start_fragmentation)) {
    return "--auto_defrag_stop_fragmentation must be in [0, "
           "--auto_defrag_start_fragmentation]";
  }
  if (!(o.min_cpu_share > 0 && o.min_cpu_share <= o.max_cpu_share &&
        o.max_cpu_share <= 1)) {
    return "need 0 < --auto_defrag_min_cpu <= --auto_defrag_max_cpu <= 1";
  }
  if (o.interval <= absl::ZeroDuration() || o.max_backoff < o.interval) {
    return "the look interval must be > 0 and at most the longest back-off";
  }
  return "";
}

absl::string_view AutoDefragStateName(AutoDefragState state) {
  switch (state) {
    case AutoDefragState::kDisabled:
      return "disabled";
    case AutoDefragState::kIdle:
      return "idle";
    case AutoDefragState::kRunning:
      return "running";
    case AutoDefragState::kBackingOff:
      return "backing off";
  }
  return "unknown";
}

bool AutoDefragWantsLook(const AutoDefragOptions& options,
                         const AutoDefragHistory& history, uint64_t mutations,
                         absl::Time now) {
  if (!options.enabled) return false;
  // (Also while backing off: a look may find fragmentation climbing past
  // twice the start threshold, which ends the back-off.)
  if (!history.looked || history.unfinished) return true;
  // A look during the back-off saw what a run would face but could not
  // start one: the first look after it ends may, changes or not.
  if (history.looked_while_backing_off && now >= history.backoff_until) {
    return true;
  }
  return mutations != history.mutations_at_last_look;
}

AutoDefragDecision DecideAutoDefrag(const AutoDefragOptions& options,
                                    AutoDefragHistory& history,
                                    const AutoDefragInput& input) {
  AutoDefragDecision d;
  d.decided_at = input.now;
  if (!options.enabled) {
    d.state = AutoDefragState::kDisabled;
    d.reason = "automatic defragmentation is off (--auto_defrag=false)";
    return d;
  }
  history.looked = true;
  history.mutations_at_last_look = input.mutations;
  d.next_look = input.now + options.interval;
  const pools::FragmentationStats& total = input.stats.total;
  const double fragmentation = total.FragmentationRatio();
  const uint64_t reclaimable = total.reclaimable_bytes;
  std::string escalation;
  history.looked_while_backing_off = false;
  if (input.now < history.backoff_until) {
    // Fragmentation that climbs past twice the start threshold (where the
    // CPU share reaches its ceiling) and above where the poor run left it
    // costs more memory than a run at the ceiling costs CPU: a change in
    // the clients' sizes is outrunning the back-off.
    const double ceiling = 2 * options.start_fragmentation;
    if (fragmentation < ceiling ||
        fragmentation <= history.fragmentation_after_poor ||
        reclaimable < options.min_reclaimable_bytes) {
      d.state = AutoDefragState::kBackingOff;
      d.next_look = std::min(d.next_look, history.backoff_until);
      history.looked_while_backing_off = true;
      d.reason =
          absl::StrCat("backing off after ", history.poor_runs,
                       " poor run(s) in a row: ", history.last_poor_reason);
      return d;
    }
    escalation = absl::StrCat(
        "backing off ended early: fragmentation ", Percent(fragmentation),
        " rose past twice the start threshold (", Percent(ceiling),
        ") and above the ", Percent(history.fragmentation_after_poor),
        " the last poor run left; ");
  }
  d.state = AutoDefragState::kIdle;
  const double threshold = history.unfinished ? options.stop_fragmentation
                                              : options.start_fragmentation;
  const char* threshold_name = history.unfinished ? "stop" : "start";
  if (reclaimable == 0) {
    d.reason = absl::StrCat("nothing to reclaim (fragmentation ",
                            Percent(fragmentation), ")");
    history.unfinished = false;
    return d;
  }
  if (reclaimable < options.min_reclaimable_bytes) {
    d.reason =
        absl::StrCat("reclaimable ", HumanBytes(reclaimable), " below the ",
                     HumanBytes(options.min_reclaimable_bytes),
                     " minimum (fragmentation ", Percent(fragmentation), ")");
    history.unfinished = false;
    return d;
  }
  if (fragmentation < threshold) {
    d.reason =
        absl::StrCat("fragmentation ", Percent(fragmentation), " below the ",
                     Percent(threshold), " ", threshold_name,
                     " threshold (reclaimable ", HumanBytes(reclaimable), ")");
    history.unfinished = false;
    return d;
  }
  for (pools::PoolKind pool : pools::kAllPools) {
    const uint64_t bytes =
        input.stats.pools[pools::PoolIndex(pool)].stats.reclaimable_bytes;
    if (bytes == 0) continue;
    d.pools.push_back(pool);
    d.aimed_bytes += bytes;
  }
  const double start = options.start_fragmentation;
  const double t =
      start <= 0 ? 1.0 : std::clamp((fragmentation - start) / start, 0.0, 1.0);
  d.cpu_share = options.min_cpu_share +
                (options.max_cpu_share - options.min_cpu_share) * t;
  d.run = true;
  d.state = AutoDefragState::kRunning;
  history.fragmentation_at_start = fragmentation;
  d.reason = absl::StrCat(
      escalation, "fragmentation ", Percent(fragmentation), " at or above the ",
      Percent(threshold), " ", threshold_name, " threshold and ",
      HumanBytes(reclaimable), " reclaimable (minimum ",
      HumanBytes(options.min_reclaimable_bytes), "): defragmenting ",
      PoolList(d.pools), " at ", Percent(d.cpu_share), " of a core");
  return d;
}

std::string AutoDefragStopReason(const AutoDefragOptions& options,
                                 const pools::FragmentationStats& total) {
  const double fragmentation = total.FragmentationRatio();
  if (fragmentation >= options.stop_fragmentation) return "";
  return absl::StrCat("fragmentation ", Percent(fragmentation), " below the ",
                      Percent(options.stop_fragmentation), " stop threshold");
}

void RecordAutoDefragRun(const AutoDefragOptions& options,
                         AutoDefragHistory& history,
                         const pools::DefragReport& report,
                         uint64_t aimed_bytes,
                         const pools::FragmentationStats& after,
                         absl::Time now) {
  ++history.runs;
  history.looked = false;  // one look after every run says where it stands
  history.last_aimed_bytes = aimed_bytes;
  history.last_reclaimed_bytes = report.bytes_reclaimed;
  using pools::DefragStopReason;
  if (report.stop_reason == DefragStopReason::kPreempted ||
      report.stop_reason == DefragStopReason::kShutdown) {
    history.unfinished = true;
    return;
  }
  history.unfinished = false;
  const bool reached_target =
      report.stop_reason == DefragStopReason::kTargetReached;
  const bool returned_little = report.bytes_reclaimed < aimed_bytes / 2;
  const double fragmentation = after.FragmentationRatio();
  const bool refragmented =
      fragmentation >= history.fragmentation_at_start &&
      fragmentation >= options.start_fragmentation &&
      after.reclaimable_bytes >= options.min_reclaimable_bytes;
  if (!reached_target && (returned_little || refragmented)) {
    history.last_poor_reason =
        returned_little
            ? absl::StrCat("the last returned ",
                           HumanBytes(report.bytes_reclaimed), " of the ",
                           HumanBytes(aimed_bytes),
                           " it aimed at (allocations used the room, or "
                           "compaction cannot free whole pages)")
            : absl::StrCat("the last returned ",
                           HumanBytes(report.bytes_reclaimed),
                           " but clients refragmented as fast: fragmentation "
                           "right after it was ",
                           Percent(fragmentation), " (",
                           Percent(history.fragmentation_at_start),
                           " when it started) with ",
                           HumanBytes(after.reclaimable_bytes), " reclaimable");
    ++history.poor_runs;
    history.backoff_until = now + Backoff(options, history.poor_runs);
    history.fragmentation_after_poor = fragmentation;
  } else {
    history.last_poor_reason.clear();
    history.poor_runs = 0;
    history.backoff_until = absl::InfinitePast();
  }
}

}  // namespace poold
