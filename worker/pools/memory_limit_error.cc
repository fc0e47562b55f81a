// MemoryLimitError: the growth travels as an absl::Status payload.
#include "worker/pools/memory_limit_error.h"

#include <string>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/types/optional.h"

namespace poold::pools {
namespace {

constexpr absl::string_view kGrowthUrl = "type.poold.dev/memory-limit-growth";

}  // namespace

absl::Status MemoryLimitError(absl::string_view message, uint64_t growth) {
  absl::Status status = absl::ResourceExhaustedError(message);
  status.SetPayload(kGrowthUrl, absl::Cord(std::to_string(growth)));
  return status;
}

std::optional<uint64_t> MemoryLimitGrowth(const absl::Status& status) {
  if (!absl::IsResourceExhausted(status)) return std::nullopt;
  const absl::optional<absl::Cord> payload = status.GetPayload(kGrowthUrl);
  uint64_t growth = 0;
  if (!payload.has_value() ||
      !absl::SimpleAtoi(std::string(*payload), &growth)) {
    return std::nullopt;
  }
  return growth;
}

}  // namespace poold::pools
