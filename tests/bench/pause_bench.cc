// pause_bench: how much a defragmentation delays reads. It starts the real
// poold (default flags, so the default --defrag_slice_us) on a loopback
// port, fills it through gRPC with --fill_mib of medium blocks (Allocate
// with data, many in flight: poolctl's LoadGenerator), frees
// --free_fraction of them at random, and prints what AnalyzeFragmentation
// projects. Then:
//
//   phase A  --readers threads read random surviving blocks for
//            --baseline_seconds, with no defragmentation;
//   phase B  the same readers run while one TriggerDefragmentation compacts
//            every pool; only reads sent between the request and its
//            answer count.
//
// Readers are paced, not closed-loop: each sends --read_rate reads/s on a
// fixed schedule (one sync call at a time). A reader that is on schedule
// sleeps until its next send time and counts latency from the actual send;
// a reader that a slow read made late sends at once and counts latency from
// the scheduled time, so a stall is charged to every read it delayed (no
// coordinated omission) while the client's own sleep jitter is not. Every
// read checks the block's byte pattern, so a moved block that read wrong
// would be reported.
//
//   pause_bench [--poold=PATH] [--fill_mib=1024] [--sizes=2KiB:16KiB]
//               [--free_fraction=0.75] [--readers=4] [--read_rate=500]
//               [--baseline_seconds=5] [--json=FILE]
//
// Prints Markdown tables; exits 1 on a failed or wrong read.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/load_generator.h"
#include "client/size_distribution.h"
#include "grpcpp/grpcpp.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/bench/bench_stats.h"
#include "tests/bench/server_process.h"

ABSL_FLAG(std::string, poold, POOLD_BINARY_PATH, "Path of the poold binary.");
ABSL_FLAG(std::vector<std::string>, poold_flags, {},
          "More flags for poold, comma-separated (default: none, so poold's "
          "defaults, e.g. --defrag_slice_us=1000).");
ABSL_FLAG(int64_t, fill_mib, 1024, "MiB of blocks to allocate.");
ABSL_FLAG(std::string, sizes, "2KiB:16KiB",
          "Block sizes, as poolctl load --sizes takes them.");
ABSL_FLAG(double, free_fraction, 0.75,
          "Fraction of the blocks freed again, chosen at random.");
ABSL_FLAG(int, fill_concurrency, 64, "Allocate/Free calls in flight.");
ABSL_FLAG(int, readers, 4, "Reader threads.");
ABSL_FLAG(double, read_rate, 500, "Reads per second of each reader.");
ABSL_FLAG(uint64_t, read_bytes, 0,
          "Bytes each read asks for from offset 0; 0: the whole block.");
ABSL_FLAG(double, baseline_seconds, 5,
          "Length of phase A (reads without defragmentation).");
ABSL_FLAG(double, lead_seconds, 0.5,
          "Phase B: how long readers run before the defragmentation starts "
          "(unmeasured).");
ABSL_FLAG(uint64_t, seed, 1, "Seeds the sizes, the frees and the reads.");
ABSL_FLAG(std::string, json, "", "Also write the results to this file.");

namespace poold::bench {
namespace {

using Clock = std::chrono::steady_clock;

// LoadGenerator's fill: block i holds bytes (i + k) % 251 at offset k, so
// consecutive bytes step by 1 modulo 251.
constexpr int kPatternPeriod = 251;

bool PatternIntact(const std::string& data) {
  for (size_t k = 1; k < data.size(); ++k) {
    const int prev = static_cast<unsigned char>(data[k - 1]);
    const int cur = static_cast<unsigned char>(data[k]);
    if (cur != (prev + 1) % kPatternPeriod) return false;
  }
  return !data.empty();
}

std::string Mib(uint64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

std::string Percent(double ratio) {
  return absl::StrFormat("%.1f%%", 100 * ratio);
}

int64_t DurationNs(const google::protobuf::Duration& d) {
  return d.seconds() * 1000000000 + d.nanos();
}

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(client::PoolClient::kDefaultMaxMessageBytes);
  args.SetMaxSendMessageSize(client::PoolClient::kDefaultMaxMessageBytes);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                   args);
}

// One read: when it was (to be) sent, and its latency.
struct ReadSample {
  Clock::time_point sent;
  int64_t latency_ns;
};

// Paced readers of random blocks, on their own threads.
class Readers {
 public:
  struct Result {
    std::vector<ReadSample> samples;
    uint64_t errors = 0;
    uint64_t corrupt = 0;
    std::string first_error;
  };

