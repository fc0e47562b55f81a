// churn_bench: what automatic defragmentation (--auto_defrag) buys and costs
// under a workload that never stops changing. It starts the real poold once
// with --auto_defrag=false and once with it on (--modes, in that order, one
// after the other on the same machine), and against each runs:
//
//   fill     --writers threads allocate blocks of the first size mix until
//            the client holds --live_mib of them;
//   churn    for --seconds: the writers keep allocating at
//            --allocs_per_second in all, freeing random blocks first
//            whenever the next one would take the live data past
//            --live_mib. The size mix shifts every --phase_seconds over
//            three mixes across all three pools (small-heavy, medium-heavy,
//            large-heavy, with different size ranges), so the classes and
//            chunks that were full a phase ago go sparse;
//            --readers threads read --read_bytes of random live blocks
//            (closed loop, exponential think time, every read checked);
//            every --sample_ms the bench records the server's RSS
//            (/proc/<pid>/statm), the live bytes the client holds, and
//            GetStats (pools' resident bytes, the automatic policy's state,
//            CPU time and reports).
//
// It prints a Markdown table, both modes side by side: RSS / live and
// (RSS - idle RSS) / live at the worst and the mean sample of the churn,
// read latency percentiles (and p99 on / off), allocations done, the
// automatic runs, the worker CPU they used as a share of their own wall time
// (the budget is a share of one core while running) and of the whole churn,
// and the server's CPU; then, from poold's own histograms, p99 of the time
// reads waited in the worker's channel and took on the worker, and p99 of
// the automatic slices, which tell the worker's share of a read's latency
// from the rest. --json writes the same plus the samples, for
// plot_churn.py.
//
//   churn_bench [--poold=PATH] [--modes=off,on] [--live_mib=256]
//               [--seconds=150] [--phase_seconds=20]
//               [--allocs_per_second=2000] [--writers=4] [--readers=2]
//               [--think_us=2000] [--read_bytes=64] [--sample_ms=250]
//               [--poold_flags=...] [--json=FILE]
//
// Exits 1 on a failed RPC or a read that returned wrong bytes.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/bench/bench_stats.h"
#include "tests/bench/server_process.h"

ABSL_FLAG(std::string, poold, POOLD_BINARY_PATH, "Path of the poold binary.");
ABSL_FLAG(std::vector<std::string>, modes,
          std::vector<std::string>({"off", "on"}),
          "Runs, in order: off (--auto_defrag=false) and/or on "
          "(--auto_defrag=true with poold's default thresholds and budget).");
ABSL_FLAG(std::vector<std::string>, poold_flags, {},
          "More flags for poold in every mode, comma-separated (e.g. "
          "--auto_defrag_max_cpu=0.1).");
ABSL_FLAG(int64_t, live_mib, 256, "Live data the client keeps, in MiB.");
ABSL_FLAG(double, seconds, 150, "Length of the churn, per mode.");
ABSL_FLAG(double, phase_seconds, 20, "The size mix shifts this often.");
ABSL_FLAG(double, allocs_per_second, 2000,
          "Allocations per second during the churn, all writers together "
          "(each preceded by the frees that make room).");
ABSL_FLAG(int, writers, 4, "Writer threads.");
ABSL_FLAG(int, readers, 2, "Reader threads.");
ABSL_FLAG(double, think_us, 2000,
          "Mean think time of a reader between an answer and its next read, "
          "in microseconds (exponentially distributed).");
ABSL_FLAG(uint64_t, read_bytes, 64, "Bytes each read asks for, from 0.");
ABSL_FLAG(int, sample_ms, 250, "Sampling period of RSS, live and GetStats.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of sizes and choices.");
ABSL_FLAG(std::string, json, "", "Also write the results to this file.");

