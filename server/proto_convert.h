// Request validation and the conversions between the poold.v1 messages and
// the engine's and worker's types. The only place that knows both sides.
#ifndef POOLD_SERVER_PROTO_CONVERT_H_
#define POOLD_SERVER_PROTO_CONVERT_H_

#include <chrono>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/repeated_field.h"
#include "google/protobuf/timestamp.pb.h"
#include "poold/v1/pool_service.pb.h"
#include "worker/command.h"
#include "worker/pools/block_info.h"
#include "worker/pools/defrag_report.h"
#include "worker/pools/fragmentation_stats.h"
#include "worker/pools/pool_analysis.h"
#include "worker/pools/pool_kind.h"
#include "worker/worker_stats.h"

namespace poold {

// ---- Pools --------------------------------------------------------------

v1::Pool PoolToProto(pools::PoolKind pool);

// The engine's pool for the wire value `value` (a v1::Pool number).
// INVALID_ARGUMENT for POOL_UNSPECIFIED and for values this server does not
// know.
absl::StatusOr<pools::PoolKind> PoolFromProto(int value);

// The distinct pools named in `pools`, in the order small, medium, large. An
// empty list means all pools; a pool named twice counts once. INVALID_ARGUMENT
// when any entry is POOL_UNSPECIFIED or unknown.
absl::StatusOr<std::vector<pools::PoolKind>> PoolListFromProto(
    const google::protobuf::RepeatedField<int>& pools);

// ---- Requests -> ops (validation) ----------------------------------------
//
// Each returns the op with its inputs set and `done` empty, or the error the
// RPC answers at once. String views point into `request`, which must outlive
// the op.

// INVALID_ARGUMENT when the size is 0 and there is no data, when the size
// (or, with size 0, the data length) exceeds `max_block_bytes`, or when the
// data is longer than a non-zero size.
absl::StatusOr<AllocateOp> AllocateOpFromProto(
    const v1::AllocateRequest& request, uint64_t max_block_bytes);
// NOT_FOUND for handle 0, which no block ever has. Offsets and lengths are
// checked against the block by the engine.
absl::StatusOr<WriteOp> WriteOpFromProto(const v1::WriteRequest& request);
absl::StatusOr<ReadOp> ReadOpFromProto(const v1::ReadRequest& request);
absl::StatusOr<FreeOp> FreeOpFromProto(const v1::FreeRequest& request);
absl::StatusOr<StatsOp> StatsOpFromProto(const v1::GetStatsRequest& request);
// INVALID_ARGUMENT for a bad pool list (see PoolListFromProto).
absl::StatusOr<AnalyzeOp> AnalyzeOpFromProto(
    const v1::AnalyzeFragmentationRequest& request);
absl::StatusOr<DefragOp> DefragOpFromProto(
    const v1::TriggerDefragmentationRequest& request);

// NOT_FOUND for handle 0; OK otherwise.
absl::Status ValidateHandle(uint64_t handle);

// ---- Engine results -> responses ----------------------------------------

void BlockInfoToProto(const pools::BlockInfo& info,
                      v1::AllocateResponse* response);
void FragmentationStatsToProto(const pools::FragmentationStats& stats,
                               v1::FragmentationStats* proto);
// Pools in the order small, medium, large; size classes when present.
void StatsSnapshotToProto(const StatsSnapshot& snapshot,
                          v1::GetStatsResponse* response);
void WorkerStatsToProto(const WorkerStats& stats, v1::WorkerStats* proto);
void HistogramToProto(const LatencyHistogram& histogram, v1::Histogram* proto);
// The process's memory beside the pools' `pools_resident_bytes`.
void ProcessStatsToProto(const ProcessMemoryStats& stats,
                         uint64_t pools_resident_bytes,
                         v1::ProcessStats* proto);
// One entry per analysis, plus the totals over them.
void PoolAnalysesToProto(const std::vector<pools::PoolAnalysis>& analyses,
                         v1::FragmentationReport* report);
void DefragReportToProto(const pools::DefragReport& report,
                         v1::DefragReport* proto);
v1::PoolDefragReport::Outcome DefragOutcomeToProto(
    pools::DefragOutcome outcome);
v1::DefragReport::Origin DefragOriginToProto(pools::DefragOrigin origin);
v1::DefragReport::StopReason DefragStopReasonToProto(
    pools::DefragStopReason reason);
void AutoDefragStatsToProto(const AutoDefragStats& stats,
                            v1::AutoDefragStats* proto);
v1::AutoDefragStats::State AutoDefragStateToProto(AutoDefragState state);

// `time` as a google.protobuf.Timestamp; an infinite time clears it (unset).
void TimeToProto(absl::Time time, google::protobuf::Timestamp* proto);

// ---- Time ----------------------------------------------------------------

// `duration` as a google.protobuf.Duration. Infinite durations saturate at
// the largest (or smallest) value the message allows.
void DurationToProto(absl::Duration duration,
                     google::protobuf::Duration* proto);

// The gRPC deadline `deadline` as an absl::Time; no deadline (the time
// point's maximum) is InfiniteFuture.
absl::Time DeadlineFromGrpc(std::chrono::system_clock::time_point deadline);

}  // namespace poold

#endif  // POOLD_SERVER_PROTO_CONVERT_H_
