// Latency percentiles, formatting and machine facts for the benchmarks.
#include "tests/bench/bench_stats.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace poold::bench {

int64_t Quantile(const std::vector<int64_t>& sorted_ns, double q) {
  const size_t n = sorted_ns.size();
  size_t rank = static_cast<size_t>(std::ceil(q * static_cast<double>(n)));
  rank = std::clamp<size_t>(rank, 1, n);
  return sorted_ns[rank - 1];
}

LatencySummary Summarize(std::vector<int64_t>& samples_ns) {
  LatencySummary s;
  if (samples_ns.empty()) return s;
  std::sort(samples_ns.begin(), samples_ns.end());
  s.count = samples_ns.size();
  s.p50_ns = Quantile(samples_ns, 0.50);
  s.p90_ns = Quantile(samples_ns, 0.90);
  s.p99_ns = Quantile(samples_ns, 0.99);
  s.p999_ns = Quantile(samples_ns, 0.999);
  s.max_ns = samples_ns.back();
  s.mean_ns = std::accumulate(samples_ns.begin(), samples_ns.end(), 0.0) /
              static_cast<double>(s.count);
  return s;
}

std::string FormatLatency(int64_t ns) {
  const double d = static_cast<double>(ns);
  if (ns < 1000) return absl::StrFormat("%d ns", ns);
  if (ns < 1000000) return absl::StrFormat("%.3g us", d / 1e3);
  if (ns < 1000000000) return absl::StrFormat("%.3g ms", d / 1e6);
  return absl::StrFormat("%.3g s", d / 1e9);
}

std::string FormatRate(double per_second) {
  if (per_second >= 1e6) return absl::StrFormat("%.2f M", per_second / 1e6);
  return absl::StrFormat("%.0f", per_second);
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  if (!(in >> one >> five >> fifteen)) return "?";
  return absl::StrCat(one, " ", five, " ", fifteen);
}

std::string MachineDescription() {
  std::string model = "unknown CPU";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (absl::StartsWith(line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) {
        model = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      }
      break;
    }
  }
  utsname name;
  const std::string kernel =
      uname(&name) == 0 ? absl::StrCat(name.sysname, " ", name.release) : "?";
  return absl::StrCat(sysconf(_SC_NPROCESSORS_ONLN), " CPUs (", model, "), ",
                      kernel);
}

}  // namespace poold::bench