namespace poold::bench {
namespace {

constexpr uint64_t kMiB = 1 << 20;
// Every block starts with its 8-byte tag; reads check it.
constexpr uint64_t kTagBytes = 8;

// One size range of a mix, chosen with probability `weight` (by count).
struct SizeRange {
  double weight;
  uint64_t min;
  uint64_t max;
};

// The three mixes the churn shifts between. Each favours another pool and
// other size classes, so what one phase filled, the next leaves sparse.
const std::vector<std::vector<SizeRange>>& Mixes() {
  static const auto* const kMixes = new std::vector<std::vector<SizeRange>>{
      // small-heavy: small blocks of the lower classes
      {{0.90, 16, 300}, {0.09, 1024, 8191}, {0.01, 65536, 131071}},
      // medium-heavy: upper small classes, upper medium ones
      {{0.40, 301, 1023}, {0.55, 8192, 61439}, {0.05, 131072, 524287}},
      // large-heavy: everything, with large blocks up to 1 MiB
      {{0.60, 16, 1023}, {0.30, 1024, 61439}, {0.10, 65536, 1048575}},
  };
  return *kMixes;
}

const char* const kMixNames[] = {"small-heavy", "medium-heavy", "large-heavy"};

uint64_t PickSize(const std::vector<SizeRange>& mix, std::mt19937_64& rng) {
  double r = std::uniform_real_distribution<double>(0, 1)(rng);
  for (const SizeRange& range : mix) {
    if (r < range.weight) {
      return std::uniform_int_distribution<uint64_t>(range.min, range.max)(rng);
    }
    r -= range.weight;
  }
  return mix.back().min;
}

struct Block {
  uint64_t handle = 0;
  uint64_t size = 0;
  uint64_t tag = 0;
};

std::string TagBytes(uint64_t tag) {
  std::string bytes(kTagBytes, '\0');
  std::memcpy(bytes.data(), &tag, kTagBytes);
  return bytes;
}

// The blocks the client holds, shared by writers and readers.
class LiveSet {
 public:
  void Add(const Block& block) {
    absl::MutexLock lock(&mu_);
    blocks_.push_back(block);
    bytes_ += block.size;
  }
  // Removes a random block (to be freed); nullopt when empty.
  std::optional<Block> TakeRandom(std::mt19937_64& rng) {
    absl::MutexLock lock(&mu_);
    if (blocks_.empty()) return std::nullopt;
    const size_t i =
        std::uniform_int_distribution<size_t>(0, blocks_.size() - 1)(rng);
    const Block block = blocks_[i];
    blocks_[i] = blocks_.back();
    blocks_.pop_back();
    bytes_ -= block.size;
    return block;
  }
  // A copy of a random block (to be read); nullopt when empty.
  std::optional<Block> PeekRandom(std::mt19937_64& rng) {
    absl::MutexLock lock(&mu_);
    if (blocks_.empty()) return std::nullopt;
    return blocks_[std::uniform_int_distribution<size_t>(
        0, blocks_.size() - 1)(rng)];
  }
  uint64_t bytes() {
    absl::MutexLock lock(&mu_);
    return bytes_;
  }
  // Reserves room for `size` more bytes: returns true when they fit under
  // `limit` now (and counts them), false when a block must be freed first.
  bool Reserve(uint64_t size, uint64_t limit) {
    absl::MutexLock lock(&mu_);
    if (bytes_ + reserved_ + size > limit) return false;
    reserved_ += size;
    return true;
  }
  void Unreserve(uint64_t size) {
    absl::MutexLock lock(&mu_);
    reserved_ -= size;
  }
  std::vector<Block> TakeAll() {
    absl::MutexLock lock(&mu_);
    bytes_ = 0;
    return std::exchange(blocks_, {});
  }

