// Request validation and proto <-> engine conversions.
#include "server/proto_convert.h"

#include <array>
#include <cstddef>
#include <string>

#include "absl/strings/str_cat.h"

namespace poold {
namespace {

// The range google.protobuf.Duration allows: about +-10000 years.
constexpr int64_t kMaxDurationSeconds = 315576000000;
constexpr int32_t kMaxDurationNanos = 999999999;

}  // namespace

v1::Pool PoolToProto(pools::PoolKind pool) {
  switch (pool) {
    case pools::PoolKind::kSmall:
      return v1::POOL_SMALL;
    case pools::PoolKind::kMedium:
      return v1::POOL_MEDIUM;
    case pools::PoolKind::kLarge:
      return v1::POOL_LARGE;
  }
  return v1::POOL_UNSPECIFIED;
}

absl::StatusOr<pools::PoolKind> PoolFromProto(int value) {
  switch (value) {
    case v1::POOL_SMALL:
      return pools::PoolKind::kSmall;
    case v1::POOL_MEDIUM:
      return pools::PoolKind::kMedium;
    case v1::POOL_LARGE:
      return pools::PoolKind::kLarge;
    case v1::POOL_UNSPECIFIED:
      return absl::InvalidArgumentError(
          "POOL_UNSPECIFIED is not a pool; name POOL_SMALL, POOL_MEDIUM or "
          "POOL_LARGE, or send an empty list for all pools");
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown pool value ", value));
  }
}

absl::StatusOr<std::vector<pools::PoolKind>> PoolListFromProto(
    const google::protobuf::RepeatedField<int>& pools) {
  if (pools.empty()) {
    return std::vector<pools::PoolKind>(pools::kAllPools.begin(),
                                        pools::kAllPools.end());
  }
  std::array<bool, pools::kPoolCount> named = {};
  for (int i = 0; i < pools.size(); ++i) {
    absl::StatusOr<pools::PoolKind> pool = PoolFromProto(pools.Get(i));
    if (!pool.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("pools[", i, "]: ", pool.status().message()));
    }
    named[pools::PoolIndex(*pool)] = true;
  }
  std::vector<pools::PoolKind> result;
  for (pools::PoolKind pool : pools::kAllPools) {
    if (named[pools::PoolIndex(pool)]) result.push_back(pool);
  }
  return result;
}

absl::Status ValidateHandle(uint64_t handle) {
  if (handle == 0) {
    return absl::NotFoundError("handle 0 never names a block");
  }
  return absl::OkStatus();
}

absl::StatusOr<AllocateOp> AllocateOpFromProto(
    const v1::AllocateRequest& request, uint64_t max_block_bytes) {
  const std::string& data = request.data();
  uint64_t size = request.size();
  if (size == 0) {
    if (data.empty()) {
      return absl::InvalidArgumentError(
          "size is 0 and there is no data: nothing to allocate");
    }
    size = data.size();
  } else if (data.size() > size) {
    return absl::InvalidArgumentError(
        absl::StrCat("data (", data.size(), " bytes) is longer than size (",
                     size, " bytes)"));
  }
  if (size > max_block_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("block size ", size, " bytes exceeds the maximum of ",
                     max_block_bytes, " bytes (--max_block_bytes)"));
  }
  AllocateOp op;
  op.size = size;
  op.data = data;
  return op;
}

absl::StatusOr<WriteOp> WriteOpFromProto(const v1::WriteRequest& request) {
  if (absl::Status s = ValidateHandle(request.handle()); !s.ok()) return s;
  WriteOp op;
  op.handle = request.handle();
  op.offset = request.offset();
  op.data = request.data();
  return op;
}

absl::StatusOr<ReadOp> ReadOpFromProto(const v1::ReadRequest& request) {
  if (absl::Status s = ValidateHandle(request.handle()); !s.ok()) return s;
  ReadOp op;
  op.handle = request.handle();
  op.offset = request.offset();
  op.length = request.length();
  return op;
}

absl::StatusOr<FreeOp> FreeOpFromProto(const v1::FreeRequest& request) {
  if (absl::Status s = ValidateHandle(request.handle()); !s.ok()) return s;
  FreeOp op;
  op.handle = request.handle();
  return op;
}

