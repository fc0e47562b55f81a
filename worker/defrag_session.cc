// DefragSession: the start, slices and end of one defragmentation.
#include "worker/defrag_session.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"
#include "worker/pools/os_memory.h"

namespace poold {
namespace {

std::string PoolNames(const std::vector<pools::PoolKind>& kinds) {
  if (kinds.empty()) return "all";
  std::string names;
  for (pools::PoolKind kind : kinds) {
    if (!names.empty()) names += ",";
    names += std::string(pools::PoolName(kind));
  }
  return names;
}

void LogPool(const pools::PoolDefragReport& pool) {
  VLOG(1) << "defragmentation of the " << pools::PoolName(pool.pool)
          << " pool: " << pools::DefragOutcomeName(pool.outcome)
          << (pool.reason.empty() ? "" : " (" + pool.reason + ")")
          << " fragmentation "
          << absl::StrFormat("%.1f%% -> %.1f%%",
                             100 * pool.before.FragmentationRatio(),
                             100 * pool.after.FragmentationRatio())
          << " reclaimed=" << pool.bytes_reclaimed
          << " moved=" << pool.bytes_moved << " bytes in " << pool.blocks_moved
          << " blocks, spans released=" << pool.spans_released
          << " time=" << absl::FormatDuration(pool.duration);
}

}  // namespace

DefragSession::DefragSession(pools::PoolSet& engine, pools::DefragOrigin origin)
    : engine_(engine), origin_(origin) {}

DefragSession::~DefragSession() {
  CHECK(!running_) << "a defragmentation session was dropped without End()";
}

absl::Status DefragSession::Begin(const std::vector<pools::PoolKind>& pools) {
  CHECK(!running_);
  rss_before_ = pools::OsMemory::ProcessRssBytes();
  if (absl::Status status = engine_.BeginDefrag(pools); !status.ok()) {
    return status;
  }
  running_ = true;
  started_at_ = absl::Now();
  const pools::PoolSetStats stats = engine_.Stats(false);
  LOG(INFO) << "defragmentation started (" << pools::DefragOriginName(origin_)
            << "): pools=" << PoolNames(pools)
            << " resident=" << stats.total.resident_bytes
            << " live=" << stats.total.live_bytes << " fragmentation="
            << absl::StrFormat("%.1f%%", 100 * stats.total.FragmentationRatio())
            << " reclaimable=" << stats.total.reclaimable_bytes;
  return absl::OkStatus();
}

pools::DefragProgress DefragSession::Step(absl::Duration budget) {
  CHECK(running_);
  const pools::DefragProgress progress = engine_.DefragStep(budget);
  bytes_moved_ += progress.bytes_moved;
  reclaimed_ += progress.bytes_reclaimed;
  committed_ += progress.bytes_committed;
  return progress;
}

pools::DefragReport DefragSession::End(pools::DefragStopReason reason,
                                       absl::FunctionRef<uint64_t()> trim_heap,
                                       WorkerStats& stats) {
  CHECK(running_);
  running_ = false;
  pools::DefragReport report = engine_.EndDefrag(reason);
  report.origin = origin_;
  report.started_at = started_at_;
  report.heap_released_bytes = trim_heap();
  report.rss_before_bytes = rss_before_;
  report.rss_after_bytes = pools::OsMemory::ProcessRssBytes();
  switch (origin_) {
    case pools::DefragOrigin::kRpc:
      ++stats.defragmentations;
      break;
    case pools::DefragOrigin::kMemoryLimit:
      ++stats.memory_limit_defragmentations;
      break;
    case pools::DefragOrigin::kAutomatic:
      ++stats.automatic_defragmentations;
      break;
  }
  stats.total_bytes_reclaimed += report.bytes_reclaimed;
  DefragOriginStats& by_origin = stats.by_origin[static_cast<size_t>(origin_)];
  ++by_origin.runs;
  by_origin.bytes_reclaimed += report.bytes_reclaimed;
  by_origin.bytes_moved += report.bytes_moved;
  by_origin.blocks_moved += report.blocks_moved;
  for (const pools::PoolDefragReport& pool : report.pools) {
    ++by_origin.pool_outcomes[pools::PoolIndex(pool.pool)]
                             [static_cast<size_t>(pool.outcome)];
    if (pool.outcome != pools::DefragOutcome::kFailed) continue;
    ++stats.pool_defrag_failures[pools::PoolIndex(pool.pool)];
    stats.last_pool_defrag_failure[pools::PoolIndex(pool.pool)] = pool.reason;
  }

  LOG(INFO) << "defragmentation "
            << (report.complete
                    ? std::string("finished")
                    : absl::StrCat(
                          "stopped (",
                          pools::DefragStopReasonText(report.stop_reason), ")"))
            << ": origin=" << pools::DefragOriginName(origin_)
            << " reclaimed=" << report.bytes_reclaimed
            << " moved=" << report.bytes_moved << " bytes in "
            << report.blocks_moved
            << " blocks, pools cleaned=" << report.pools_cleaned
            << " skipped=" << report.pools_skipped
            << " partial=" << report.pools_partial
            << " failed=" << report.pools_failed
            << " time=" << absl::FormatDuration(report.duration)
            << " slices=" << report.slices
            << " longest=" << absl::FormatDuration(report.max_slice)
            << " rss=" << report.rss_before_bytes << "->"
            << report.rss_after_bytes
            << " (pools=" << report.pools_resident_after_bytes
            << ", heap trim released " << report.heap_released_bytes << ")";
  for (const pools::PoolDefragReport& pool : report.pools) LogPool(pool);
  return report;
}

}  // namespace poold
