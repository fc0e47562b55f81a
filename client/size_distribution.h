// SizeDistribution: the block sizes `poolctl load` draws from, parsed from
// --sizes ("128", "100:150", "100:150,4KiB:8KiB").
#ifndef POOLD_CLIENT_SIZE_DISTRIBUTION_H_
#define POOLD_CLIENT_SIZE_DISTRIBUTION_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace poold::client {

// A mix of size ranges: Sample() picks one range with equal probability,
// then a size uniformly within it (both ends included). Name a range twice
// to make it twice as likely.
class SizeDistribution {
 public:
  struct Range {
    uint64_t min = 0;
    uint64_t max = 0;
  };

  // Parses a comma-separated list of ranges; a range is "SIZE" or
  // "MIN:MAX", each a byte size as ParseByteSize takes ("64KiB:1MiB").
  // INVALID_ARGUMENT for an empty list, a bad size, a size of 0 or
  // MIN > MAX.
  static absl::StatusOr<SizeDistribution> Parse(absl::string_view text);

  // Always `size`. REQUIRES: size > 0.
  static SizeDistribution Fixed(uint64_t size) {
    return SizeDistribution({{size, size}});
  }

  // A size drawn from the distribution.
  uint64_t Sample(std::mt19937_64& random) const;

  const std::vector<Range>& ranges() const { return ranges_; }
  // The largest size Sample() can return.
  uint64_t max_size() const;
  // The mean of Sample(): a range is drawn uniformly, then a size in it.
  double mean_size() const;

 private:
  explicit SizeDistribution(std::vector<Range> ranges)
      : ranges_(std::move(ranges)) {}

  std::vector<Range> ranges_;
};

}  // namespace poold::client

#endif  // POOLD_CLIENT_SIZE_DISTRIBUTION_H_