absl::StatusOr<StatsOp> StatsOpFromProto(const v1::GetStatsRequest& request) {
  StatsOp op;
  op.include_classes = request.include_classes();
  op.include_defrag_history = request.include_defrag_history();
  return op;
}

absl::StatusOr<AnalyzeOp> AnalyzeOpFromProto(
    const v1::AnalyzeFragmentationRequest& request) {
  absl::StatusOr<std::vector<pools::PoolKind>> pools =
      PoolListFromProto(request.pools());
  if (!pools.ok()) return pools.status();
  AnalyzeOp op;
  op.pools = *std::move(pools);
  return op;
}

absl::StatusOr<DefragOp> DefragOpFromProto(
    const v1::TriggerDefragmentationRequest& request) {
  absl::StatusOr<std::vector<pools::PoolKind>> pools =
      PoolListFromProto(request.pools());
  if (!pools.ok()) return pools.status();
  DefragOp op;
  op.pools = *std::move(pools);
  return op;
}

void BlockInfoToProto(const pools::BlockInfo& info,
                      v1::AllocateResponse* response) {
  response->set_handle(info.handle);
  response->set_pool(PoolToProto(info.pool));
  response->set_block_size(info.size);
  response->set_slot_bytes(info.slot_bytes);
}

void FragmentationStatsToProto(const pools::FragmentationStats& stats,
                               v1::FragmentationStats* proto) {
  proto->set_live_bytes(stats.live_bytes);
  proto->set_allocated_bytes(stats.allocated_bytes);
  proto->set_resident_bytes(stats.resident_bytes);
  proto->set_metadata_bytes(stats.metadata_bytes);
  proto->set_free_bytes(stats.free_bytes);
  proto->set_blocks(stats.blocks);
  proto->set_spans(stats.spans);
  proto->set_partial_spans(stats.partial_spans);
  proto->set_empty_spans(stats.empty_spans);
  proto->set_fragmentation_ratio(stats.FragmentationRatio());
  proto->set_reclaimable_bytes(stats.reclaimable_bytes);
  proto->set_free_extents(stats.free_extents);
  proto->set_largest_free_extent_bytes(stats.largest_free_extent_bytes);
  proto->set_unpurged_bytes(stats.unpurged_bytes);
}

void WorkerStatsToProto(const WorkerStats& stats, v1::WorkerStats* proto) {
  proto->set_queue_depth(stats.queue_depth);
  proto->set_channel_capacity(stats.channel_capacity);
  auto& completed = *proto->mutable_commands_completed();
  for (size_t i = 0; i < kCommandTypeCount; ++i) {
    CommandType type = static_cast<CommandType>(i);
    completed[std::string(CommandTypeName(type))] = stats.completed_of(type);
  }
  proto->set_commands_refused(stats.refused);
  proto->set_defragmentations(stats.defragmentations);
  proto->set_total_bytes_reclaimed(stats.total_bytes_reclaimed);
  proto->set_memory_limit_defragmentations(stats.memory_limit_defragmentations);
  proto->set_automatic_defragmentations(stats.automatic_defragmentations);
  proto->set_allocations_waiting_for_room(stats.allocations_waiting_for_room);
  proto->set_long_copies_in_progress(stats.long_copies_in_progress);
  proto->set_commands_waiting_for_blocks(stats.commands_waiting_for_blocks);
  proto->set_heap_trims(stats.heap_trims);
  proto->set_heap_bytes_released(stats.heap_bytes_released);
  for (size_t i = 0; i < kCommandTypeCount; ++i) {
    v1::CommandLatency* latency = proto->add_latency();
    latency->set_method(
        std::string(CommandTypeName(static_cast<CommandType>(i))));
    HistogramToProto(stats.queue_wait[i], latency->mutable_queue_wait());
    HistogramToProto(stats.service_time[i], latency->mutable_service());
  }
  for (size_t i = 0; i < pools::kDefragOriginCount; ++i) {
    const DefragOriginStats& origin = stats.by_origin[i];
    v1::DefragOriginStats* entry = proto->add_defrag_by_origin();
    entry->set_origin(DefragOriginToProto(static_cast<pools::DefragOrigin>(i)));
    entry->set_runs(origin.runs);
    entry->set_bytes_reclaimed(origin.bytes_reclaimed);
    entry->set_bytes_moved(origin.bytes_moved);
    entry->set_blocks_moved(origin.blocks_moved);
    for (size_t pool = 0; pool < pools::kPoolCount; ++pool) {
      for (size_t outcome = 0; outcome < pools::kDefragOutcomeCount;
           ++outcome) {
        const uint64_t count = origin.pool_outcomes[pool][outcome];
        if (count == 0) continue;
        v1::PoolOutcomeCount* pair = entry->add_pool_outcomes();
        pair->set_pool(PoolToProto(static_cast<pools::PoolKind>(pool)));
        pair->set_outcome(
            DefragOutcomeToProto(static_cast<pools::DefragOutcome>(outcome)));
        pair->set_count(count);
      }
    }
    HistogramToProto(origin.slices, entry->mutable_slice_duration());
  }
}

