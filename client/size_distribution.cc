// SizeDistribution: parsing and sampling.
#include "client/size_distribution.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/poolctl_args.h"

namespace poold::client {

absl::StatusOr<SizeDistribution> SizeDistribution::Parse(
    absl::string_view text) {
  std::vector<Range> ranges;
  for (absl::string_view part :
       absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    std::vector<absl::string_view> ends = absl::StrSplit(part, ':');
    if (ends.size() > 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad size range \"", part, "\": expected SIZE or MIN:MAX"));
    }
    absl::StatusOr<uint64_t> min = ParseByteSize(ends.front());
    if (!min.ok()) return min.status();
    absl::StatusOr<uint64_t> max = ParseByteSize(ends.back());
    if (!max.ok()) return max.status();
    if (*min == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad size range \"", part, "\": blocks have at least 1 byte"));
    }
    if (*min > *max) {
      return absl::InvalidArgumentError(absl::StrCat(
          "bad size range \"", part, "\": the minimum exceeds the maximum"));
    }
    ranges.push_back({*min, *max});
  }
  if (ranges.empty()) {
    return absl::InvalidArgumentError(
        "no sizes given: expected SIZE or MIN:MAX, comma-separated");
  }
  return SizeDistribution(std::move(ranges));
}

uint64_t SizeDistribution::Sample(std::mt19937_64& random) const {
  const Range& range = ranges_.size() == 1
                           ? ranges_.front()
                           : ranges_[std::uniform_int_distribution<size_t>(
                                 0, ranges_.size() - 1)(random)];
  if (range.min == range.max) return range.min;
  return std::uniform_int_distribution<uint64_t>(range.min, range.max)(random);
}

double SizeDistribution::mean_size() const {
  double mean = 0;
  for (const Range& range : ranges_) {
    mean += (static_cast<double>(range.min) + static_cast<double>(range.max)) /
            2.0 / static_cast<double>(ranges_.size());
  }
  return mean;
}

uint64_t SizeDistribution::max_size() const {
  uint64_t max = 0;
  for (const Range& range : ranges_) max = std::max(max, range.max);
  return max;
}

}  // namespace poold::client
