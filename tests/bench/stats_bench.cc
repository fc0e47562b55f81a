// stats_bench: what publishing the statistics costs the worker, and what a
// scrape costs the metrics thread, against the number of size classes in use
// (Google Benchmark). The worker publishes every 100 ms: Publish's time per
// call divided by 100 ms is the share of the worker's time it takes (the
// worker's own part, PoolSet::Stats and copying its counters, is not
// included).
//
//   stats_bench [--benchmark_filter=...]
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "benchmark/benchmark.h"
#include "poold/v1/pool_service.pb.h"
#include "server/metrics_renderer.h"
#include "server/proto_convert.h"
#include "server/stats_board.h"
#include "worker/pools/pool_set.h"
#include "worker/process_memory.h"

namespace poold {
namespace {

// A snapshot of pools holding one block in each of about `classes` size
// classes (spread over the small and medium pools), with the report history
// of a busy server (32 reports of three pools).
StatsSnapshot SnapshotWithClasses(int classes) {
  auto pools = *pools::PoolSet::Create(pools::PoolSetOptions());
  for (int i = 0; i < classes; ++i) {
    // Sizes from 8 B to 64 KiB, geometrically spaced.
    const uint64_t size = static_cast<uint64_t>(
        8.0 * std::pow(8192.0, static_cast<double>(i) / classes));
    CHECK(pools->Allocate(size, "").ok());
  }
  StatsSnapshot snapshot;
  snapshot.sequence = 1;
  snapshot.taken_at = absl::Now();
  snapshot.pools = pools->Stats(/*include_classes=*/true);
  pools::DefragReport report;
  report.pools.resize(3);
  snapshot.recent_defragmentations.assign(32, report);
  return snapshot;
}

size_t ClassesInUse(const StatsSnapshot& snapshot) {
  size_t n = 0;
  for (const pools::PoolStats& pool : snapshot.pools.pools) {
    n += pool.classes.size();
  }
  return n;
}

// Arguments: classes in use; 1 when a defragmentation ended since the
// last publication (the 32 reports are sent), 0 in the steady state.
void BM_Publish(benchmark::State& state) {
  StatsSnapshot snapshot =
      SnapshotWithClasses(static_cast<int>(state.range(0)));
  StatsBoard board;
  board.Publish(snapshot);
  if (state.range(1) == 0) {
    snapshot.recent_defragmentations.clear();
    snapshot.history_unchanged = true;
  }
  for (auto _ : state) {
    board.Publish(snapshot);  // a copy, as the worker hands over its own
  }
  state.counters["classes"] = static_cast<double>(ClassesInUse(snapshot));
  state.counters["bytes"] = static_cast<double>(
      board.Latest().with_classes.size() + board.Latest().history.size());
}
BENCHMARK(BM_Publish)
    ->ArgsProduct({{0, 50, 200, 1000}, {0, 1}})
    ->Unit(benchmark::kMicrosecond);

void BM_RenderMetrics(benchmark::State& state) {
  const StatsSnapshot snapshot =
      SnapshotWithClasses(static_cast<int>(state.range(0)));
  StatsBoard board;
  board.Publish(snapshot);
  size_t body = 0;
  for (auto _ : state) {
    // What PooldServer::RenderMetrics does with the published bytes.
    const StatsBoard::Published latest = board.Latest();
    v1::GetStatsResponse stats;
    const std::string bytes(latest.with_classes.begin(),
                            latest.with_classes.end());
    CHECK(stats.ParseFromString(bytes));
    const std::string text = RenderMetrics(
        {.stats = &stats, .queue_depth = 0, .process = std::nullopt});
    body = text.size();
  }
  state.counters["classes"] = static_cast<double>(ClassesInUse(snapshot));
  state.counters["body_bytes"] = static_cast<double>(body);
}
BENCHMARK(BM_RenderMetrics)
    ->Arg(0)
    ->Arg(50)
    ->Arg(200)
    ->Arg(1000)
    ->Unit(benchmark::kMicrosecond);

// What the worker adds to each publication: the process's memory
// (/proc/self/status and mallinfo2(), which walks malloc's arenas).
void BM_ProcessMemoryRead(benchmark::State& state) {
  for (auto _ : state) {
    benchmark::DoNotOptimize(ProcessMemory::Read());
  }
}
BENCHMARK(BM_ProcessMemoryRead)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace poold

BENCHMARK_MAIN();