void HistogramToProto(const LatencyHistogram& histogram, v1::Histogram* proto) {
  for (int64_t bound : LatencyHistogram::kBoundsNanos) {
    // Divided, not multiplied by 1e-9: 1000 ns is then exactly the double
    // nearest 1e-6, which prints as "1e-06" in Prometheus's le label.
    proto->add_bounds_seconds(static_cast<double>(bound) / 1e9);
  }
  for (uint64_t count : histogram.counts()) proto->add_counts(count);
  proto->set_sum_seconds(absl::ToDoubleSeconds(histogram.sum()));
  proto->set_count(histogram.count());
}

void ProcessStatsToProto(const ProcessMemoryStats& stats,
                         uint64_t pools_resident_bytes,
                         v1::ProcessStats* proto) {
  proto->set_rss_bytes(stats.rss_bytes);
  proto->set_rss_anon_bytes(stats.rss_anon_bytes);
  proto->set_rss_file_bytes(stats.rss_file_bytes);
  proto->set_pools_resident_bytes(pools_resident_bytes);
  proto->set_outside_pools_bytes(stats.rss_bytes > pools_resident_bytes
                                     ? stats.rss_bytes - pools_resident_bytes
                                     : 0);
  proto->set_heap_in_use_bytes(stats.heap_in_use_bytes);
  proto->set_heap_free_bytes(stats.heap_free_bytes);
  proto->set_heap_arenas(stats.heap_arenas);
}

void StatsSnapshotToProto(const StatsSnapshot& snapshot,
                          v1::GetStatsResponse* response) {
  TimeToProto(snapshot.taken_at, response->mutable_taken_at());
  response->set_snapshot_sequence(snapshot.sequence);
  for (const pools::PoolStats& pool : snapshot.pools.pools) {
    v1::PoolStats* entry = response->add_pools();
    entry->set_pool(PoolToProto(pool.pool));
    FragmentationStatsToProto(pool.stats, entry->mutable_stats());
    entry->set_defrag_failures(
        snapshot.worker.pool_defrag_failures[pools::PoolIndex(pool.pool)]);
    entry->set_last_defrag_failure(
        snapshot.worker.last_pool_defrag_failure[pools::PoolIndex(pool.pool)]);
    for (const pools::ClassStats& size_class : pool.classes) {
      v1::SizeClassStats* class_entry = entry->add_classes();
      class_entry->set_slot_bytes(size_class.slot_bytes);
      FragmentationStatsToProto(size_class.stats, class_entry->mutable_stats());
    }
  }
  FragmentationStatsToProto(snapshot.pools.total, response->mutable_total());
  WorkerStatsToProto(snapshot.worker, response->mutable_worker());
  ProcessStatsToProto(snapshot.process, snapshot.pools.total.resident_bytes,
                      response->mutable_process());
  AutoDefragStatsToProto(snapshot.auto_defrag, response->mutable_auto_defrag());
  for (const pools::DefragReport& report : snapshot.recent_defragmentations) {
    DefragReportToProto(report, response->add_recent_defragmentations());
  }
}

v1::AutoDefragStats::State AutoDefragStateToProto(AutoDefragState state) {
  switch (state) {
    case AutoDefragState::kDisabled:
      return v1::AutoDefragStats::STATE_DISABLED;
    case AutoDefragState::kIdle:
      return v1::AutoDefragStats::STATE_IDLE;
    case AutoDefragState::kRunning:
      return v1::AutoDefragStats::STATE_RUNNING;
    case AutoDefragState::kBackingOff:
      return v1::AutoDefragStats::STATE_BACKING_OFF;
  }
  return v1::AutoDefragStats::STATE_UNSPECIFIED;
}

