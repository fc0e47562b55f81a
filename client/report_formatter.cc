// ReportFormatter: tables and JSON for every poolctl subcommand.
#include "client/report_formatter.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/human_units.h"
#include "client/poolctl_args.h"
#include "client/table.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace poold::client {
namespace {

using ::grpc::health::v1::HealthCheckResponse;

// 1 - live / resident, or 0 when nothing is resident (as the server
// defines fragmentation_ratio).
double Fragmentation(uint64_t live, uint64_t resident) {
  if (resident == 0) return 0.0;
  return 1.0 - static_cast<double>(live) / static_cast<double>(resident);
}

// The columns Stats prints for one pool or size class, after its name.
std::vector<Table::Column> StatsColumns(std::string first) {
  return {{std::move(first), Table::kLeft},
          {"blocks"},
          {"live"},
          {"allocated"},
          {"resident"},
          {"metadata"},
          {"free"},
          {"spans"},
          {"partial"},
          {"empty"},
          {"frag"},
          {"reclaimable"}};
}

std::vector<std::string> StatsCells(std::string name,
                                    const v1::FragmentationStats& s) {
  return {std::move(name),
          absl::StrCat(s.blocks()),
          HumanBytes(s.live_bytes()),
          HumanBytes(s.allocated_bytes()),
          HumanBytes(s.resident_bytes()),
          HumanBytes(s.metadata_bytes()),
          HumanBytes(s.free_bytes()),
          absl::StrCat(s.spans()),
          absl::StrCat(s.partial_spans()),
          absl::StrCat(s.empty_spans()),
          Percent(s.fragmentation_ratio()),
          HumanBytes(s.reclaimable_bytes())};
}

std::string OutcomeName(int outcome) {
  switch (outcome) {
    case v1::PoolDefragReport::OUTCOME_CLEANED:
      return "cleaned";
    case v1::PoolDefragReport::OUTCOME_SKIPPED:
      return "skipped";
    case v1::PoolDefragReport::OUTCOME_PARTIAL:
      return "partial";
    case v1::PoolDefragReport::OUTCOME_FAILED:
      return "failed";
    default:
      return absl::StrCat("outcome ", outcome);
  }
}

std::string AutoDefragStateName(v1::AutoDefragStats::State state) {
  switch (state) {
    case v1::AutoDefragStats::STATE_UNSPECIFIED:
      return "not reported by this server";
    case v1::AutoDefragStats::STATE_DISABLED:
      return "disabled (--auto_defrag=false)";
    case v1::AutoDefragStats::STATE_IDLE:
      return "idle";
    case v1::AutoDefragStats::STATE_RUNNING:
      return "running";
    case v1::AutoDefragStats::STATE_BACKING_OFF:
      return "backing off";
    default:
      return absl::StrCat("state ", static_cast<int>(state));
  }
}

// The automatic-defragmentation lines of `poolctl stats`: state, budget,
// last decision and why, next look (against `taken_at`, the snapshot's
// time), and what its runs did in all.
std::string AutoDefragLines(const v1::AutoDefragStats& auto_defrag,
                            const google::protobuf::Timestamp& taken_at) {
  std::string out = absl::StrCat("\nautomatic defragmentation: ",
                                 AutoDefragStateName(auto_defrag.state()));
  if (auto_defrag.state() == v1::AutoDefragStats::STATE_DISABLED ||
      auto_defrag.state() == v1::AutoDefragStats::STATE_UNSPECIFIED) {
    return absl::StrCat(out, "\n");
  }
  if (auto_defrag.state() == v1::AutoDefragStats::STATE_RUNNING) {
    absl::StrAppend(&out, " within ", Percent(auto_defrag.cpu_share()),
                    " of a core");
  }
  if (auto_defrag.state() == v1::AutoDefragStats::STATE_BACKING_OFF) {
    absl::StrAppend(&out, " (", auto_defrag.poor_runs(),
                    auto_defrag.poor_runs() == 1 ? " poor run" : " poor runs",
                    " in a row)");
  }
  absl::StrAppend(&out, "\n");
  if (auto_defrag.last_decision().empty()) {
    absl::StrAppend(&out, "  last decision: none yet\n");
  } else {
    absl::StrAppend(&out, "  last decision (",
                    HumanTime(auto_defrag.last_decision_at()),
                    "): ", auto_defrag.last_decision_ran() ? "run" : "no run",
                    ", ", auto_defrag.last_decision(), "\n");
  }
  absl::StrAppend(&out, "  next look: ");
  if (auto_defrag.state() == v1::AutoDefragStats::STATE_RUNNING) {
    absl::StrAppend(&out, "when the run ends\n");
  } else if (taken_at.seconds() != 0 &&
             std::pair(auto_defrag.next_look_at().seconds(),
                       auto_defrag.next_look_at().nanos()) <=
                 std::pair(taken_at.seconds(), taken_at.nanos())) {
    // Due already: an idle server looks again only once something changed.
    absl::StrAppend(&out, "at the next Allocate or Free (due since ",
                    HumanTime(auto_defrag.next_look_at()), ")\n");
  } else {
    absl::StrAppend(&out, "at ", HumanTime(auto_defrag.next_look_at()),
                    " or the first Allocate or Free after it\n");
  }
  absl::StrAppend(
      &out, "  runs ", auto_defrag.runs(), ", reclaimed ",
      HumanBytes(auto_defrag.bytes_reclaimed()), ", worker CPU time ",
      HumanDuration(FromProtoDuration(auto_defrag.cpu_time())), "\n");
  return out;
}

std::string OriginName(v1::DefragReport::Origin origin) {
  switch (origin) {
    case v1::DefragReport::ORIGIN_RPC:
      return "rpc";
    case v1::DefragReport::ORIGIN_MEMORY_LIMIT:
      return "memory limit";
    case v1::DefragReport::ORIGIN_AUTOMATIC:
      return "automatic";
    default:
      return absl::StrCat("origin ", static_cast<int>(origin));
  }
}

std::string StopReasonName(v1::DefragReport::StopReason reason) {
  switch (reason) {
    case v1::DefragReport::STOP_REASON_FINISHED:
      return "finished";
    case v1::DefragReport::STOP_REASON_DEADLINE:
      return "deadline";
    case v1::DefragReport::STOP_REASON_CANCELLED:
      return "cancelled";
    case v1::DefragReport::STOP_REASON_SHUTDOWN:
      return "shutdown";
    case v1::DefragReport::STOP_REASON_NONE_WAITING:
      return "none waiting";
    case v1::DefragReport::STOP_REASON_PREEMPTED:
      return "preempted";
    case v1::DefragReport::STOP_REASON_TARGET_REACHED:
      return "target reached";
    default:
      return absl::StrCat("reason ", static_cast<int>(reason));
  }
}

// One row per recent defragmentation, oldest first.
std::string HistoryTable(
    const google::protobuf::RepeatedPtrField<v1::DefragReport>& reports) {
  Table table({{"started", Table::kLeft},
               {"origin", Table::kLeft},
               {"ended", Table::kLeft},
               {"pools", Table::kLeft},
               {"moved"},
               {"reclaimed"},
               {"RSS before -> after"},
               {"time"},
               {"slices"},
               {"longest"}});
  for (const v1::DefragReport& report : reports) {
    std::vector<std::string> pools;
    for (const v1::PoolDefragReport& pool : report.pools()) {
      pools.push_back(absl::StrCat(PoolName(pool.pool()), " ",
                                   OutcomeName(pool.outcome())));
    }
    table.AddRow(
        {HumanTime(report.started_at()), OriginName(report.origin()),
         StopReasonName(report.stop_reason()),
         pools.empty() ? "-" : absl::StrJoin(pools, ", "),
         HumanBytes(report.bytes_moved()), HumanBytes(report.bytes_reclaimed()),
         absl::StrCat(HumanBytes(report.rss_before_bytes()), " -> ",
                      HumanBytes(report.rss_after_bytes())),
         HumanDuration(FromProtoDuration(report.duration())),
         absl::StrCat(report.slices()),
         HumanDuration(FromProtoDuration(report.max_slice_duration()))});
  }
  return table.Render();
}

// The bound of the first bucket by which a share `quantile` of the
// histogram's durations had ended ("<= 250us"), "> 10s" past the last bound,
// "-" when it is empty.
std::string Quantile(const v1::Histogram& histogram, double quantile) {
  if (histogram.count() == 0) return "-";
  const double wanted = quantile * static_cast<double>(histogram.count());
  uint64_t seen = 0;
  for (int i = 0; i < histogram.counts_size(); ++i) {
    seen += histogram.counts(i);
    if (static_cast<double>(seen) < wanted) continue;
    if (i < histogram.bounds_seconds_size()) {
      return "<= " + HumanDuration(absl::Seconds(histogram.bounds_seconds(i)));
    }
    break;
  }
  if (histogram.bounds_seconds_size() == 0) return "-";
  return "> " + HumanDuration(absl::Seconds(histogram.bounds_seconds(
                    histogram.bounds_seconds_size() - 1)));
}

// Per RPC that ran: how long commands waited for the worker and how long
// it took them, as bucket bounds of the median and the 99th percentile.
std::string LatencyTable(const v1::WorkerStats& worker) {
  Table table({{"rpc", Table::kLeft},
               {"commands"},
               {"queue p50"},
               {"queue p99"},
               {"service p50"},
               {"service p99"},
               {"mean"}});
  bool any = false;
  for (const v1::CommandLatency& latency : worker.latency()) {
    const v1::Histogram& service = latency.service();
    if (service.count() == 0) continue;
    any = true;
    table.AddRow(
        {latency.method(), absl::StrCat(service.count()),
         Quantile(latency.queue_wait(), 0.5),
         Quantile(latency.queue_wait(), 0.99), Quantile(service, 0.5),
         Quantile(service, 0.99),
         HumanDuration(absl::Seconds(
             (latency.queue_wait().sum_seconds() + service.sum_seconds()) /
             static_cast<double>(service.count())))});
  }
  return any ? table.Render() : "";
}

std::string TableStats(const v1::GetStatsResponse& stats) {
  Table pools(StatsColumns("pool"));
  for (const v1::PoolStats& pool : stats.pools()) {
    pools.AddRow(StatsCells(PoolName(pool.pool()), pool.stats()));
  }
  pools.AddRow(StatsCells("total", stats.total()));
  std::string out;
  if (stats.snapshot_sequence() > 0) {
    absl::StrAppend(
        &out, "snapshot ", stats.snapshot_sequence(), " taken ",
        absl::FormatTime("%Y-%m-%d %H:%M:%E3S %Z",
                         absl::FromUnixSeconds(stats.taken_at().seconds()) +
                             absl::Nanoseconds(stats.taken_at().nanos()),
                         absl::UTCTimeZone()),
        "\n");
  }
  absl::StrAppend(&out, pools.Render());

  // Only pools whose defragmentation the OS made fail.
  for (const v1::PoolStats& pool : stats.pools()) {
    if (pool.defrag_failures() == 0) continue;
    absl::StrAppend(&out, "\n", PoolName(pool.pool()), " pool: FAILED in ",
                    pool.defrag_failures(),
                    " defragmentations; last: ", pool.last_defrag_failure(),
                    "\n");
  }

  for (const v1::PoolStats& pool : stats.pools()) {
    if (pool.pool() != v1::POOL_LARGE) continue;
    const v1::FragmentationStats& s = pool.stats();
    absl::StrAppend(&out, "\nlarge pool: ", s.spans(), " chunks, ",
                    s.free_extents(), " free extents (largest ",
                    HumanBytes(s.largest_free_extent_bytes()), "), ",
                    HumanBytes(s.unpurged_bytes()), " free but not purged\n");
  }

  const v1::ProcessStats& process = stats.process();
  absl::StrAppend(&out, "\nprocess: RSS ", HumanBytes(process.rss_bytes()),
                  " = pools ", HumanBytes(process.pools_resident_bytes()),
                  " + outside the pools ",
                  HumanBytes(process.outside_pools_bytes()), " (anonymous ",
                  HumanBytes(process.rss_anon_bytes()), ", code and files ",
                  HumanBytes(process.rss_file_bytes()), "; malloc heap in use ",
                  HumanBytes(process.heap_in_use_bytes()), ", free ",
                  HumanBytes(process.heap_free_bytes()), ")\n");
  const v1::WorkerStats& worker = stats.worker();
  absl::StrAppend(&out, "\nworker: queue ", worker.queue_depth(), " of ",
                  worker.channel_capacity(), ", refused ",
                  worker.commands_refused(),
                  ", defragmentations: ", worker.defragmentations(),
                  " requested, ", worker.automatic_defragmentations(),
                  " automatic, ", worker.memory_limit_defragmentations(),
                  " for the memory limit (reclaimed ",
                  HumanBytes(worker.total_bytes_reclaimed()),
                  " in all), heap trims ", worker.heap_trims(), " (returned ",
                  HumanBytes(worker.heap_bytes_released()), ")\n");
  const v1::TransportStats& transport = stats.transport();
  absl::StrAppend(
      &out, "transport: block data held by calls in flight ",
      HumanBytes(transport.payload_bytes_in_flight()),
      transport.max_payload_bytes_in_flight() > 0
          ? absl::StrCat(" of ",
                         HumanBytes(transport.max_payload_bytes_in_flight()))
          : std::string(),
      " (", transport.payload_refusals(), " calls refused); unknown handles ",
      transport.unknown_handle_answers(), " (",
      transport.unknown_handle_refusals(),
      " calls refused for naming too many)\n");
  if (transport.connections_accepted() > 0 ||
      transport.connections_refused() > 0) {
    absl::StrAppend(&out, "tcp connections: ", transport.connections_open(),
                    " open of ", transport.max_connections(), " allowed, ",
                    transport.connections_accepted(), " accepted, ",
                    transport.connections_refused(), " refused");
    if (transport.connections_refused() > 0) {
      absl::StrAppend(
          &out, " (", transport.connections_refused_max_connections(),
          " at the limit, ", transport.connections_refused_per_address(),
          " at the per-address limit, ",
          transport.connections_refused_open_files(),
          " for lack of file descriptors)");
    }
    absl::StrAppend(&out, "\n");
  }
  // Only a server with --memory_limit_bytes that reached it has these.
  if (worker.memory_limit_defragmentations() > 0 ||
      worker.allocations_waiting_for_room() > 0) {
    absl::StrAppend(&out,
                    "memory limit: ", worker.memory_limit_defragmentations(),
                    " defragmentations to make room, ",
                    worker.allocations_waiting_for_room(),
                    " allocations waiting for room\n");
  }
  // Sorted by RPC name; a protobuf map has no order.
  std::vector<std::pair<std::string, uint64_t>> completed(
      worker.commands_completed().begin(), worker.commands_completed().end());
  std::sort(completed.begin(), completed.end());
  std::vector<std::string> parts;
  for (const auto& [name, count] : completed) {
    if (count > 0) parts.push_back(absl::StrCat(name, " ", count));
  }
  absl::StrAppend(&out, "completed: ",
                  parts.empty() ? "nothing yet" : absl::StrJoin(parts, ", "),
                  "\n");
  if (std::string latency = LatencyTable(worker); !latency.empty()) {
    absl::StrAppend(&out, "\nlatency in the worker (bucket bounds):\n",
                    latency);
  }
  absl::StrAppend(&out, AutoDefragLines(stats.auto_defrag(), stats.taken_at()));
  if (!stats.recent_defragmentations().empty()) {
    absl::StrAppend(&out, "\nrecent defragmentations, oldest first:\n",
                    HistoryTable(stats.recent_defragmentations()));
  }

  for (const v1::PoolStats& pool : stats.pools()) {
    if (pool.classes().empty()) continue;
    Table classes(StatsColumns("slot"));
    for (const v1::SizeClassStats& size_class : pool.classes()) {
      classes.AddRow(
          StatsCells(HumanBytes(size_class.slot_bytes()), size_class.stats()));
    }
    absl::StrAppend(&out, "\n", PoolName(pool.pool()),
                    " pool, by size class:\n", classes.Render());
  }
  return out;
}

std::string TableAnalysis(const v1::FragmentationReport& report) {
  Table table({{"pool", Table::kLeft},
               {"blocks"},
               {"live"},
               {"resident"},
               {"frag"},
               {"reclaimable"},
               {"to move"},
               {"bytes to move"},
               {"spans to release"},
               {"frag after"}});
  for (const v1::PoolAnalysis& pool : report.pools()) {
    const v1::FragmentationStats& s = pool.stats();
    table.AddRow({PoolName(pool.pool()), absl::StrCat(s.blocks()),
                  HumanBytes(s.live_bytes()), HumanBytes(s.resident_bytes()),
                  Percent(s.fragmentation_ratio()),
                  HumanBytes(pool.projected_bytes_reclaimed()),
                  absl::StrCat(pool.projected_blocks_moved()),
                  HumanBytes(pool.projected_bytes_moved()),
                  absl::StrCat(pool.projected_spans_released()),
                  Percent(pool.projected_fragmentation_ratio())});
  }
  const v1::FragmentationStats& total = report.total();
  uint64_t spans_released = 0;
  for (const v1::PoolAnalysis& pool : report.pools()) {
    spans_released += pool.projected_spans_released();
  }
  // What compaction leaves resident: everything but what it reclaims.
  const uint64_t resident_after =
      total.resident_bytes() -
      std::min(total.resident_bytes(), report.projected_bytes_reclaimed());
  table.AddRow(
      {"total", absl::StrCat(total.blocks()), HumanBytes(total.live_bytes()),
       HumanBytes(total.resident_bytes()), Percent(total.fragmentation_ratio()),
       HumanBytes(report.projected_bytes_reclaimed()),
       absl::StrCat(report.projected_blocks_moved()),
       HumanBytes(report.projected_bytes_moved()), absl::StrCat(spans_released),
       Percent(Fragmentation(total.live_bytes(), resident_after))});
  std::string out = table.Render();
  if (report.projected_bytes_reclaimed() == 0) {
    absl::StrAppend(&out, "\nA defragmentation now would reclaim nothing.\n");
  } else {
    absl::StrAppend(&out, "\nA defragmentation now would move ",
                    report.projected_blocks_moved(), " blocks (",
                    HumanBytes(report.projected_bytes_moved()), ") and return ",
                    HumanBytes(report.projected_bytes_reclaimed()),
                    " to the OS.\n");
  }
  return out;
}

std::string BeforeAfter(double before, double after) {
  return absl::StrCat(Percent(before), " -> ", Percent(after));
}

std::string TableDefrag(const v1::DefragReport& report) {
  Table table({{"pool", Table::kLeft},
               {"outcome", Table::kLeft},
               {"frag before -> after"},
               {"moved"},
               {"bytes moved"},
               {"spans released"},
               {"reclaimed"},
               {"time"},
               {"reason", Table::kLeft}});
  uint64_t live_before = 0, resident_before = 0;
  uint64_t live_after = 0, resident_after = 0;
  for (const v1::PoolDefragReport& pool : report.pools()) {
    live_before += pool.before().live_bytes();
    resident_before += pool.before().resident_bytes();
    live_after += pool.after().live_bytes();
    resident_after += pool.after().resident_bytes();
    table.AddRow(
        {PoolName(pool.pool()), OutcomeName(pool.outcome()),
         BeforeAfter(pool.before().fragmentation_ratio(),
                     pool.after().fragmentation_ratio()),
         absl::StrCat(pool.blocks_moved()), HumanBytes(pool.bytes_moved()),
         absl::StrCat(pool.spans_released()),
         HumanBytes(pool.bytes_reclaimed()),
         HumanDuration(FromProtoDuration(pool.duration())), pool.reason()});
  }
  table.AddRow({"total", "",
                BeforeAfter(Fragmentation(live_before, resident_before),
                            Fragmentation(live_after, resident_after)),
                absl::StrCat(report.blocks_moved()),
                HumanBytes(report.bytes_moved()),
                absl::StrCat(report.spans_released()),
                HumanBytes(report.bytes_reclaimed()),
                HumanDuration(FromProtoDuration(report.duration())), ""});
  std::string out = table.Render();
  absl::StrAppend(&out, "\npools: ", report.pools_cleaned(), " cleaned, ",
                  report.pools_skipped(), " skipped, ", report.pools_partial(),
                  " partial, ", report.pools_failed(), " failed\n");
  absl::StrAppend(&out, "process RSS: ", HumanBytes(report.rss_before_bytes()),
                  " -> ", HumanBytes(report.rss_after_bytes()), " (pools ",
                  HumanBytes(report.pools_resident_before_bytes()), " -> ",
                  HumanBytes(report.pools_resident_after_bytes()),
                  "; heap trim returned ",
                  HumanBytes(report.heap_released_bytes()), ")\n");
  absl::StrAppend(&out, "slices: ", report.slices(), ", longest ",
                  HumanDuration(FromProtoDuration(report.max_slice_duration())),
                  "\n");
  absl::StrAppend(&out, report.complete()
                            ? "complete\n"
                            : absl::StrCat("INCOMPLETE: stopped early (",
                                           StopReasonName(report.stop_reason()),
                                           "); the numbers above are what was "
                                           "done\n"));
  return out;
}

std::string TableLoad(const LoadSummary& s) {
  Table table({{"", Table::kLeft},
               {"blocks"},
               {"bytes"},
               {"slot bytes"},
               {"time"},
               {"rate"}});
  table.AddRow({"allocated", absl::StrCat(s.blocks_allocated),
                HumanBytes(s.bytes_allocated),
                HumanBytes(s.slot_bytes_allocated),
                HumanDuration(s.allocate_time),
                HumanRate(s.blocks_allocated, s.allocate_time)});
  table.AddRow({"freed", absl::StrCat(s.blocks_freed),
                HumanBytes(s.bytes_freed), "", HumanDuration(s.free_time),
                HumanRate(s.blocks_freed, s.free_time)});
  table.AddRow(
      {"kept", absl::StrCat(s.kept_handles.size()), HumanBytes(s.bytes_kept)});
  std::string out = table.Render();
  std::vector<std::string> pools;
  for (const auto& [pool, blocks] : s.blocks_by_pool) {
    pools.push_back(absl::StrCat(PoolName(pool), " ", blocks));
  }
  absl::StrAppend(&out, "\nblocks allocated per pool: ",
                  pools.empty() ? "none" : absl::StrJoin(pools, ", "), "\n");
  if (s.blocks_refused_in_batches > 0) {
    absl::StrAppend(&out, s.blocks_refused_in_batches,
                    " blocks refused in a batch for lack of room were retried "
                    "alone (waiting for the server to make room): ",
                    s.blocks_allocated_alone, " allocated\n");
  }
  return out;
}

// The summary as a google.protobuf.Struct, so it prints as JSON like the
// responses do. (JSON numbers: exact up to 2^53.)
google::protobuf::Struct LoadStruct(const LoadSummary& s) {
  google::protobuf::Struct out;
  auto& fields = *out.mutable_fields();
  auto number = [&](const char* name, double value) {
    fields[name].set_number_value(value);
  };
  number("blocksAllocated", s.blocks_allocated);
  number("bytesAllocated", s.bytes_allocated);
  number("slotBytesAllocated", s.slot_bytes_allocated);
  number("blocksFreed", s.blocks_freed);
  number("bytesFreed", s.bytes_freed);
  number("blocksKept", s.kept_handles.size());
  number("blocksRefusedInBatches", s.blocks_refused_in_batches);
  number("blocksAllocatedAlone", s.blocks_allocated_alone);
  number("bytesKept", s.bytes_kept);
  number("allocateSeconds", absl::ToDoubleSeconds(s.allocate_time));
  number("freeSeconds", absl::ToDoubleSeconds(s.free_time));
  auto& per_pool =
      *fields["blocksByPool"].mutable_struct_value()->mutable_fields();
  for (const auto& [pool, blocks] : s.blocks_by_pool) {
    per_pool[PoolName(pool)].set_number_value(blocks);
  }
  return out;
}

absl::Time TakenAt(const v1::GetStatsResponse& stats) {
  return absl::FromUnixSeconds(stats.taken_at().seconds()) +
         absl::Nanoseconds(stats.taken_at().nanos());
}

uint64_t Completed(const v1::GetStatsResponse& stats,
                   const std::string& method) {
  const auto found = stats.worker().commands_completed().find(method);
  return found == stats.worker().commands_completed().end() ? 0 : found->second;
}

}  // namespace

