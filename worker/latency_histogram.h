// LatencyHistogram: durations counted in fixed buckets from 1 us to 10 s, the
// shape in which Prometheus histograms expose them.
#ifndef POOLD_WORKER_LATENCY_HISTOGRAM_H_
#define POOLD_WORKER_LATENCY_HISTOGRAM_H_

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/time/time.h"

namespace poold {

// Counts durations by bucket, with their sum. Not thread-safe: one owner
// (the worker thread) records; readers get copies in snapshots.
class LatencyHistogram {
 public:
  // Upper bounds of the buckets in nanoseconds, ascending (1, 2.5, 5 per
  // decade). A duration d falls in the first bucket whose bound is >= d;
  // one more bucket, without a bound (+Inf), takes what is longer.
  static constexpr std::array<int64_t, 22> kBoundsNanos = {
      1'000,         2'500,         5'000,       10'000,        25'000,
      50'000,        100'000,       250'000,     500'000,       1'000'000,
      2'500'000,     5'000'000,     10'000'000,  25'000'000,    50'000'000,
      100'000'000,   250'000'000,   500'000'000, 1'000'000'000, 2'500'000'000,
      5'000'000'000, 10'000'000'000};
  static constexpr size_t kBuckets = kBoundsNanos.size() + 1;

  // Counts one duration (a negative one counts as zero).
  void Record(absl::Duration duration) {
    const int64_t nanos =
        std::max<int64_t>(0, absl::ToInt64Nanoseconds(duration));
    const size_t bucket = static_cast<size_t>(
        std::lower_bound(kBoundsNanos.begin(), kBoundsNanos.end(), nanos) -
        kBoundsNanos.begin());
    ++counts_[bucket];
    sum_nanos_ += nanos;
    ++count_;
  }

  // Per bucket, not cumulative; the last is the +Inf bucket.
  const std::array<uint64_t, kBuckets>& counts() const { return counts_; }
  absl::Duration sum() const { return absl::Nanoseconds(sum_nanos_); }
  uint64_t count() const { return count_; }

 private:
  std::array<uint64_t, kBuckets> counts_ = {};
  int64_t sum_nanos_ = 0;
  uint64_t count_ = 0;
};

}  // namespace poold

#endif  // POOLD_WORKER_LATENCY_HISTOGRAM_H_
