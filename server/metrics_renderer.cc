// RenderMetrics: one family per metric, from a GetStatsResponse.
#include "server/metrics_renderer.h"

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "server/prometheus_text.h"

namespace poold {
namespace {

using Labels = PrometheusText::Labels;

// "POOL_SMALL" -> "small", "ORIGIN_MEMORY_LIMIT" -> "memory_limit".
std::string EnumLabel(const std::string& name, absl::string_view prefix) {
  absl::string_view rest = name;
  absl::ConsumePrefix(&rest, prefix);
  return absl::AsciiStrToLower(rest);
}

std::string PoolLabel(v1::Pool pool) {
  return EnumLabel(v1::Pool_Name(pool), "POOL_");
}
std::string OriginLabel(v1::DefragReport::Origin origin) {
  return EnumLabel(v1::DefragReport::Origin_Name(origin), "ORIGIN_");
}
std::string OutcomeLabel(v1::PoolDefragReport::Outcome outcome) {
  return EnumLabel(v1::PoolDefragReport::Outcome_Name(outcome), "OUTCOME_");
}

double Seconds(const google::protobuf::Timestamp& time) {
  return static_cast<double>(time.seconds()) +
         static_cast<double>(time.nanos()) * 1e-9;
}

void WriteHistogram(PrometheusText& text, absl::string_view name,
                    const Labels& labels, const v1::Histogram& histogram) {
  // Every histogram the worker sends has its buckets (zeros when empty);
  // a malformed one is left out rather than written wrong.
  if (histogram.counts_size() != histogram.bounds_seconds_size() + 1) return;
  text.Histogram(
      name, labels,
      {histogram.bounds_seconds().data(),
       static_cast<size_t>(histogram.bounds_seconds_size())},
      {histogram.counts().data(), static_cast<size_t>(histogram.counts_size())},
      histogram.sum_seconds(), histogram.count());
}

// One gauge family with a sample per pool.
void PoolGauge(
    PrometheusText& text, const v1::GetStatsResponse& stats,
    absl::string_view name, absl::string_view help,
    const std::function<double(const v1::FragmentationStats&)>& get) {
  text.Family(name, "gauge", help);
  for (const v1::PoolStats& pool : stats.pools()) {
    text.Sample(name, {{"pool", PoolLabel(pool.pool())}}, get(pool.stats()));
  }
}

// One gauge family with a sample per size class in use.
void ClassGauge(
    PrometheusText& text, const v1::GetStatsResponse& stats,
    absl::string_view name, absl::string_view help,
    const std::function<double(const v1::FragmentationStats&)>& get) {
  text.Family(name, "gauge", help);
  for (const v1::PoolStats& pool : stats.pools()) {
    for (const v1::SizeClassStats& size_class : pool.classes()) {
      text.Sample(name,
                  {{"pool", PoolLabel(pool.pool())},
                   {"slot_bytes", absl::StrCat(size_class.slot_bytes())}},
                  get(size_class.stats()));
    }
  }
}

void WritePools(PrometheusText& text, const v1::GetStatsResponse& stats) {
  using FS = v1::FragmentationStats;
  PoolGauge(text, stats, "poold_pool_live_bytes",
            "Bytes of live blocks (the sizes clients asked for).",
            [](const FS& s) { return s.live_bytes(); });
  PoolGauge(text, stats, "poold_pool_allocated_bytes",
            "Bytes of the slots or extents that hold live blocks.",
            [](const FS& s) { return s.allocated_bytes(); });
  PoolGauge(text, stats, "poold_pool_resident_bytes",
            "Bytes the pool holds from the OS, metadata included.",
            [](const FS& s) { return s.resident_bytes(); });
  PoolGauge(text, stats, "poold_pool_metadata_bytes",
            "Resident bytes of the pool's metadata (handle table, span "
            "records).",
            [](const FS& s) { return s.metadata_bytes(); });
  PoolGauge(text, stats, "poold_pool_free_bytes",
            "Free bytes inside partly used spans.",
            [](const FS& s) { return s.free_bytes(); });
  PoolGauge(text, stats, "poold_pool_reclaimable_bytes",
            "Bytes a full defragmentation would return to the OS now.",
            [](const FS& s) { return s.reclaimable_bytes(); });
  PoolGauge(text, stats, "poold_pool_fragmentation_ratio",
            "1 - live bytes / resident bytes (0 when nothing is resident).",
            [](const FS& s) { return s.fragmentation_ratio(); });
  PoolGauge(text, stats, "poold_pool_blocks", "Live blocks.",
            [](const FS& s) { return s.blocks(); });
  PoolGauge(text, stats, "poold_pool_spans",
            "Spans in use (small and medium pools) or chunks (large pool).",
            [](const FS& s) { return s.spans(); });
  PoolGauge(text, stats, "poold_pool_partial_spans",
            "Spans with both live and free slots.",
            [](const FS& s) { return s.partial_spans(); });
  PoolGauge(text, stats, "poold_pool_empty_spans",
            "Empty spans kept for reuse, not yet returned to the OS.",
            [](const FS& s) { return s.empty_spans(); });

  ClassGauge(text, stats, "poold_size_class_live_bytes",
             "Bytes of live blocks of one size class (classes in use only).",
             [](const FS& s) { return s.live_bytes(); });
  ClassGauge(text, stats, "poold_size_class_resident_bytes",
             "Bytes one size class holds from the OS.",
             [](const FS& s) { return s.resident_bytes(); });
  ClassGauge(text, stats, "poold_size_class_blocks",
             "Live blocks of one size class.",
             [](const FS& s) { return s.blocks(); });
  ClassGauge(text, stats, "poold_size_class_fragmentation_ratio",
             "1 - live bytes / resident bytes of one size class.",
             [](const FS& s) { return s.fragmentation_ratio(); });
}

void WriteWorker(PrometheusText& text, const MetricsInput& input) {
  const v1::WorkerStats& worker = input.stats->worker();
  text.Single("poold_queue_depth", "gauge",
              "Commands waiting for the worker thread now.", input.queue_depth);
  text.Single("poold_queue_capacity", "gauge",
              "Commands the channel holds before requests are refused "
              "(--channel_capacity).",
              worker.channel_capacity());
  text.Single("poold_queue_refusals_total", "counter",
              "Requests answered RESOURCE_EXHAUSTED because the channel was "
              "full.",
              worker.commands_refused());
  text.Single("poold_allocations_waiting_for_room", "gauge",
              "Allocations waiting for a defragmentation to make room under "
              "--memory_limit_bytes.",
              worker.allocations_waiting_for_room());
  text.Single("poold_long_copies_in_progress", "gauge",
              "Reads, writes and allocations of more than 256 KiB being "
              "copied in pieces.",
              worker.long_copies_in_progress());
  text.Single("poold_commands_waiting_for_blocks", "gauge",
              "Requests and batches waiting for a block that a long copy "
              "keeps busy.",
              worker.commands_waiting_for_blocks());

  text.Family("poold_rpc_completed_total", "counter",
              "Commands the worker completed (any status), by RPC method.");
  for (const v1::CommandLatency& latency : worker.latency()) {
    const auto found = worker.commands_completed().find(latency.method());
    text.Sample("poold_rpc_completed_total", {{"method", latency.method()}},
                found == worker.commands_completed().end() ? uint64_t{0}
                                                           : found->second);
  }
  text.Family("poold_rpc_queue_wait_seconds", "histogram",
              "Time a command waited in the channel before the worker began "
              "it, by RPC method.");
  for (const v1::CommandLatency& latency : worker.latency()) {
    WriteHistogram(text, "poold_rpc_queue_wait_seconds",
                   {{"method", latency.method()}}, latency.queue_wait());
  }
  text.Family("poold_rpc_service_seconds", "histogram",
              "Time the worker took to complete a command once begun, by RPC "
              "method (a defragmentation: its whole run).");
  for (const v1::CommandLatency& latency : worker.latency()) {
    WriteHistogram(text, "poold_rpc_service_seconds",
                   {{"method", latency.method()}}, latency.service());
  }

  text.Single("poold_heap_trims_total", "counter",
              "Times the worker handed the free pages of the malloc heap back "
              "to the OS.",
              worker.heap_trims());
  text.Single("poold_heap_trimmed_bytes_total", "counter",
              "Resident bytes those heap trims returned to the OS.",
              worker.heap_bytes_released());
}

void WriteDefrag(PrometheusText& text, const v1::GetStatsResponse& stats) {
  const v1::WorkerStats& worker = stats.worker();
  struct Counter {
    const char* name;
    const char* help;
    uint64_t (v1::DefragOriginStats::*get)() const;
  };
  const Counter counters[] = {
      {"poold_defrag_runs_total",
       "Defragmentations ended (complete or not), by origin.",
       &v1::DefragOriginStats::runs},
      {"poold_defrag_reclaimed_bytes_total",
       "Bytes defragmentations returned to the OS, by origin.",
       &v1::DefragOriginStats::bytes_reclaimed},
      {"poold_defrag_moved_bytes_total",
       "Block bytes defragmentations copied, by origin.",
       &v1::DefragOriginStats::bytes_moved},
      {"poold_defrag_moved_blocks_total",
       "Blocks defragmentations moved, by origin.",
       &v1::DefragOriginStats::blocks_moved},
  };
  for (const Counter& counter : counters) {
    text.Family(counter.name, "counter", counter.help);
    for (const v1::DefragOriginStats& origin : worker.defrag_by_origin()) {
      text.Sample(counter.name, {{"origin", OriginLabel(origin.origin())}},
                  (origin.*counter.get)());
    }
  }
  text.Family("poold_defrag_pool_outcomes_total", "counter",
              "Pools a defragmentation ended with an outcome (cleaned, "
              "skipped, partial, failed), by origin.");
  for (const v1::DefragOriginStats& origin : worker.defrag_by_origin()) {
    for (const v1::PoolOutcomeCount& pair : origin.pool_outcomes()) {
      text.Sample("poold_defrag_pool_outcomes_total",
                  {{"origin", OriginLabel(origin.origin())},
                   {"pool", PoolLabel(pair.pool())},
                   {"outcome", OutcomeLabel(pair.outcome())}},
                  pair.count());
    }
  }
  text.Family("poold_defrag_slice_duration_seconds", "histogram",
              "Duration of each defragmentation slice, by origin.");
  for (const v1::DefragOriginStats& origin : worker.defrag_by_origin()) {
    WriteHistogram(text, "poold_defrag_slice_duration_seconds",
                   {{"origin", OriginLabel(origin.origin())}},
                   origin.slice_duration());
  }

  const v1::AutoDefragStats& automatic = stats.auto_defrag();
  text.Family("poold_auto_defrag_state", "gauge",
              "1 for the state automatic defragmentation is in (disabled, "
              "idle, running, backing_off), 0 for the others.");
  for (int state = v1::AutoDefragStats::STATE_DISABLED;
       state <= v1::AutoDefragStats::STATE_BACKING_OFF; ++state) {
    text.Sample("poold_auto_defrag_state",
                {{"state",
                  EnumLabel(v1::AutoDefragStats::State_Name(
                                static_cast<v1::AutoDefragStats::State>(state)),
                            "STATE_")}},
                uint64_t{automatic.state() == state ? 1u : 0u});
  }
  text.Single("poold_auto_defrag_cpu_seconds_total", "counter",
              "CPU time of the worker thread in automatic defragmentation "
              "slices.",
              static_cast<double>(automatic.cpu_time().seconds()) +
                  static_cast<double>(automatic.cpu_time().nanos()) * 1e-9);
  text.Single("poold_auto_defrag_cpu_share", "gauge",
              "Share of one core the automatic run in progress (or the last "
              "one) may use.",
              automatic.cpu_share());
  text.Single("poold_auto_defrag_poor_runs", "gauge",
              "Automatic runs in a row that returned little (behind the "
              "back-off).",
              automatic.poor_runs());
}

void WriteProcess(PrometheusText& text, const MetricsInput& input) {
  const v1::GetStatsResponse& stats = *input.stats;
  text.Single("poold_process_outside_pools_bytes", "gauge",
              "Resident bytes of the process beyond the pools (gRPC, "
              "protobuf, code, stacks).",
              stats.process().outside_pools_bytes());
  text.Single("poold_heap_in_use_bytes", "gauge",
              "Bytes glibc's malloc heap has handed out.",
              stats.process().heap_in_use_bytes());
  text.Single("poold_heap_free_bytes", "gauge",
              "Free bytes glibc's malloc heap keeps in its arenas.",
              stats.process().heap_free_bytes());
  text.Single("poold_heap_arenas", "gauge",
              "glibc malloc arenas (--heap_arenas bounds them).",
              stats.process().heap_arenas());

  const v1::TransportStats& transport = stats.transport();
  text.Single("poold_payload_in_flight_bytes", "gauge",
              "Block bytes that calls in flight hold (Allocate and Write data, "
              "Read responses not yet read).",
              transport.payload_bytes_in_flight());
  text.Single("poold_payload_in_flight_limit_bytes", "gauge",
              "--max_payload_bytes_in_flight (0: no limit).",
              transport.max_payload_bytes_in_flight());
  text.Single("poold_payload_refusals_total", "counter",
              "Calls answered RESOURCE_EXHAUSTED because the payload limit "
              "was reached.",
              transport.payload_refusals());
  text.Single("poold_unknown_handle_answers_total", "counter",
              "Read, Write and Free calls answered NOT_FOUND (unknown, freed, "
              "forged or another identity's handle).",
              transport.unknown_handle_answers());
  text.Single("poold_unknown_handle_refusals_total", "counter",
              "Handle calls refused RESOURCE_EXHAUSTED because their client "
              "named too many unknown handles.",
              transport.unknown_handle_refusals());
  text.Single("poold_tcp_connections_open", "gauge",
              "TCP connections open (as of the last accept, or at most a "
              "second ago).",
              transport.connections_open());
  text.Single("poold_tcp_connections_accepted_total", "counter",
              "TCP connections accepted and served.",
              transport.connections_accepted());
  {
    constexpr absl::string_view kRefused =
        "poold_tcp_connections_refused_total";
    text.Family(kRefused, "counter",
                "TCP connections closed as soon as accepted, by reason: "
                "max_connections or max_connections_per_address reached, "
                "open_files (no file descriptor left), other (gone before "
                "it was looked at).");
    const uint64_t by_reason[] = {
        transport.connections_refused_max_connections(),
        transport.connections_refused_per_address(),
        transport.connections_refused_open_files()};
    const char* const kReasons[] = {
        "max_connections", "max_connections_per_address", "open_files"};
    uint64_t known = 0;
    for (int i = 0; i < 3; ++i) {
      text.Sample(kRefused, {{"reason", kReasons[i]}}, by_reason[i]);
      known += by_reason[i];
    }
    text.Sample(kRefused, {{"reason", "other"}},
                transport.connections_refused() > known
                    ? transport.connections_refused() - known
                    : uint64_t{0});
  }
  text.Single("poold_tcp_connections_limit", "gauge",
              "TCP connections allowed at once (--max_connections, lowered to "
              "fit the open-files limit).",
              transport.max_connections());

  text.Single("poold_stats_snapshot_timestamp_seconds", "gauge",
              "When the worker took the statistics this scrape shows "
              "(seconds since the epoch).",
              Seconds(stats.taken_at()));
  text.Single("poold_stats_snapshots_total", "counter",
              "Statistics snapshots the worker has published.",
              stats.snapshot_sequence());

  if (!input.process.has_value()) return;
  const ProcessMetrics& process = *input.process;
  text.Single("process_cpu_seconds_total", "counter",
              "Total user and system CPU time spent in seconds.",
              process.cpu_seconds);
  text.Single("process_resident_memory_bytes", "gauge",
              "Resident memory size in bytes.", process.resident_memory_bytes);
  text.Single("process_virtual_memory_bytes", "gauge",
              "Virtual memory size in bytes.", process.virtual_memory_bytes);
  text.Single("process_open_fds", "gauge", "Number of open file descriptors.",
              process.open_fds);
  text.Single("process_max_fds", "gauge",
              "Maximum number of open file descriptors.", process.max_fds);
  text.Single("process_start_time_seconds", "gauge",
              "Start time of the process since unix epoch in seconds.",
              process.start_time_seconds);
}

}  // namespace

std::string RenderMetrics(const MetricsInput& input) {
  PrometheusText text;
  WritePools(text, *input.stats);
  WriteWorker(text, input);
  WriteDefrag(text, *input.stats);
  WriteProcess(text, input);
  return text.Release();
}

}  // namespace poold
