// ReadProcessMetrics: parsing /proc for the process_* metrics.
#include "server/process_metrics.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"

namespace poold {
namespace {

absl::StatusOr<std::string> ReadFile(const char* path) {
  std::ifstream in(path);
  if (!in) return absl::InternalError(absl::StrCat("cannot read ", path));
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// Seconds since the epoch at which the system booted (/proc/stat btime).
absl::StatusOr<uint64_t> BootTimeSeconds() {
  absl::StatusOr<std::string> stat = ReadFile("/proc/stat");
  if (!stat.ok()) return stat.status();
  for (absl::string_view line : absl::StrSplit(*stat, '\n')) {
    uint64_t seconds = 0;
    if (absl::ConsumePrefix(&line, "btime ") &&
        absl::SimpleAtoi(line, &seconds)) {
      return seconds;
    }
  }
  return absl::InternalError("no btime line in /proc/stat");
}

}  // namespace

absl::StatusOr<ProcessMetrics> ReadProcessMetrics() {
  absl::StatusOr<std::string> stat = ReadFile("/proc/self/stat");
  if (!stat.ok()) return stat.status();
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses, so
  // the fields are counted from the last ')'. After it, field 3 (state) is
  // at index 0.
  const size_t comm_end = stat->rfind(')');
  if (comm_end == std::string::npos) {
    return absl::InternalError("cannot parse /proc/self/stat");
  }
  const std::vector<absl::string_view> fields = absl::StrSplit(
      absl::string_view(*stat).substr(comm_end + 1), ' ', absl::SkipEmpty());
  // Field numbers as proc(5) gives them: utime 14, stime 15, starttime 22,
  // vsize 23, rss 24.
  auto field = [&fields](size_t number, uint64_t* value) {
    return number >= 3 && number - 3 < fields.size() &&
           absl::SimpleAtoi(fields[number - 3], value);
  };
  uint64_t utime = 0, stime = 0, start_ticks = 0, vsize = 0, rss_pages = 0;
  if (!field(14, &utime) || !field(15, &stime) || !field(22, &start_ticks) ||
      !field(23, &vsize) || !field(24, &rss_pages)) {
    return absl::InternalError("cannot parse /proc/self/stat");
  }
  absl::StatusOr<uint64_t> boot = BootTimeSeconds();
  if (!boot.ok()) return boot.status();
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));

  ProcessMetrics metrics;
  metrics.cpu_seconds = static_cast<double>(utime + stime) / ticks;
  metrics.start_time_seconds =
      static_cast<double>(*boot) + static_cast<double>(start_ticks) / ticks;
  metrics.virtual_memory_bytes = vsize;
  metrics.resident_memory_bytes =
      rss_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));

  DIR* fds = opendir("/proc/self/fd");
  if (fds == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot read /proc/self/fd: ", std::strerror(errno)));
  }
  uint64_t open = 0;
  while (const dirent* entry = readdir(fds)) {
    if (entry->d_name[0] != '.') ++open;
  }
  closedir(fds);
  metrics.open_fds = open > 0 ? open - 1 : 0;  // less the one reading it

  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0) {
    metrics.max_fds = limit.rlim_cur;
  }
  return metrics;
}

}  // namespace poold