  // Starts `count` readers of `handles`, each `rate` reads/s, over one
  // channel to `target`. REQUIRES: `handles` not empty.
  Readers(const std::string& target, const std::vector<uint64_t>* handles,
          int count, double rate, uint64_t read_bytes, uint64_t seed)
      : channel_(NewChannel(target)),
        stub_(v1::PoolService::NewStub(channel_)),
        handles_(handles),
        read_bytes_(read_bytes),
        interval_(std::chrono::duration_cast<Clock::duration>(
            std::chrono::duration<double>(1.0 / rate))) {
    const Clock::time_point start = Clock::now();
    results_.resize(count);
    for (int i = 0; i < count; ++i) {
      // Staggered, so the readers' sends spread over the interval.
      threads_.emplace_back(&Readers::Run, this, &results_[i],
                            start + interval_ * i / count, seed + i);
    }
  }

  // Stops the readers and returns what they read, merged.
  Result Stop() {
    stop_.store(true);
    for (std::thread& t : threads_) t.join();
    threads_.clear();
    Result all;
    for (Result& r : results_) {
      all.samples.insert(all.samples.end(), r.samples.begin(), r.samples.end());
      if (r.errors + r.corrupt > 0 && all.errors + all.corrupt == 0) {
        all.first_error = r.first_error;
      }
      all.errors += r.errors;
      all.corrupt += r.corrupt;
    }
    return all;
  }

  ~Readers() {
    if (!threads_.empty()) Stop();
  }