 private:
  absl::Mutex mu_;
  std::vector<Block> blocks_ ABSL_GUARDED_BY(mu_);
  uint64_t bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t reserved_ ABSL_GUARDED_BY(mu_) = 0;
};

uint64_t RssOf(pid_t pid) {
  std::ifstream statm(absl::StrCat("/proc/", pid, "/statm"));
  uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

int64_t Nanos(const google::protobuf::Duration& d) {
  return d.seconds() * 1000000000 + d.nanos();
}

struct Sample {
  double t = 0;  // seconds since the churn began
  uint64_t rss = 0;
  uint64_t live = 0;
  uint64_t pools_resident = 0;
  int state = 0;
  // Where the pools' resident bytes are, per pool (small, medium, large):
  // in live blocks' slots or extents, free inside partly used spans (or
  // chunks), and held empty for reuse (cached spans, unpurged extents).
  uint64_t allocated[3] = {0, 0, 0};
  uint64_t free_inside[3] = {0, 0, 0};
  uint64_t cached[3] = {0, 0, 0};
};

struct ModeResult {
  std::string mode;
  uint64_t idle_rss = 0;
  std::vector<Sample> samples;
  LatencySummary reads;
  uint64_t allocations = 0;
  uint64_t frees = 0;
  uint64_t read_races = 0;  // read a block a writer freed meanwhile
  double seconds = 0;
  int64_t server_cpu_ns = 0;
  uint64_t auto_runs = 0;
  uint64_t auto_bytes_reclaimed = 0;
  int64_t auto_cpu_ns = 0;
  int64_t auto_run_wall_ns = 0;  // sum of the runs' durations
  uint64_t rpc_or_limit_runs = 0;
  // The server's own view of the churn's reads (GetStats' histograms, so
  // bucket bounds: "at most"), to tell the worker's share of a client's
  // latency from the transport's: p99 of the wait in the channel and of the
  // worker's time on them, and p99 of the automatic runs' slices.
  double server_read_wait_p99_s = 0;
  double server_read_service_p99_s = 0;
  double auto_slice_p99_s = 0;
  // Ratios over the churn's samples.
  double rss_ratio_max = 0, rss_ratio_mean = 0;
  double above_idle_ratio_max = 0, above_idle_ratio_mean = 0;
};

std::atomic<bool> failed{false};

void Fail(const std::string& what) {
  if (!failed.exchange(true))
    std::fprintf(stderr, "churn_bench: %s\n", what.c_str());
}

// The upper bound of the bucket that holds quantile `q` of what `last`
// counted since `first` (the same histogram read twice); infinity when it
// is past the last bound, 0 when nothing was counted.
double QuantileBound(const v1::Histogram& first, const v1::Histogram& last,
                     double q) {
  std::vector<uint64_t> counts(last.counts().begin(), last.counts().end());
  for (int i = 0; i < first.counts_size() && i < last.counts_size(); ++i) {
    counts[i] -= std::min(counts[i], first.counts(i));
  }
  uint64_t total = 0;
  for (uint64_t c : counts) total += c;
  if (total == 0) return 0;
  const auto rank = static_cast<uint64_t>(std::ceil(q * total));
  uint64_t seen = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    seen += counts[i];
    if (seen >= rank) {
      return i < static_cast<size_t>(last.bounds_seconds_size())
                 ? last.bounds_seconds(i)
                 : std::numeric_limits<double>::infinity();
    }
  }
  return std::numeric_limits<double>::infinity();
}

// The latency histograms of `method` in `stats`; empty if absent.
v1::CommandLatency LatencyOf(const v1::GetStatsResponse& stats,
                             const std::string& method) {
  for (const v1::CommandLatency& latency : stats.worker().latency()) {
    if (latency.method() == method) return latency;
  }
  return {};
}

v1::Histogram AutoSlices(const v1::GetStatsResponse& stats) {
  for (const v1::DefragOriginStats& origin :
       stats.worker().defrag_by_origin()) {
    if (origin.origin() == v1::DefragReport::ORIGIN_AUTOMATIC) {
      return origin.slice_duration();
    }
  }
  return {};
}

// One mode: start poold, fill, churn, sample; stop poold.
ModeResult RunMode(const std::string& mode) {
  ModeResult result;
  result.mode = mode;
  ServerProcess::Options options;
  options.binary = absl::GetFlag(FLAGS_poold);
  options.extra_flags = {
      absl::StrCat("--auto_defrag=", mode == "on" ? "true" : "false")};
  for (const std::string& flag : absl::GetFlag(FLAGS_poold_flags)) {
    options.extra_flags.push_back(flag);
  }
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(options);
  if (!server.ok()) {
    Fail(server.status().ToString());
    return result;
  }
  const pid_t pid = (*server)->pid();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  auto channel = grpc::CreateCustomChannel(
      (*server)->tcp_target(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::PoolService::NewStub(channel);
  result.idle_rss = RssOf(pid);

  const uint64_t limit =
      static_cast<uint64_t>(absl::GetFlag(FLAGS_live_mib)) * kMiB;
  const int writers = absl::GetFlag(FLAGS_writers);
  const int readers = absl::GetFlag(FLAGS_readers);
  const absl::Duration churn = absl::Seconds(absl::GetFlag(FLAGS_seconds));
  const double phase_seconds = absl::GetFlag(FLAGS_phase_seconds);
  LiveSet live;
  std::atomic<uint64_t> next_tag{1};
  std::atomic<uint64_t> allocations{0}, frees{0}, races{0};

  auto allocate = [&](uint64_t size) -> bool {
    const uint64_t tag = next_tag.fetch_add(1);
    v1::AllocateRequest request;
    request.set_size(size);
    request.set_data(TagBytes(tag));
    v1::AllocateResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    const grpc::Status status = stub->Allocate(&context, request, &response);
    if (!status.ok()) {
      Fail(absl::StrCat("Allocate(", size, "): ", status.error_message()));
      return false;
    }
    live.Add({response.handle(), size, tag});
    allocations.fetch_add(1, std::memory_order_relaxed);
    return true;
  };
  auto free_block = [&](const Block& block) -> bool {
    v1::FreeRequest request;
    request.set_handle(block.handle);
    v1::FreeResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    const grpc::Status status = stub->Free(&context, request, &response);
    if (!status.ok()) {
      Fail(absl::StrCat("Free: ", status.error_message()));
      return false;
    }
    frees.fetch_add(1, std::memory_order_relaxed);
    return true;
  };

  // Fill with the first mix, as fast as the writers go.
  {
    std::vector<std::thread> threads;
    for (int w = 0; w < writers; ++w) {
      threads.emplace_back([&, w] {
        std::mt19937_64 rng(absl::GetFlag(FLAGS_seed) * 1000 + w);
        while (!failed.load()) {
          const uint64_t size = PickSize(Mixes()[0], rng);
          if (!live.Reserve(size, limit)) break;
          const bool ok = allocate(size);
          live.Unreserve(size);
          if (!ok) break;
        }
      });
    }
    for (std::thread& t : threads) t.join();
  }
  allocations = 0;

  // Churn.
  const absl::Time start = absl::Now();
  const absl::Time end = start + churn;
  const int64_t cpu_before = ProcessCpuNanos(pid);
  std::atomic<bool> stop{false};
  absl::Mutex latencies_mu;
  std::vector<int64_t> latencies;
  std::vector<std::thread> threads;
  const absl::Duration alloc_interval =
      absl::Seconds(writers / absl::GetFlag(FLAGS_allocs_per_second));
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      std::mt19937_64 rng(absl::GetFlag(FLAGS_seed) * 2000 + w);
      absl::Time next = start + alloc_interval * w / writers;
      while (!stop.load() && !failed.load()) {
        const absl::Time now = absl::Now();
        if (next > now) absl::SleepFor(next - now);
        // Behind by more than a second (a slow server): do not burst.
        next = std::max(next + alloc_interval, absl::Now() - absl::Seconds(1));
        const int phase = static_cast<int>(
            absl::ToDoubleSeconds(absl::Now() - start) / phase_seconds);
        const uint64_t size = PickSize(Mixes()[phase % Mixes().size()], rng);
        while (!live.Reserve(size, limit)) {
          const std::optional<Block> victim = live.TakeRandom(rng);
          if (!victim.has_value() || !free_block(*victim)) break;
        }
        const bool ok = allocate(size);
        live.Unreserve(size);
        if (!ok) return;
      }
    });
  }
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&, r] {
      std::mt19937_64 rng(absl::GetFlag(FLAGS_seed) * 3000 + r);
      std::exponential_distribution<double> think(
          1.0 / absl::GetFlag(FLAGS_think_us));
      std::vector<int64_t> mine;
      while (!stop.load() && !failed.load()) {
        absl::SleepFor(absl::Microseconds(think(rng)));
        const std::optional<Block> block = live.PeekRandom(rng);
        if (!block.has_value()) continue;
        v1::ReadRequest request;
        request.set_handle(block->handle);
        request.set_length(
            std::min(block->size, absl::GetFlag(FLAGS_read_bytes)));
        v1::ReadResponse response;
        grpc::ClientContext context;
        context.set_deadline(
            absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
        const absl::Time sent = absl::Now();
        const grpc::Status status = stub->Read(&context, request, &response);
        const int64_t ns = absl::ToInt64Nanoseconds(absl::Now() - sent);
        if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
          races.fetch_add(1, std::memory_order_relaxed);  // freed meanwhile
          continue;
        }
        if (!status.ok()) {
          Fail(absl::StrCat("Read: ", status.error_message()));
          return;
        }
        if (response.data().compare(0, kTagBytes, TagBytes(block->tag)) != 0) {
          Fail(absl::StrCat("block ", block->handle, " read wrong bytes"));
          return;
        }
        mine.push_back(ns);
      }
      absl::MutexLock lock(&latencies_mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
    });
  }

  // Sample until the end; keep every automatic report once.
  std::map<std::tuple<int64_t, int32_t, int>, v1::DefragReport> reports;
  v1::GetStatsResponse first_stats, stats;
  const absl::Duration period =
      absl::Milliseconds(absl::GetFlag(FLAGS_sample_ms));
  for (absl::Time t = start; t < end && !failed.load(); t += period) {
    if (t > absl::Now()) absl::SleepFor(t - absl::Now());
    Sample sample;
    sample.t = absl::ToDoubleSeconds(absl::Now() - start);
    sample.rss = RssOf(pid);
    sample.live = live.bytes();
    v1::GetStatsRequest request;
    request.set_include_defrag_history(true);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    const grpc::Status status = stub->GetStats(&context, request, &stats);
    if (!status.ok()) {
      Fail(absl::StrCat("GetStats: ", status.error_message()));
      break;
    }
    if (t == start) first_stats = stats;
    sample.pools_resident = stats.total().resident_bytes();
    sample.state = stats.auto_defrag().state();
    for (int i = 0; i < stats.pools_size() && i < 3; ++i) {
      const v1::FragmentationStats& pool = stats.pools(i).stats();
      const uint64_t used =
          pool.allocated_bytes() + pool.free_bytes() + pool.metadata_bytes();
      sample.allocated[i] = pool.allocated_bytes();
      sample.free_inside[i] = pool.free_bytes();
      sample.cached[i] =
          pool.resident_bytes() - std::min(pool.resident_bytes(), used);
    }
    for (const v1::DefragReport& report : stats.recent_defragmentations()) {
      reports[{report.started_at().seconds(), report.started_at().nanos(),
               report.origin()}] = report;
    }
    result.samples.push_back(sample);
  }
  stop = true;
  for (std::thread& t : threads) t.join();
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  result.server_cpu_ns = ProcessCpuNanos(pid) - cpu_before;
  result.allocations = allocations.load();
  result.frees = frees.load();
  result.read_races = races.load();
  result.reads = Summarize(latencies);
  result.auto_runs =
      stats.auto_defrag().runs() - first_stats.auto_defrag().runs();
  result.auto_bytes_reclaimed = stats.auto_defrag().bytes_reclaimed() -
                                first_stats.auto_defrag().bytes_reclaimed();
  result.auto_cpu_ns = Nanos(stats.auto_defrag().cpu_time()) -
                       Nanos(first_stats.auto_defrag().cpu_time());
  {
    const v1::CommandLatency read_first = LatencyOf(first_stats, "Read");
    const v1::CommandLatency read_last = LatencyOf(stats, "Read");
    result.server_read_wait_p99_s =
        QuantileBound(read_first.queue_wait(), read_last.queue_wait(), 0.99);
    result.server_read_service_p99_s =
        QuantileBound(read_first.service(), read_last.service(), 0.99);
    result.auto_slice_p99_s =
        QuantileBound(AutoSlices(first_stats), AutoSlices(stats), 0.99);
  }
  for (const auto& [key, report] : reports) {
    if (report.origin() != v1::DefragReport::ORIGIN_AUTOMATIC) {
      ++result.rpc_or_limit_runs;
      continue;
    }
    // Runs of the churn (poold runs on this machine: the same clock).
    const absl::Time started =
        absl::FromUnixSeconds(report.started_at().seconds()) +
        absl::Nanoseconds(report.started_at().nanos());
    if (started < start) continue;
    result.auto_run_wall_ns += Nanos(report.duration());
  }
  for (const Sample& s : result.samples) {
    if (s.live == 0) continue;
    const double ratio = static_cast<double>(s.rss) / s.live;
    const double above =
        static_cast<double>(s.rss - std::min(s.rss, result.idle_rss)) / s.live;
    result.rss_ratio_max = std::max(result.rss_ratio_max, ratio);
    result.above_idle_ratio_max = std::max(result.above_idle_ratio_max, above);
    result.rss_ratio_mean += ratio / result.samples.size();
    result.above_idle_ratio_mean += above / result.samples.size();
  }

  if (failed.load()) {
    const std::string log = (*server)->Log();
    std::fprintf(
        stderr, "poold's log (end):\n%s\n",
        log.substr(log.size() - std::min<size_t>(log.size(), 4000)).c_str());
    return result;
  }
  // Leave the server as found and stop it.
  for (const Block& block : live.TakeAll()) free_block(block);
  const absl::StatusOr<int> code = (*server)->Stop();
  if (!code.ok() || *code != 0) {
    Fail(absl::StrCat(
        "poold did not stop cleanly: ",
        code.ok() ? absl::StrCat("exit ", *code) : code.status().ToString(),
        "\n", (*server)->Log()));
  }
  return result;
}

