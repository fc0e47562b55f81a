// Human-readable bytes, percentages, durations and rates.
#include "client/human_units.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace poold::client {

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB",
                                           "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes) / 1024.0;
  size_t unit = 0;
  // Compare with what "%.1f" would print, so 1048575 B is "1.0 MiB", not
  // "1024.0 KiB".
  while (value >= 1023.95 && unit + 1 < std::size(kUnits)) {
    value /= 1024.0;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string Percent(double ratio) {
  if (!std::isfinite(ratio)) return "-";
  return absl::StrFormat("%.1f%%", ratio * 100.0);
}

std::string HumanDuration(absl::Duration duration) {
  if (duration == absl::InfiniteDuration()) return "inf";
  if (duration == -absl::InfiniteDuration()) return "-inf";
  if (duration < absl::ZeroDuration()) {
    return absl::StrCat("-", HumanDuration(-duration));
  }
  if (duration == absl::ZeroDuration()) return "0 s";
  if (duration < absl::Milliseconds(1)) {
    return absl::StrFormat("%.0f us", absl::ToDoubleMicroseconds(duration));
  }
  if (duration < absl::Seconds(1)) {
    return absl::StrFormat("%.1f ms", absl::ToDoubleMilliseconds(duration));
  }
  if (duration < absl::Seconds(100)) {
    return absl::StrFormat("%.2f s", absl::ToDoubleSeconds(duration));
  }
  return absl::StrFormat("%.1f s", absl::ToDoubleSeconds(duration));
}

std::string HumanRate(uint64_t events, absl::Duration duration) {
  if (duration <= absl::ZeroDuration()) return "-";
  return absl::StrFormat(
      "%.0f/s", static_cast<double>(events) / absl::ToDoubleSeconds(duration));
}

std::string HumanTime(const google::protobuf::Timestamp& time) {
  if (time.seconds() == 0 && time.nanos() == 0) return "-";
  const absl::Time t =
      absl::FromUnixSeconds(time.seconds()) + absl::Nanoseconds(time.nanos());
  return absl::FormatTime("%Y-%m-%d %H:%M:%E3S UTC", t, absl::UTCTimeZone());
}

absl::Duration FromProtoDuration(const google::protobuf::Duration& duration) {
  return absl::Seconds(duration.seconds()) +
         absl::Nanoseconds(duration.nanos());
}

}  // namespace poold::client
