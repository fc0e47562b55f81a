// PrometheusText: escaping and number formatting of the exposition format.
#include "server/prometheus_text.h"

#include <charconv>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace poold {
namespace {

// Escapes `\`, `"` (label values only) and newlines, as the format asks.
std::string Escape(absl::string_view text, bool quotes) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace

std::string PrometheusText::FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Whole numbers as integers (a timestamp reads 1700000000, not 1.7e+09).
  if (std::abs(value) < 9007199254740992.0 && value == std::trunc(value)) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  // As Prometheus's Go clients write floats (strconv 'g', shortest): fixed
  // notation for decimal exponents from -4 to 20, scientific otherwise, so
  // that le labels read "0.0001" and "1e-06" like other exporters'.
  const double magnitude = std::abs(value);
  const bool fixed = magnitude >= 1e-4 && magnitude < 1e21;
  char buffer[128];
  const std::to_chars_result result = std::to_chars(
      buffer, buffer + sizeof(buffer), value,
      fixed ? std::chars_format::fixed : std::chars_format::scientific);
  return std::string(buffer, result.ptr);
}

void PrometheusText::Family(absl::string_view name, absl::string_view type,
                            absl::string_view help) {
  absl::StrAppend(&out_, "# HELP ", name, " ", Escape(help, false), "\n",
                  "# TYPE ", name, " ", type, "\n");
}

void PrometheusText::WriteLabels(const Labels& labels) {
  if (labels.empty()) return;
  out_ += '{';
  bool first = true;
  for (const auto& [label, value] : labels) {
    if (!first) out_ += ',';
    first = false;
    absl::StrAppend(&out_, label, "=\"", Escape(value, true), "\"");
  }
  out_ += '}';
}

void PrometheusText::Sample(absl::string_view name, const Labels& labels,
                            double value) {
  out_.append(name.data(), name.size());
  WriteLabels(labels);
  absl::StrAppend(&out_, " ", FormatValue(value), "\n");
}

void PrometheusText::Sample(absl::string_view name, const Labels& labels,
                            uint64_t value) {
  out_.append(name.data(), name.size());
  WriteLabels(labels);
  absl::StrAppend(&out_, " ", value, "\n");
}

void PrometheusText::Histogram(absl::string_view name, const Labels& labels,
                               absl::Span<const double> bounds,
                               absl::Span<const uint64_t> counts, double sum,
                               uint64_t count) {
  CHECK_EQ(counts.size(), bounds.size() + 1);
  const std::string bucket = absl::StrCat(name, "_bucket");
  Labels with_le = labels;
  with_le.emplace_back("le", "");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    cumulative += counts[i];
    with_le.back().second = i < bounds.size() ? FormatValue(bounds[i]) : "+Inf";
    Sample(bucket, with_le, cumulative);
  }
  Sample(absl::StrCat(name, "_sum"), labels, sum);
  Sample(absl::StrCat(name, "_count"), labels, count);
}

}  // namespace poold
