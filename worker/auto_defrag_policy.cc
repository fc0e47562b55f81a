// AutoDefragPolicy: the decision rules of automatic defragmentation.
#include "worker/auto_defrag_policy.h"

#include <algorithm>
#include <cmath>
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

uint64_t WasteBytes(const pools::FragmentationStats& total) {
  return total.resident_bytes > total.live_bytes
             ? total.resident_bytes - total.live_bytes
             : 0;
}

// Records the waste seen at `now`, and how fast it grows: the rate since
// the last sighting, or the earlier estimate halved per interval since, if
// that is more. A window right after a run, or between two allocations of
// a burst, says little on its own; a rate that stops, fades within a few
// intervals.
void SeeWaste(const AutoDefragOptions& options, AutoDefragHistory& history,
              uint64_t waste, absl::Time now) {
  if (history.waste_seen_at != absl::InfinitePast() &&
      now > history.waste_seen_at) {
    const absl::Duration elapsed = now - history.waste_seen_at;
    const double seconds = absl::ToDoubleSeconds(elapsed);
    const double measured =
        waste > history.waste_bytes
            ? static_cast<double>(waste - history.waste_bytes) / seconds
            : 0;
    const double faded = history.waste_growth_per_second *
                         std::exp2(-(elapsed / options.interval));
    history.waste_growth_per_second = std::max(measured, faded);
    if (history.waste_growth_per_second < kNegligibleGrowthPerSecond) {
      history.waste_growth_per_second = 0;
    }
  }
  history.waste_bytes = waste;
  history.waste_seen_at = now;
}

// When to look next: after the interval, or sooner while waste grows: when
// half the room left below `threshold` (and below the minimum reclaimable)
// would be used at the rate seen, no sooner than min_interval.
absl::Time NextLook(const AutoDefragOptions& options,
                    const AutoDefragHistory& history,
                    const pools::FragmentationStats& total, double threshold,
                    absl::Time now) {
  const double growth = history.waste_growth_per_second;
  if (growth <= 0) return now + options.interval;
  double room = 0;
  if (threshold < 1) {
    const double waste_at_threshold =
        static_cast<double>(total.live_bytes) * threshold / (1 - threshold);
    room = std::max(
        0.0, waste_at_threshold - static_cast<double>(WasteBytes(total)));
  }
  if (total.reclaimable_bytes < options.min_reclaimable_bytes) {
    room = std::max(room, static_cast<double>(options.min_reclaimable_bytes -
                                              total.reclaimable_bytes));
  }
  const absl::Duration until = absl::Seconds(room / growth / 2);
  return now + std::clamp(until, options.min_interval, options.interval);
}

// ", waste growing 45.0 MiB/s" while it grows, else "".
std::string GrowthText(const AutoDefragHistory& history) {
  if (history.waste_growth_per_second <= 0) return "";
  return absl::StrCat(
      ", waste growing ",
      HumanBytes(static_cast<uint64_t>(history.waste_growth_per_second)), "/s");
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
  if (o.min_interval <= absl::ZeroDuration() || o.min_interval > o.interval) {
    return "need 0 < --auto_defrag_min_interval <= --auto_defrag_interval";
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
  SeeWaste(options, history, WasteBytes(total), input.now);
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
      d.next_look =
          std::min(NextLook(options, history, total, ceiling, input.now),
                   history.backoff_until);
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
  d.next_look = NextLook(options, history, total, threshold, input.now);
  if (reclaimable == 0) {
    d.reason = absl::StrCat("nothing to reclaim (fragmentation ",
                            Percent(fragmentation), GrowthText(history), ")");
    history.unfinished = false;
    return d;
  }
  if (reclaimable < options.min_reclaimable_bytes) {
    d.reason = absl::StrCat(
        "reclaimable ", HumanBytes(reclaimable), " below the ",
        HumanBytes(options.min_reclaimable_bytes), " minimum (fragmentation ",
        Percent(fragmentation), GrowthText(history), ")");
    history.unfinished = false;
    return d;
  }
  if (fragmentation < threshold) {
    d.reason = absl::StrCat("fragmentation ", Percent(fragmentation),
                            " below the ", Percent(threshold), " ",
                            threshold_name, " threshold (reclaimable ",
                            HumanBytes(reclaimable), GrowthText(history), ")");
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
  const double level_share =
      options.min_cpu_share +
      (options.max_cpu_share - options.min_cpu_share) * t;
  // Clients wasting memory fast need a run that outpaces them, whatever the
  // level: kGrowthMargin times their rate, at the rate runs have reclaimed.
  const double reclaim_rate = history.reclaimed_per_cpu_second > 0
                                  ? history.reclaimed_per_cpu_second
                                  : kAssumedReclaimedPerCpuSecond;
  const double growth_share =
      kGrowthMargin * history.waste_growth_per_second / reclaim_rate;
  d.cpu_share = std::clamp(std::max(level_share, growth_share),
                           options.min_cpu_share, options.max_cpu_share);
  d.run = true;
  d.state = AutoDefragState::kRunning;
  history.fragmentation_at_start = fragmentation;
  d.reason = absl::StrCat(
      escalation, "fragmentation ", Percent(fragmentation), " at or above the ",
      Percent(threshold), " ", threshold_name, " threshold and ",
      HumanBytes(reclaimable), " reclaimable (minimum ",
      HumanBytes(options.min_reclaimable_bytes), GrowthText(history),
      "): defragmenting ", PoolList(d.pools), " at ", Percent(d.cpu_share),
      " of a core");
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
                         absl::Duration cpu, absl::Time now) {
  ++history.runs;
  history.looked = false;  // one look after every run says where it stands
  history.last_aimed_bytes = aimed_bytes;
  history.last_reclaimed_bytes = report.bytes_reclaimed;
  // Growth is measured from where the run left the waste.
  history.waste_bytes = WasteBytes(after);
  history.waste_seen_at = now;
  if (cpu > absl::ZeroDuration() && report.bytes_reclaimed > 0) {
    const double rate = static_cast<double>(report.bytes_reclaimed) /
                        absl::ToDoubleSeconds(cpu);
    history.reclaimed_per_cpu_second =
        history.reclaimed_per_cpu_second > 0
            ? (history.reclaimed_per_cpu_second + rate) / 2
            : rate;
  }
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
