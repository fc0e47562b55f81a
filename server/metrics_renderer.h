// RenderMetrics: poold's statistics as a Prometheus /metrics body. Every
// metric it writes is listed, with its meaning, in README.md ("Metrics").
#ifndef POOLD_SERVER_METRICS_RENDERER_H_
#define POOLD_SERVER_METRICS_RENDERER_H_

#include <cstdint>
#include <optional>
#include <string>

#include "poold/v1/pool_service.pb.h"
#include "server/process_metrics.h"

namespace poold {

// What one scrape shows.
struct MetricsInput {
  // The worker's latest snapshot with size classes, and the process and
  // transport fields read at the scrape (as a GetStats answer has them).
  const v1::GetStatsResponse* stats = nullptr;
  // Commands waiting in the channel at the scrape.
  uint64_t queue_depth = 0;
  // The process_* metrics; absent when /proc could not be read.
  std::optional<ProcessMetrics> process;
};

// The body, in the text exposition format (PrometheusText::kContentType),
// following Prometheus's naming conventions: base units (bytes, seconds),
// _total on counters, labels for pool, size class, RPC method, and
// defragmentation origin and outcome. REQUIRES: input.stats != nullptr.
std::string RenderMetrics(const MetricsInput& input);

}  // namespace poold

#endif  // POOLD_SERVER_METRICS_RENDERER_H_
