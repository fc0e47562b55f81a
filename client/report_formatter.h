// ReportFormatter: the one place that turns poold's responses (and the
// summary of `poolctl load`) into what poolctl prints: readable tables, or
// the protobuf JSON mapping for scripts.
#ifndef POOLD_CLIENT_REPORT_FORMATTER_H_
#define POOLD_CLIENT_REPORT_FORMATTER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/load_summary.h"
#include "google/protobuf/message.h"
#include "grpc/health/v1/health.pb.h"
#include "poold/v1/pool_service.pb.h"

namespace poold::client {

enum class OutputFormat { kTable, kJson };

// "table" or "json". INVALID_ARGUMENT otherwise.
absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view text);

// Every method returns the complete text to print, ending in a newline
// (except Read's raw bytes). In JSON mode that is the message's protobuf
// JSON mapping (lowerCamelCase names, every field even when zero, 64-bit
// integers as strings, durations as "1.5s", enums by name); for `load`, an
// object of the LoadSummary fields. INTERNAL only if protobuf cannot print
// the message as JSON.
// For poolctl watch: "rates over 1.0 s: Read 1520/s, Allocate 310/s;
// reclaimed 2.0 MiB/s" between two snapshots (requests completed per second
// by RPC, most first; bytes reclaimed per second), or "" when `after` was
// not taken after `before`.
std::string WatchRateLine(const v1::GetStatsResponse& before,
                          const v1::GetStatsResponse& after);

class ReportFormatter {
 public:
  explicit ReportFormatter(OutputFormat format) : format_(format) {}

  OutputFormat format() const { return format_; }

  // Per pool: blocks, live/allocated/resident/metadata/free bytes, spans,
  // fragmentation and reclaimable bytes, a total row, the large pool's
  // free extents, the worker's activity, and the per-class tables when the
  // response has them.
  absl::StatusOr<std::string> Stats(const v1::GetStatsResponse& stats) const;

  // Per pool and in total: the state now and what a defragmentation would
  // move, release and reclaim, and the fragmentation it would leave.
  absl::StatusOr<std::string> Analysis(
      const v1::FragmentationReport& report) const;

  // Per pool: outcome, fragmentation before -> after, blocks and bytes
  // moved, spans released, bytes reclaimed, time and reason; then totals,
  // RSS before -> after, slices and the longest one.
  absl::StatusOr<std::string> Defrag(const v1::DefragReport& report) const;

  // The new block's handle (decimal), pool, size and slot size.
  absl::StatusOr<std::string> Allocation(
      const v1::AllocateResponse& block) const;

  // Table mode: `data` itself, raw. JSON: a ReadResponse.
  absl::StatusOr<std::string> Read(const std::string& data) const;

  // Confirmations of Write and Free (JSON: the empty response).
  absl::StatusOr<std::string> Write(uint64_t handle, uint64_t offset,
                                    uint64_t bytes) const;
  absl::StatusOr<std::string> Free(uint64_t handle) const;

  // The serving status by name ("SERVING").
  absl::StatusOr<std::string> Health(
      grpc::health::v1::HealthCheckResponse::ServingStatus status) const;

  // Blocks and bytes allocated, freed and kept, times and rates, blocks
  // per pool.
  absl::StatusOr<std::string> Load(const LoadSummary& summary) const;

  // The protobuf JSON mapping of `message`, as described above.
  static absl::StatusOr<std::string> Json(
      const google::protobuf::Message& message);

 private:
  OutputFormat format_;
};

}  // namespace poold::client

#endif  // POOLD_CLIENT_REPORT_FORMATTER_H_