void AutoDefragStatsToProto(const AutoDefragStats& stats,
                            v1::AutoDefragStats* proto) {
  proto->set_state(AutoDefragStateToProto(stats.state));
  proto->set_last_decision(stats.last_decision);
  proto->set_last_decision_ran(stats.last_decision_ran);
  TimeToProto(stats.last_decision_at, proto->mutable_last_decision_at());
  TimeToProto(stats.next_look_at, proto->mutable_next_look_at());
  proto->set_runs(stats.runs);
  proto->set_bytes_reclaimed(stats.bytes_reclaimed);
  DurationToProto(stats.cpu_time, proto->mutable_cpu_time());
  proto->set_cpu_share(stats.cpu_share);
  proto->set_poor_runs(stats.poor_runs);
}

v1::DefragReport::Origin DefragOriginToProto(pools::DefragOrigin origin) {
  switch (origin) {
    case pools::DefragOrigin::kRpc:
      return v1::DefragReport::ORIGIN_RPC;
    case pools::DefragOrigin::kMemoryLimit:
      return v1::DefragReport::ORIGIN_MEMORY_LIMIT;
    case pools::DefragOrigin::kAutomatic:
      return v1::DefragReport::ORIGIN_AUTOMATIC;
  }
  return v1::DefragReport::ORIGIN_UNSPECIFIED;
}

v1::DefragReport::StopReason DefragStopReasonToProto(
    pools::DefragStopReason reason) {
  switch (reason) {
    case pools::DefragStopReason::kFinished:
      return v1::DefragReport::STOP_REASON_FINISHED;
    case pools::DefragStopReason::kDeadline:
      return v1::DefragReport::STOP_REASON_DEADLINE;
    case pools::DefragStopReason::kCancelled:
      return v1::DefragReport::STOP_REASON_CANCELLED;
    case pools::DefragStopReason::kShutdown:
      return v1::DefragReport::STOP_REASON_SHUTDOWN;
    case pools::DefragStopReason::kNoneWaiting:
      return v1::DefragReport::STOP_REASON_NONE_WAITING;
    case pools::DefragStopReason::kPreempted:
      return v1::DefragReport::STOP_REASON_PREEMPTED;
    case pools::DefragStopReason::kTargetReached:
      return v1::DefragReport::STOP_REASON_TARGET_REACHED;
  }
  return v1::DefragReport::STOP_REASON_UNSPECIFIED;
}

void PoolAnalysesToProto(const std::vector<pools::PoolAnalysis>& analyses,
                         v1::FragmentationReport* report) {
  pools::FragmentationStats total;
  uint64_t blocks_moved = 0;
  uint64_t bytes_moved = 0;
  uint64_t bytes_reclaimed = 0;
  for (const pools::PoolAnalysis& analysis : analyses) {
    v1::PoolAnalysis* entry = report->add_pools();
    entry->set_pool(PoolToProto(analysis.pool));
    FragmentationStatsToProto(analysis.stats, entry->mutable_stats());
    entry->set_projected_blocks_moved(analysis.blocks_to_move);
    entry->set_projected_bytes_moved(analysis.bytes_to_move);
    entry->set_projected_spans_released(analysis.spans_to_release);
    entry->set_projected_bytes_reclaimed(analysis.bytes_to_reclaim);
    entry->set_projected_fragmentation_ratio(analysis.ratio_after);
    total.Add(analysis.stats);
    blocks_moved += analysis.blocks_to_move;
    bytes_moved += analysis.bytes_to_move;
    bytes_reclaimed += analysis.bytes_to_reclaim;
  }
  FragmentationStatsToProto(total, report->mutable_total());
  report->set_projected_blocks_moved(blocks_moved);
  report->set_projected_bytes_moved(bytes_moved);
  report->set_projected_bytes_reclaimed(bytes_reclaimed);
}