 private:
  void Run(Result* result, Clock::time_point next, uint64_t seed) {
    std::mt19937_64 random(seed);
    v1::ReadRequest request;
    request.set_length(read_bytes_);
    v1::ReadResponse response;
    while (!stop_.load(std::memory_order_relaxed)) {
      Clock::time_point base = next;
      if (Clock::now() < next) {
        std::this_thread::sleep_until(next);
        base = Clock::now();  // the client's sleep jitter is not charged
      }
      request.set_handle((*handles_)[random() % handles_->size()]);
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(10));
      const grpc::Status status = stub_->Read(&context, request, &response);
      const Clock::time_point done = Clock::now();
      if (!status.ok()) {
        if (result->errors++ + result->corrupt == 0) {
          result->first_error = absl::StrCat("Read: code ", status.error_code(),
                                             ": ", status.error_message());
        }
      } else if (!PatternIntact(response.data()) ||
                 (read_bytes_ != 0 && response.data().size() != read_bytes_)) {
        if (result->errors + result->corrupt++ == 0) {
          result->first_error =
              absl::StrCat("block ", request.handle(),
                           " does not hold the bytes written into it");
        }
      } else {
        result->samples.push_back(
            {base,
             std::chrono::duration_cast<std::chrono::nanoseconds>(done - base)
                 .count()});
      }
      next += interval_;
    }
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PoolService::Stub> stub_;
  const std::vector<uint64_t>* const handles_;
  const uint64_t read_bytes_;
  const Clock::duration interval_;
  std::atomic<bool> stop_{false};
  std::vector<Result> results_;
  std::vector<std::thread> threads_;
};

// Latencies of the samples sent in [from, to].
std::vector<int64_t> LatenciesBetween(const std::vector<ReadSample>& samples,
                                      Clock::time_point from,
                                      Clock::time_point to) {
  std::vector<int64_t> out;
  for (const ReadSample& s : samples) {
    if (s.sent >= from && s.sent <= to) out.push_back(s.latency_ns);
  }
  return out;
}

std::string SummaryJson(const LatencySummary& s) {
  return absl::StrFormat(
      "{\"count\": %d, \"p50_ns\": %d, \"p90_ns\": %d, \"p99_ns\": %d, "
      "\"p999_ns\": %d, \"max_ns\": %d, \"mean_ns\": %.0f}",
      s.count, s.p50_ns, s.p90_ns, s.p99_ns, s.p999_ns, s.max_ns, s.mean_ns);
}

const char* PoolName(int pool) {
  switch (pool) {
    case v1::POOL_SMALL:
      return "small";
    case v1::POOL_MEDIUM:
      return "medium";
    case v1::POOL_LARGE:
      return "large";
  }
  return "?";
}

const char* OutcomeName(int outcome) {
  return v1::PoolDefragReport::Outcome_IsValid(outcome)
             ? v1::PoolDefragReport::Outcome_Name(
                   static_cast<v1::PoolDefragReport::Outcome>(outcome))
                   .c_str()
             : "?";
}

int Main() {
  absl::StatusOr<client::SizeDistribution> sizes =
      client::SizeDistribution::Parse(absl::GetFlag(FLAGS_sizes));
  if (!sizes.ok()) {
    std::fprintf(stderr, "--sizes: %s\n", sizes.status().ToString().c_str());
    return 1;
  }
  double mean_size = 0;
  for (const auto& range : sizes->ranges()) {
    mean_size += (range.min + range.max) / 2.0 / sizes->ranges().size();
  }
  const uint64_t fill_bytes =
      static_cast<uint64_t>(absl::GetFlag(FLAGS_fill_mib)) << 20;
  const int readers = absl::GetFlag(FLAGS_readers);
  const double read_rate = absl::GetFlag(FLAGS_read_rate);
  const absl::Duration baseline =
      absl::Seconds(absl::GetFlag(FLAGS_baseline_seconds));
  if (fill_bytes == 0 || readers < 1 || read_rate <= 0 ||
      baseline <= absl::ZeroDuration()) {
    std::fprintf(stderr,
                 "--fill_mib, --readers, --read_rate and --baseline_seconds "
                 "must be positive\n");
    return 1;
  }

  ServerProcess::Options server_options;
  server_options.binary = absl::GetFlag(FLAGS_poold);
  server_options.extra_flags = absl::GetFlag(FLAGS_poold_flags);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(server_options);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  const std::string target = (*server)->tcp_target();
  const std::string load_before = LoadAverage();

  // Fill, then fragment.
  client::LoadOptions load;
  load.count = static_cast<uint64_t>(fill_bytes / mean_size) + 1;
  load.sizes = *sizes;
  load.free_fraction = absl::GetFlag(FLAGS_free_fraction);
  load.concurrency = absl::GetFlag(FLAGS_fill_concurrency);
  load.seed = absl::GetFlag(FLAGS_seed);
  load.timeout = absl::Minutes(1);
  std::shared_ptr<grpc::Channel> control = NewChannel(target);
  absl::StatusOr<client::LoadGenerator> generator =
      client::LoadGenerator::Create(control, load);
  if (!generator.ok()) {
    std::fprintf(stderr, "%s\n", generator.status().ToString().c_str());
    return 1;
  }
  generator->set_progress_callback(
      [](const client::LoadProgress& p) {
        if (p.finished) {
          std::fprintf(stderr, "%s: %llu blocks in %s\n", p.phase,
                       static_cast<unsigned long long>(p.done),
                       absl::FormatDuration(p.elapsed).c_str());
        }
      },
      absl::Seconds(5));
  client::LoadSummary summary;
  if (absl::Status s = generator->Run(&summary); !s.ok()) {
    std::fprintf(stderr, "fill: %s\n", s.ToString().c_str());
    return 1;
  }
  const std::vector<uint64_t>& kept = summary.kept_handles;
  if (kept.empty()) {
    std::fprintf(stderr, "fill: no block left to read\n");
    return 1;
  }

  auto stub = v1::PoolService::NewStub(control);
  v1::FragmentationReport analysis;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::minutes(1));
    grpc::Status s = stub->AnalyzeFragmentation(
        &context, v1::AnalyzeFragmentationRequest(), &analysis);
    if (!s.ok()) {
      std::fprintf(stderr, "AnalyzeFragmentation: %s\n",
                   s.error_message().c_str());
      return 1;
    }
  }

  const uint64_t read_bytes = absl::GetFlag(FLAGS_read_bytes);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);

  // Phase A: no defragmentation.
  std::fprintf(stderr, "phase A: reads for %s\n",
               absl::FormatDuration(baseline).c_str());
  Readers::Result a;
  Clock::time_point a_start, a_end;
  {
    Readers r(target, &kept, readers, read_rate, read_bytes, seed);
    // The first interval is the readers' start-up: not measured.
    absl::SleepFor(absl::Seconds(1.0 / read_rate));
    a_start = Clock::now();
    absl::SleepFor(baseline);
    a_end = Clock::now();
    a = r.Stop();
  }

  // Phase B: the same reads during one defragmentation of every pool.
  std::fprintf(stderr, "phase B: reads during TriggerDefragmentation\n");
  Readers::Result b;
  v1::DefragReport report;
  grpc::Status defrag_status;
  Clock::time_point b_start, b_end;
  {
    Readers r(target, &kept, readers, read_rate, read_bytes, seed + 1000);
    absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_lead_seconds)));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::minutes(10));
    b_start = Clock::now();
    defrag_status = stub->TriggerDefragmentation(
        &context, v1::TriggerDefragmentationRequest(), &report);
    b_end = Clock::now();
    b = r.Stop();
  }
  const std::string load_after = LoadAverage();
  control.reset();
  stub.reset();
  absl::StatusOr<int> exit_code = (*server)->Stop();
  if (!defrag_status.ok()) {
    std::fprintf(stderr, "TriggerDefragmentation: %s\n",
                 defrag_status.error_message().c_str());
    return 1;
  }

  std::vector<int64_t> a_lat = LatenciesBetween(a.samples, a_start, a_end);
  std::vector<int64_t> b_lat = LatenciesBetween(b.samples, b_start, b_end);
  const LatencySummary sa = Summarize(a_lat);
  const LatencySummary sb = Summarize(b_lat);
  const double a_seconds =
      std::chrono::duration<double>(a_end - a_start).count();
  const double b_seconds =
      std::chrono::duration<double>(b_end - b_start).count();
  const double p99_ratio = sa.p99_ns > 0 ? static_cast<double>(sb.p99_ns) /
                                               static_cast<double>(sa.p99_ns)
                                         : 0;

  std::printf("pause_bench: %s; poold with default flags%s%s\n",
              MachineDescription().c_str(),
              server_options.extra_flags.empty() ? "" : " but ",
              absl::StrJoin(server_options.extra_flags, " ").c_str());
  std::printf(
      "fill: %llu blocks of %s (%s) allocated with data, %llu freed at "
      "random, %llu kept (%s) in %s + %s; load average %s before, %s "
      "after\n\n",
      static_cast<unsigned long long>(summary.blocks_allocated),
      absl::GetFlag(FLAGS_sizes).c_str(), Mib(summary.bytes_allocated).c_str(),
      static_cast<unsigned long long>(summary.blocks_freed),
      static_cast<unsigned long long>(kept.size()),
      Mib(summary.bytes_kept).c_str(),
      absl::FormatDuration(
          absl::Trunc(summary.allocate_time, absl::Milliseconds(100)))
          .c_str(),
      absl::FormatDuration(
          absl::Trunc(summary.free_time, absl::Milliseconds(100)))
          .c_str(),
      load_before.c_str(), load_after.c_str());

  std::printf(
      "AnalyzeFragmentation before the defragmentation:\n\n"
      "| pool | blocks | live | resident | fragmentation | reclaimable | "
      "projected moves | projected bytes moved | projected reclaimed |\n"
      "|---|---|---|---|---|---|---|---|---|\n");
  for (const v1::PoolAnalysis& p : analysis.pools()) {
    std::printf("| %s | %llu | %s | %s | %s | %s | %llu | %s | %s |\n",
                PoolName(p.pool()),
                static_cast<unsigned long long>(p.stats().blocks()),
                Mib(p.stats().live_bytes()).c_str(),
                Mib(p.stats().resident_bytes()).c_str(),
                Percent(p.stats().fragmentation_ratio()).c_str(),
                Mib(p.stats().reclaimable_bytes()).c_str(),
                static_cast<unsigned long long>(p.projected_blocks_moved()),
                Mib(p.projected_bytes_moved()).c_str(),
                Mib(p.projected_bytes_reclaimed()).c_str());
  }
  const v1::FragmentationStats& total = analysis.total();
  std::printf(
      "| total | %llu | %s | %s | %s | %s | %llu | %s | %s |\n\n",
      static_cast<unsigned long long>(total.blocks()),
      Mib(total.live_bytes()).c_str(), Mib(total.resident_bytes()).c_str(),
      Percent(total.fragmentation_ratio()).c_str(),
      Mib(total.reclaimable_bytes()).c_str(),
      static_cast<unsigned long long>(analysis.projected_blocks_moved()),
      Mib(analysis.projected_bytes_moved()).c_str(),
      Mib(analysis.projected_bytes_reclaimed()).c_str());
  const bool big_enough = total.resident_bytes() >= (uint64_t{1} << 30);
  if (!big_enough) {
    std::printf(
        "NOTE: the pools hold %s, less than the 1 GiB the target asks for "
        "(raise --fill_mib).\n\n",
        Mib(total.resident_bytes()).c_str());
  }

  std::printf(
      "TriggerDefragmentation (every pool): %s, moved %llu blocks (%s), "
      "released %llu spans, reclaimed %s; %llu slices, longest %s; took %s; "
      "poold RSS %s -> %s\n\n",
      report.complete() ? "complete" : "INCOMPLETE",
      static_cast<unsigned long long>(report.blocks_moved()),
      Mib(report.bytes_moved()).c_str(),
      static_cast<unsigned long long>(report.spans_released()),
      Mib(report.bytes_reclaimed()).c_str(),
      static_cast<unsigned long long>(report.slices()),
      FormatLatency(DurationNs(report.max_slice_duration())).c_str(),
      FormatLatency(DurationNs(report.duration())).c_str(),
      Mib(report.rss_before_bytes()).c_str(),
      Mib(report.rss_after_bytes()).c_str());
  for (const v1::PoolDefragReport& p : report.pools()) {
    std::printf("- %s: %s%s%s; moved %s, reclaimed %s, %s\n",
                PoolName(p.pool()), OutcomeName(p.outcome()),
                p.reason().empty() ? "" : " ", p.reason().c_str(),
                Mib(p.bytes_moved()).c_str(), Mib(p.bytes_reclaimed()).c_str(),
                FormatLatency(DurationNs(p.duration())).c_str());
  }

  std::printf(
      "\nReads: %d readers x %.0f reads/s, paced (latency from the scheduled "
      "send when a slow read made the reader late), %s\n\n",
      readers, read_rate,
      read_bytes == 0 ? "whole blocks"
                      : absl::StrCat(read_bytes, " bytes each").c_str());
  std::printf(
      "| reads | window | reads | p50 | p90 | p99 | p99.9 | max |\n"
      "|---|---|---|---|---|---|---|---|\n");
  const auto row = [](const char* name, double seconds,
                      const LatencySummary& s) {
    std::printf(
        "| %s | %.2f s | %llu | %s | %s | %s | %s | %s |\n", name, seconds,
        static_cast<unsigned long long>(s.count),
        FormatLatency(s.p50_ns).c_str(), FormatLatency(s.p90_ns).c_str(),
        FormatLatency(s.p99_ns).c_str(), FormatLatency(s.p999_ns).c_str(),
        FormatLatency(s.max_ns).c_str());
  };
  row("A: no defragmentation", a_seconds, sa);
  row("B: during TriggerDefragmentation", b_seconds, sb);
  std::printf("\np99 during / p99 without = %.2f; target <= 2: %s\n", p99_ratio,
              p99_ratio <= 2.0 ? "met" : "MISSED");
  const uint64_t errors = a.errors + b.errors;
  const uint64_t corrupt = a.corrupt + b.corrupt;
  std::printf("failed reads: %llu; reads with wrong bytes: %llu\n",
              static_cast<unsigned long long>(errors),
              static_cast<unsigned long long>(corrupt));
  if (!exit_code.ok() || *exit_code != 0) {
    std::fprintf(stderr, "poold did not stop cleanly: %s\n",
                 exit_code.ok() ? absl::StrCat("exit code ", *exit_code).c_str()
                                : exit_code.status().ToString().c_str());
  }

  const std::string json_path = absl::GetFlag(FLAGS_json);
  if (!json_path.empty()) {
    std::ofstream(json_path) << absl::StrFormat(
        "{\"fill_bytes\": %d, \"blocks_allocated\": %d, \"blocks_kept\": %d, "
        "\"bytes_kept\": %d, \"resident_bytes\": %d, \"live_bytes\": %d, "
        "\"reclaimable_bytes\": %d, \"projected_bytes_moved\": %d, "
        "\"defrag\": {\"complete\": %s, \"bytes_moved\": %d, "
        "\"blocks_moved\": %d, \"bytes_reclaimed\": %d, \"slices\": %d, "
        "\"max_slice_ns\": %d, \"duration_ns\": %d, \"rss_before\": %d, "
        "\"rss_after\": %d},\n \"readers\": %d, \"read_rate\": %.1f, "
        "\"read_bytes\": %d,\n \"a\": %s,\n \"b\": %s,\n \"p99_ratio\": %.4f, "
        "\"errors\": %d, \"corrupt\": %d}\n",
        summary.bytes_allocated, summary.blocks_allocated, kept.size(),
        summary.bytes_kept, total.resident_bytes(), total.live_bytes(),
        total.reclaimable_bytes(), analysis.projected_bytes_moved(),
        report.complete() ? "true" : "false", report.bytes_moved(),
        report.blocks_moved(), report.bytes_reclaimed(), report.slices(),
        DurationNs(report.max_slice_duration()), DurationNs(report.duration()),
        report.rss_before_bytes(), report.rss_after_bytes(), readers, read_rate,
        read_bytes, SummaryJson(sa), SummaryJson(sb), p99_ratio, errors,
        corrupt);
  }
  if (errors + corrupt > 0) {
    std::fprintf(stderr, "pause_bench: %s\n",
                 (a.errors + a.corrupt > 0 ? a : b).first_error.c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace poold::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Read latency of the real poold during a defragmentation of >= 1 GiB "
      "of fragmented blocks, beside the same reads without one.");
  absl::ParseCommandLine(argc, argv);
  return poold::bench::Main();
}
