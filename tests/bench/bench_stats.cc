// Latency percentiles, formatting and machine facts for the benchmarks.
#include "tests/bench/bench_stats.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
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

int64_t ProcessCpuNanos(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text;
  if (!std::getline(in, text)) return -1;
  // Fields after the command name, which is in parentheses and may hold
  // spaces: state is field 3, utime 14, stime 15.
  const size_t paren = text.rfind(')');
  if (paren == std::string::npos) return -1;
  std::istringstream fields(text.substr(paren + 1));
  std::string field;
  int64_t utime = -1, stime = -1;
  for (int i = 3; i <= 15 && (fields >> field); ++i) {
    if (i == 14 && !absl::SimpleAtoi(field, &utime)) return -1;
    if (i == 15 && !absl::SimpleAtoi(field, &stime)) return -1;
  }
  if (utime < 0 || stime < 0) return -1;
  return (utime + stime) * (int64_t{1000000000} / sysconf(_SC_CLK_TCK));
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
