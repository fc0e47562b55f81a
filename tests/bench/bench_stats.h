// Helpers shared by the service and pause benchmarks: latency percentiles,
// human-readable durations, and the machine's load as the OS reports it.
#ifndef POOLD_TESTS_BENCH_BENCH_STATS_H_
#define POOLD_TESTS_BENCH_BENCH_STATS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace poold::bench {

// Percentiles of a set of latencies, nearest-rank: p50 is the smallest
// sample with at least half of the samples at or below it.
struct LatencySummary {
  uint64_t count = 0;
  int64_t p50_ns = 0;
  int64_t p90_ns = 0;
  int64_t p99_ns = 0;
  int64_t p999_ns = 0;
  int64_t max_ns = 0;
  double mean_ns = 0;
};

// Sorts `samples_ns` in place and summarizes them; all zero when empty.
LatencySummary Summarize(std::vector<int64_t>& samples_ns);

// The sample at quantile `q` in [0, 1] (nearest rank).
// REQUIRES: `sorted_ns` is sorted and not empty.
int64_t Quantile(const std::vector<int64_t>& sorted_ns, double q);

// "85 us", "1.24 ms", "2.31 s": three significant digits at most.
std::string FormatLatency(int64_t ns);

// "12345", "1.23 M": a rate in calls per second.
std::string FormatRate(double per_second);

// CPU time (user + system) that process `pid` used so far, threads that
// exited included, from /proc/<pid>/stat (clock-tick resolution, usually
// 10 ms); -1 when unreadable.
int64_t ProcessCpuNanos(int pid);

// The load averages of /proc/loadavg ("5.69 8.02 8.22"), "?" if unreadable.
std::string LoadAverage();

// Machine description for a results header: "2 CPUs (model), Linux
// <release>".
std::string MachineDescription();

}  // namespace poold::bench

#endif  // POOLD_TESTS_BENCH_BENCH_STATS_H_