v1::PoolDefragReport::Outcome DefragOutcomeToProto(
    pools::DefragOutcome outcome) {
  switch (outcome) {
    case pools::DefragOutcome::kCleaned:
      return v1::PoolDefragReport::OUTCOME_CLEANED;
    case pools::DefragOutcome::kSkipped:
      return v1::PoolDefragReport::OUTCOME_SKIPPED;
    case pools::DefragOutcome::kPartial:
      return v1::PoolDefragReport::OUTCOME_PARTIAL;
    case pools::DefragOutcome::kFailed:
      return v1::PoolDefragReport::OUTCOME_FAILED;
  }
  return v1::PoolDefragReport::OUTCOME_UNSPECIFIED;
}

void DefragReportToProto(const pools::DefragReport& report,
                         v1::DefragReport* proto) {
  for (const pools::PoolDefragReport& pool : report.pools) {
    v1::PoolDefragReport* entry = proto->add_pools();
    entry->set_pool(PoolToProto(pool.pool));
    entry->set_outcome(DefragOutcomeToProto(pool.outcome));
    entry->set_reason(pool.reason);
    FragmentationStatsToProto(pool.before, entry->mutable_before());
    FragmentationStatsToProto(pool.after, entry->mutable_after());
    entry->set_blocks_moved(pool.blocks_moved);
    entry->set_bytes_moved(pool.bytes_moved);
    entry->set_spans_released(pool.spans_released);
    entry->set_bytes_reclaimed(pool.bytes_reclaimed);
    DurationToProto(pool.duration, entry->mutable_duration());
  }
  proto->set_bytes_reclaimed(report.bytes_reclaimed);
  proto->set_bytes_moved(report.bytes_moved);
  proto->set_blocks_moved(report.blocks_moved);
  proto->set_spans_released(report.spans_released);
  proto->set_pools_cleaned(report.pools_cleaned);
  proto->set_pools_skipped(report.pools_skipped);
  proto->set_pools_partial(report.pools_partial);
  proto->set_pools_failed(report.pools_failed);
  proto->set_slices(report.slices);
  DurationToProto(report.max_slice, proto->mutable_max_slice_duration());
  DurationToProto(report.duration, proto->mutable_duration());
  proto->set_rss_before_bytes(report.rss_before_bytes);
  proto->set_rss_after_bytes(report.rss_after_bytes);
  proto->set_pools_resident_before_bytes(report.pools_resident_before_bytes);
  proto->set_pools_resident_after_bytes(report.pools_resident_after_bytes);
  proto->set_heap_released_bytes(report.heap_released_bytes);
  proto->set_complete(report.complete);
  proto->set_origin(DefragOriginToProto(report.origin));
  proto->set_stop_reason(DefragStopReasonToProto(report.stop_reason));
  TimeToProto(report.started_at, proto->mutable_started_at());
  if (report.started_at == absl::InfinitePast()) proto->clear_started_at();
}

void TimeToProto(absl::Time time, google::protobuf::Timestamp* proto) {
  if (time == absl::InfinitePast() || time == absl::InfiniteFuture()) {
    proto->Clear();
    return;
  }
  const timespec ts = absl::ToTimespec(time);
  proto->set_seconds(ts.tv_sec);
  proto->set_nanos(static_cast<int32_t>(ts.tv_nsec));
}

void DurationToProto(absl::Duration duration,
                     google::protobuf::Duration* proto) {
  if (duration >= absl::Seconds(kMaxDurationSeconds + 1)) {
    proto->set_seconds(kMaxDurationSeconds);
    proto->set_nanos(kMaxDurationNanos);
    return;
  }
  if (duration <= -absl::Seconds(kMaxDurationSeconds + 1)) {
    proto->set_seconds(-kMaxDurationSeconds);
    proto->set_nanos(-kMaxDurationNanos);
    return;
  }
  absl::Duration remainder;
  // Truncates toward zero; the remainder has the sign of `duration`, as
  // google.protobuf.Duration wants for its nanos.
  const int64_t seconds =
      absl::IDivDuration(duration, absl::Seconds(1), &remainder);
  proto->set_seconds(seconds);
  proto->set_nanos(static_cast<int32_t>(absl::ToInt64Nanoseconds(remainder)));
}

absl::Time DeadlineFromGrpc(std::chrono::system_clock::time_point deadline) {
  if (deadline == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(deadline);
}

}  // namespace poold
