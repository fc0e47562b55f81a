// PrometheusText: a writer of the Prometheus text exposition format (version
// 0.0.4): families with their HELP and TYPE lines, samples with labels,
// histograms as cumulative buckets.
#ifndef POOLD_SERVER_PROMETHEUS_TEXT_H_
#define POOLD_SERVER_PROMETHEUS_TEXT_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace poold {

class PrometheusText {
 public:
  // Label names and values, in the order they are written. Values are
  // escaped here.
  using Labels = std::vector<std::pair<absl::string_view, std::string>>;

  // The content type of the body.
  static constexpr absl::string_view kContentType =
      "text/plain; version=0.0.4; charset=utf-8";

  // Starts the family `name` of `type` ("gauge", "counter", "histogram"):
  // its samples follow. Call once per family.
  void Family(absl::string_view name, absl::string_view type,
              absl::string_view help);

  // A family of one sample without labels (a counter's name ends _total).
  template <typename Value>
  void Single(absl::string_view name, absl::string_view type,
              absl::string_view help, Value value) {
    Family(name, type, help);
    Sample(name, {}, value);
  }

  // One sample of the current family: `name` is the family's name (with
  // _total for a counter).
  void Sample(absl::string_view name, const Labels& labels, double value);
  void Sample(absl::string_view name, const Labels& labels, uint64_t value);

  // The samples of one histogram of the current family: `counts` per bucket
  // (not cumulative), one more than `bounds` (upper bounds in seconds,
  // ascending); written as cumulative _bucket lines with le, then _sum and
  // _count. REQUIRES: counts.size() == bounds.size() + 1.
  void Histogram(absl::string_view name, const Labels& labels,
                 absl::Span<const double> bounds,
                 absl::Span<const uint64_t> counts, double sum, uint64_t count);

  // The body written so far; the writer is empty afterwards.
  std::string Release() { return std::move(out_); }

  // `value` as the format writes numbers: whole numbers below 2^53 as
  // integers, others as the shortest decimal that reads back as the same
  // double (fixed notation from 1e-4 to 1e21, like Go's clients), "+Inf",
  // "-Inf" or "NaN".
  static std::string FormatValue(double value);

 private:
  void WriteLabels(const Labels& labels);

  std::string out_;
};

}  // namespace poold

#endif  // POOLD_SERVER_PROMETHEUS_TEXT_H_