std::string FormatBound(double seconds) {
  if (seconds == 0) return "-";
  if (std::isinf(seconds)) return "inf";
  return FormatLatency(static_cast<int64_t>(seconds * 1e9));
}

std::string Share(int64_t part_ns, int64_t whole_ns) {
  if (whole_ns <= 0) return "-";
  return absl::StrFormat("%.1f%%", 100.0 * part_ns / whole_ns);
}

void PrintTable(const std::vector<ModeResult>& results) {
  std::printf(
      "\n| auto_defrag | RSS / live, worst sample | mean | (RSS - idle) / "
      "live, worst | mean | read p50 | p99 | p99.9 | allocations/s | "
      "automatic runs | reclaimed | defrag CPU / run time | defrag CPU / "
      "churn time | server CPU / churn time |\n");
  std::printf(
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | "
      "--- | --- | --- |\n");
  for (const ModeResult& r : results) {
    const int64_t churn_ns = static_cast<int64_t>(r.seconds * 1e9);
    std::printf(
        "| %s | %.3f | %.3f | %.3f | %.3f | %s | %s | %s | %.0f | %llu | "
        "%.1f MiB | %s | %s | %s |\n",
        r.mode.c_str(), r.rss_ratio_max, r.rss_ratio_mean,
        r.above_idle_ratio_max, r.above_idle_ratio_mean,
        FormatLatency(r.reads.p50_ns).c_str(),
        FormatLatency(r.reads.p99_ns).c_str(),
        FormatLatency(r.reads.p999_ns).c_str(), r.allocations / r.seconds,
        static_cast<unsigned long long>(r.auto_runs),
        static_cast<double>(r.auto_bytes_reclaimed) / kMiB,
        Share(r.auto_cpu_ns, r.auto_run_wall_ns).c_str(),
        Share(r.auto_cpu_ns, churn_ns).c_str(),
        Share(r.server_cpu_ns, churn_ns).c_str());
  }
  const ModeResult* off = nullptr;
  const ModeResult* on = nullptr;
  for (const ModeResult& r : results) {
    if (r.mode == "off") off = &r;
    if (r.mode == "on") on = &r;
  }
  if (off != nullptr && on != nullptr && off->reads.p99_ns > 0) {
    std::printf(
        "\nread p99 on / off: %.2f; worst RSS / live on: %.3f (off: "
        "%.3f)\n",
        static_cast<double>(on->reads.p99_ns) / off->reads.p99_ns,
        on->rss_ratio_max, off->rss_ratio_max);
  }
  for (const ModeResult& r : results) {
    const Sample* worst = nullptr;
    for (const Sample& s : r.samples) {
      if (s.live == 0) continue;
      if (worst == nullptr ||
          static_cast<double>(s.rss) / s.live >
              static_cast<double>(worst->rss) / worst->live) {
        worst = &s;
      }
    }
    if (worst == nullptr) continue;
    std::string pools;
    const char* const kNames[] = {"small", "medium", "large"};
    for (int i = 0; i < 3; ++i) {
      absl::StrAppendFormat(
          &pools, "; %s %.1f in slots, %.1f free inside, %.1f cached",
          kNames[i], static_cast<double>(worst->allocated[i]) / kMiB,
          static_cast<double>(worst->free_inside[i]) / kMiB,
          static_cast<double>(worst->cached[i]) / kMiB);
    }
    std::printf(
        "%s: worst sample at %.1f s: RSS %.1f MiB, live %.1f MiB, pools "
        "%.1f MiB%s\n",
        r.mode.c_str(), worst->t, static_cast<double>(worst->rss) / kMiB,
        static_cast<double>(worst->live) / kMiB,
        static_cast<double>(worst->pools_resident) / kMiB, pools.c_str());
  }
  for (const ModeResult& r : results) {
    std::printf(
        "%s: as poold counted them (bucket bounds): reads waited in the "
        "channel p99 <= %s, the worker took p99 <= %s; automatic slices p99 "
        "<= %s\n",
        r.mode.c_str(), FormatBound(r.server_read_wait_p99_s).c_str(),
        FormatBound(r.server_read_service_p99_s).c_str(),
        FormatBound(r.auto_slice_p99_s).c_str());
  }
  for (const ModeResult& r : results) {
    std::printf(
        "%s: %llu reads (%llu of blocks freed meanwhile, not counted), "
        "%llu frees, idle RSS %.1f MiB\n",
        r.mode.c_str(), static_cast<unsigned long long>(r.reads.count),
        static_cast<unsigned long long>(r.read_races),
        static_cast<unsigned long long>(r.frees),
        static_cast<double>(r.idle_rss) / kMiB);
  }
}