std::string WatchRateLine(const v1::GetStatsResponse& before,
                          const v1::GetStatsResponse& after) {
  const absl::Duration elapsed = TakenAt(after) - TakenAt(before);
  const double seconds = absl::ToDoubleSeconds(elapsed);
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
      "rates over ", HumanDuration(elapsed), ": ",
      parts.empty() ? "no requests" : absl::StrJoin(parts, ", "),
      "; reclaimed ", HumanBytes(static_cast<uint64_t>(reclaimed)), "/s\n");
}

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "table") return OutputFormat::kTable;
  if (lower == "json") return OutputFormat::kJson;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown output format \"", text, "\": expected table or json"));
}

absl::StatusOr<std::string> ReportFormatter::Json(
    const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  options.always_print_primitive_fields = true;
  std::string json;
  const auto status =
      google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    return absl::InternalError(absl::StrCat("cannot print ",
                                            message.GetTypeName(),
                                            " as JSON: ", status.ToString()));
  }
  if (json.empty() || json.back() != '\n') json += '\n';
  return json;
}

absl::StatusOr<std::string> ReportFormatter::Stats(
    const v1::GetStatsResponse& stats) const {
  if (format_ == OutputFormat::kJson) return Json(stats);
  return TableStats(stats);
}

absl::StatusOr<std::string> ReportFormatter::Analysis(
    const v1::FragmentationReport& report) const {
  if (format_ == OutputFormat::kJson) return Json(report);
  return TableAnalysis(report);
}

