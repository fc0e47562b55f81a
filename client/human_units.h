// Numbers for people: byte counts in binary units, ratios in percent,
// durations in the unit that suits them. Used by poolctl's tables.
#ifndef POOLD_CLIENT_HUMAN_UNITS_H_
#define POOLD_CLIENT_HUMAN_UNITS_H_

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace poold::client {

// "0 B", "1023 B", "1.0 KiB", "12.3 MiB", "2.0 GiB", up to EiB. One decimal
// from KiB on; the unit is chosen so the number stays below 1024.0.
std::string HumanBytes(uint64_t bytes);

// `ratio` (0.25) as a percentage with one decimal ("25.0%"). "-" when
// `ratio` is not a finite number.
std::string Percent(double ratio);

// "0 s", "850 us", "12.3 ms", "4.56 s", "125.0 s". Negative durations get a
// leading "-"; an infinite one is "inf".
std::string HumanDuration(absl::Duration duration);

// Events per second over `duration`, rounded ("45210/s"); "-" when the
// duration is zero.
std::string HumanRate(uint64_t events, absl::Duration duration);

// A google.protobuf.Timestamp in UTC to the millisecond:
// "2026-12-05 07:59:01.123 UTC"; "-" when it is unset (zero).
std::string HumanTime(const google::protobuf::Timestamp& time);

// The absl::Duration of a google.protobuf.Duration.
absl::Duration FromProtoDuration(const google::protobuf::Duration& duration);

}  // namespace poold::client

#endif  // POOLD_CLIENT_HUMAN_UNITS_H_