// A bucket bound for JSON: null past the last bound or when nothing was
// counted.
std::string JsonSeconds(double seconds) {
  return std::isinf(seconds) || seconds == 0 ? "null"
                                             : absl::StrFormat("%g", seconds);
}

void WriteJson(const std::string& path,
               const std::vector<ModeResult>& results) {
  std::vector<std::string> modes;
  for (const ModeResult& r : results) {
    std::vector<std::string> samples;
    for (const Sample& s : r.samples) {
      std::vector<std::string> pools;
      for (int i = 0; i < 3; ++i) {
        pools.push_back(absl::StrFormat(
            "{\"allocated\": %llu, \"free_inside\": %llu, \"cached\": %llu}",
            static_cast<unsigned long long>(s.allocated[i]),
            static_cast<unsigned long long>(s.free_inside[i]),
            static_cast<unsigned long long>(s.cached[i])));
      }
      samples.push_back(absl::StrFormat(
          "{\"t\": %.3f, \"rss\": %llu, \"live\": %llu, \"pools_resident\": "
          "%llu, \"state\": %d, \"pools\": [%s]}",
          s.t, static_cast<unsigned long long>(s.rss),
          static_cast<unsigned long long>(s.live),
          static_cast<unsigned long long>(s.pools_resident), s.state,
          absl::StrJoin(pools, ", ")));
    }
    modes.push_back(absl::StrFormat(
        "{\"mode\": \"%s\", \"idle_rss\": %llu, \"seconds\": %.3f, "
        "\"rss_ratio_max\": %.4f, \"rss_ratio_mean\": %.4f, "
        "\"above_idle_ratio_max\": %.4f, \"above_idle_ratio_mean\": %.4f, "
        "\"read_p50_ns\": %lld, \"read_p99_ns\": %lld, \"read_p999_ns\": "
        "%lld, \"reads\": %llu, \"allocations\": %llu, \"auto_runs\": %llu, "
        "\"auto_bytes_reclaimed\": %llu, \"auto_cpu_ns\": %lld, "
        "\"auto_run_wall_ns\": %lld, \"server_cpu_ns\": %lld, "
        "\"server_read_wait_p99_s\": %s, \"server_read_service_p99_s\": %s, "
        "\"auto_slice_p99_s\": %s, \"samples\": [%s]}",
        r.mode, static_cast<unsigned long long>(r.idle_rss), r.seconds,
        r.rss_ratio_max, r.rss_ratio_mean, r.above_idle_ratio_max,
        r.above_idle_ratio_mean, static_cast<long long>(r.reads.p50_ns),
        static_cast<long long>(r.reads.p99_ns),
        static_cast<long long>(r.reads.p999_ns),
        static_cast<unsigned long long>(r.reads.count),
        static_cast<unsigned long long>(r.allocations),
        static_cast<unsigned long long>(r.auto_runs),
        static_cast<unsigned long long>(r.auto_bytes_reclaimed),
        static_cast<long long>(r.auto_cpu_ns),
        static_cast<long long>(r.auto_run_wall_ns),
        static_cast<long long>(r.server_cpu_ns),
        JsonSeconds(r.server_read_wait_p99_s),
        JsonSeconds(r.server_read_service_p99_s),
        JsonSeconds(r.auto_slice_p99_s), absl::StrJoin(samples, ", ")));
  }
  std::ofstream(path) << absl::StrFormat(
      "{\"machine\": \"%s\", \"live_mib\": %lld, \"phase_seconds\": %.1f, "
      "\"allocs_per_second\": %.0f, \"modes\": [%s]}\n",
      MachineDescription(),
      static_cast<long long>(absl::GetFlag(FLAGS_live_mib)),
      absl::GetFlag(FLAGS_phase_seconds),
      absl::GetFlag(FLAGS_allocs_per_second), absl::StrJoin(modes, ",\n"));
}

}  // namespace
}  // namespace poold::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Churn with shifting sizes against poold with automatic "
      "defragmentation off and on: RSS / live over time, read latency, CPU.");
  absl::ParseCommandLine(argc, argv);
  using namespace poold::bench;  // NOLINT(build/namespaces)
  std::printf("# churn_bench: %s; load before: %s\n",
              MachineDescription().c_str(), LoadAverage().c_str());
  std::printf(
      "live %lld MiB, %.0f s per mode, size mix shifts every %.0f s "
      "(%s), %.0f allocations/s, %d writers, %d readers\n",
      static_cast<long long>(absl::GetFlag(FLAGS_live_mib)),
      absl::GetFlag(FLAGS_seconds), absl::GetFlag(FLAGS_phase_seconds),
      absl::StrJoin(kMixNames, " -> ").c_str(),
      absl::GetFlag(FLAGS_allocs_per_second), absl::GetFlag(FLAGS_writers),
      absl::GetFlag(FLAGS_readers));
  std::vector<ModeResult> results;
  for (const std::string& mode : absl::GetFlag(FLAGS_modes)) {
    if (mode != "on" && mode != "off") {
      std::fprintf(stderr, "churn_bench: unknown mode %s (on, off)\n",
                   mode.c_str());
      return 1;
    }
    std::fflush(stdout);
    results.push_back(RunMode(mode));
    if (failed.load()) return 1;
  }
  PrintTable(results);
  std::printf("load after: %s\n", LoadAverage().c_str());
  const std::string json = absl::GetFlag(FLAGS_json);
  if (!json.empty()) WriteJson(json, results);
  return failed.load() ? 1 : 0;
}