absl::StatusOr<std::string> ReportFormatter::Defrag(
    const v1::DefragReport& report) const {
  if (format_ == OutputFormat::kJson) return Json(report);
  return TableDefrag(report);
}

absl::StatusOr<std::string> ReportFormatter::Allocation(
    const v1::AllocateResponse& block) const {
  if (format_ == OutputFormat::kJson) return Json(block);
  Table table(
      {{"handle", Table::kLeft}, {"pool", Table::kLeft}, {"size"}, {"slot"}});
  table.AddRow({absl::StrCat(block.handle()), PoolName(block.pool()),
                HumanBytes(block.block_size()),
                HumanBytes(block.slot_bytes())});
  return table.Render();
}

absl::StatusOr<std::string> ReportFormatter::Read(
    const std::string& data) const {
  if (format_ == OutputFormat::kTable) return data;
  v1::ReadResponse response;
  response.set_data(data);
  return Json(response);
}

absl::StatusOr<std::string> ReportFormatter::Write(uint64_t handle,
                                                   uint64_t offset,
                                                   uint64_t bytes) const {
  if (format_ == OutputFormat::kJson) return Json(v1::WriteResponse());
  return absl::StrCat("wrote ", HumanBytes(bytes), " at offset ", offset,
                      " of block ", handle, "\n");
}

absl::StatusOr<std::string> ReportFormatter::Free(uint64_t handle) const {
  if (format_ == OutputFormat::kJson) return Json(v1::FreeResponse());
  return absl::StrCat("freed block ", handle, "\n");
}

absl::StatusOr<std::string> ReportFormatter::Health(
    HealthCheckResponse::ServingStatus status) const {
  if (format_ == OutputFormat::kJson) {
    HealthCheckResponse response;
    response.set_status(status);
    return Json(response);
  }
  const std::string name = HealthCheckResponse::ServingStatus_Name(status);
  return absl::StrCat(name.empty() ? absl::StrCat("status ", status) : name,
                      "\n");
}

absl::StatusOr<std::string> ReportFormatter::Load(
    const LoadSummary& summary) const {
  if (format_ == OutputFormat::kJson) return Json(LoadStruct(summary));
  return TableLoad(summary);
}

}  // namespace poold::client
