// pause_bench: how much a defragmentation delays reads. It starts the real
// poold (default flags, so the default --defrag_slice_us) on a loopback
// port and runs --rounds rounds of:
//
//   fill     --fill_mib of medium blocks allocated with data through gRPC
//            (many in flight: poolctl's LoadGenerator), then --free_fraction
//            of them freed at random; AnalyzeFragmentation says what a
//            defragmentation would move and reclaim;
//   phase A  --readers threads read random surviving blocks of the round
//            for --baseline_seconds, with no defragmentation;
//   phase B  the same readers run while one TriggerDefragmentation compacts
//            every pool; only reads sent between the request and its
//            answer count.
//
// A round ends by freeing the blocks it kept, so rounds are alike. One
// defragmentation of 1 GiB takes well under a second, so a round gives a few
// hundred reads during it; the rounds are pooled for the percentiles.
//
// Readers run closed-loop with a think time: each has one read in flight,
// and after each answer waits a random time (exponential, mean --think_us)
// before its next read. So reads are sent at moments unrelated to the
// defragmentation's slices, and each latency is what one read sent at a
// random moment sees: the pause. (A paced, open-loop schedule measures
// something else here: during a defragmentation the worker serves the queue
// once per slice, so one synchronous reader gets at most one read per slice;
// a schedule faster than that builds a backlog whose latency grows with the
// defragmentation's length, not with the pause.) Every read checks the
// block's byte pattern, so a moved block that read wrong would be reported.
//
//   pause_bench [--poold=PATH] [--fill_mib=1024] [--sizes=2KiB:16KiB]
//               [--free_fraction=0.75] [--readers=4] [--think_us=500]
//               [--baseline_seconds=3] [--rounds=5] [--json=FILE]
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
ABSL_FLAG(double, think_us, 500,
          "Mean think time of a reader between an answer and its next read, "
          "in microseconds (exponentially distributed).");
ABSL_FLAG(uint64_t, read_bytes, 0,
          "Bytes each read asks for from offset 0; 0: the whole block.");
ABSL_FLAG(double, baseline_seconds, 3,
          "Length of phase A (reads without defragmentation) of a round.");
ABSL_FLAG(int, rounds, 5, "Rounds of fill, phase A and phase B.");
ABSL_FLAG(double, lead_seconds, 0.5,
          "Phase B: how long readers run before the defragmentation starts "
          "(unmeasured).");
ABSL_FLAG(uint64_t, seed, 1, "Seeds the sizes, the frees and the reads.");
ABSL_FLAG(std::string, json, "", "Also write the results to this file.");
ABSL_FLAG(std::string, samples_csv, "",
          "Also write every measured read to this file: round, phase (A or "
          "B), send time in ms since the phase's window began, latency in "
          "us.");

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

// One read: when it was sent, and its latency.
struct ReadSample {
  Clock::time_point sent;
  int64_t latency_ns;
};

// Closed-loop readers of random blocks with a random think time, on their
// own threads.
class Readers {
 public:
  struct Result {
    std::vector<ReadSample> samples;
    uint64_t errors = 0;
    uint64_t corrupt = 0;
    std::string first_error;
  };

  // Starts `count` readers of `handles`, thinking `mean_think` on average
  // between reads, over one channel to `target`. REQUIRES: `handles` not
  // empty.
  Readers(const std::string& target, const std::vector<uint64_t>* handles,
          int count, absl::Duration mean_think, uint64_t read_bytes,
          uint64_t seed)
      : channel_(NewChannel(target)),
        stub_(v1::PoolService::NewStub(channel_)),
        handles_(handles),
        read_bytes_(read_bytes),
        mean_think_us_(absl::ToDoubleMicroseconds(mean_think)) {
    results_.resize(count);
    for (int i = 0; i < count; ++i) {
      threads_.emplace_back(&Readers::Run, this, &results_[i], seed + i);
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
  void Run(Result* result, uint64_t seed) {
    std::mt19937_64 random(seed);
    std::exponential_distribution<double> think_us(
        mean_think_us_ > 0 ? 1.0 / mean_think_us_ : 1.0);
    v1::ReadRequest request;
    request.set_length(read_bytes_);
    v1::ReadResponse response;
    while (!stop_.load(std::memory_order_relaxed)) {
      if (mean_think_us_ > 0) {
        std::this_thread::sleep_for(
            std::chrono::duration<double, std::micro>(think_us(random)));
      }
      const Clock::time_point sent = Clock::now();
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
            {sent,
             std::chrono::duration_cast<std::chrono::nanoseconds>(done - sent)
                 .count()});
      }
    }
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PoolService::Stub> stub_;
  const std::vector<uint64_t>* const handles_;
  const uint64_t read_bytes_;
  const double mean_think_us_;
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

// What one round did and measured.
struct Round {
  client::LoadSummary fill;
  v1::FragmentationReport analysis;
  v1::DefragReport report;
  // Measured reads of phases A and B, and their windows.
  std::vector<ReadSample> a, b;
  Clock::time_point a_start, a_end, b_start, b_end;
  uint64_t errors = 0;
  uint64_t corrupt = 0;
  std::string first_error;

  void Take(const Readers::Result& r) {
    if (r.errors + r.corrupt > 0 && errors + corrupt == 0) {
      first_error = r.first_error;
    }
    errors += r.errors;
    corrupt += r.corrupt;
  }
};

struct Config {
  std::string target;
  client::LoadOptions load;
  int readers = 4;
  absl::Duration think;
  uint64_t read_bytes = 0;
  absl::Duration baseline;
  absl::Duration lead;
};

// Frees `handles` through `stub` with `threads` synchronous callers.
// Returns the first failure.
absl::Status FreeAll(v1::PoolService::Stub* stub,
                     const std::vector<uint64_t>& handles, int threads) {
  std::atomic<size_t> next{0};
  std::vector<grpc::Status> failures(threads);
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (size_t i = next++; i < handles.size(); i = next++) {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::seconds(30));
        v1::FreeRequest request;
        request.set_handle(handles[i]);
        v1::FreeResponse response;
        grpc::Status s = stub->Free(&context, request, &response);
        if (!s.ok() && failures[t].ok()) failures[t] = s;
      }
    });
  }
  for (std::thread& w : workers) w.join();
  for (const grpc::Status& s : failures) {
    if (!s.ok()) {
      return absl::InternalError(absl::StrCat("Free: ", s.error_message()));
    }
  }
  return absl::OkStatus();
}

// One round against the poold at config.target; round `index` counts from 0.
// It frees the blocks it kept at the end, so every round starts from pools
// holding no block.
absl::Status RunRound(const Config& config, int index, Round* round) {
  std::shared_ptr<grpc::Channel> control = NewChannel(config.target);
  auto stub = v1::PoolService::NewStub(control);

  // Fill, then fragment.
  client::LoadOptions load = config.load;
  load.seed += 7919 * index;
  absl::StatusOr<client::LoadGenerator> generator =
      client::LoadGenerator::Create(control, load);
  if (!generator.ok()) return generator.status();
  generator->set_progress_callback(
      [index](const client::LoadProgress& p) {
        if (p.finished) {
          std::fprintf(stderr, "round %d: %s %llu blocks in %s\n", index + 1,
                       p.phase, static_cast<unsigned long long>(p.done),
                       absl::FormatDuration(p.elapsed).c_str());
        }
      },
      absl::Seconds(5));
  if (absl::Status s = generator->Run(&round->fill); !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("fill: ", s.message()));
  }
  const std::vector<uint64_t>& kept = round->fill.kept_handles;
  if (kept.empty()) return absl::FailedPreconditionError("no block kept");
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::minutes(1));
    grpc::Status s = stub->AnalyzeFragmentation(
        &context, v1::AnalyzeFragmentationRequest(), &round->analysis);
    if (!s.ok()) {
      return absl::InternalError(
          absl::StrCat("AnalyzeFragmentation: ", s.error_message()));
    }
  }

  // Phase A: no defragmentation.
  std::fprintf(stderr, "round %d: phase A, reads for %s\n", index + 1,
               absl::FormatDuration(config.baseline).c_str());
  {
    Readers r(config.target, &kept, config.readers, config.think,
              config.read_bytes, load.seed + 1);
    // The readers' start-up (threads, first calls) is not measured.
    absl::SleepFor(absl::Milliseconds(100));
    round->a_start = Clock::now();
    absl::SleepFor(config.baseline);
    round->a_end = Clock::now();
    Readers::Result result = r.Stop();
    round->Take(result);
    round->a = std::move(result.samples);
  }

  // Phase B: the same reads during one defragmentation of every pool.
  std::fprintf(stderr,
               "round %d: phase B, reads during "
               "TriggerDefragmentation\n",
               index + 1);
  grpc::Status defrag_status;
  {
    Readers r(config.target, &kept, config.readers, config.think,
              config.read_bytes, load.seed + 2);
    absl::SleepFor(config.lead);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::minutes(10));
    round->b_start = Clock::now();
    defrag_status = stub->TriggerDefragmentation(
        &context, v1::TriggerDefragmentationRequest(), &round->report);
    round->b_end = Clock::now();
    Readers::Result result = r.Stop();
    round->Take(result);
    round->b = std::move(result.samples);
  }
  if (!defrag_status.ok()) {
    return absl::InternalError(absl::StrCat("TriggerDefragmentation: ",
                                            defrag_status.error_message()));
  }
  return FreeAll(stub.get(), kept, 8);
}

int Main() {
  absl::StatusOr<client::SizeDistribution> sizes =
      client::SizeDistribution::Parse(absl::GetFlag(FLAGS_sizes));
  if (!sizes.ok()) {
    std::fprintf(stderr, "--sizes: %s\n", sizes.status().ToString().c_str());
    return 1;
  }
  const double mean_size = sizes->mean_size();
  const uint64_t fill_bytes =
      static_cast<uint64_t>(absl::GetFlag(FLAGS_fill_mib)) << 20;
  const int rounds = absl::GetFlag(FLAGS_rounds);
  Config config;
  config.load.count = static_cast<uint64_t>(fill_bytes / mean_size) + 1;
  config.load.sizes = *sizes;
  config.load.free_fraction = absl::GetFlag(FLAGS_free_fraction);
  config.load.concurrency = absl::GetFlag(FLAGS_fill_concurrency);
  config.load.seed = absl::GetFlag(FLAGS_seed);
  config.load.timeout = absl::Minutes(1);
  config.readers = absl::GetFlag(FLAGS_readers);
  config.think = absl::Microseconds(absl::GetFlag(FLAGS_think_us));
  config.read_bytes = absl::GetFlag(FLAGS_read_bytes);
  config.baseline = absl::Seconds(absl::GetFlag(FLAGS_baseline_seconds));
  config.lead = absl::Seconds(absl::GetFlag(FLAGS_lead_seconds));
  if (fill_bytes == 0 || rounds < 1 || config.readers < 1 ||
      config.think < absl::ZeroDuration() ||
      config.baseline <= absl::ZeroDuration() ||
      config.lead < absl::ZeroDuration()) {
    std::fprintf(stderr,
                 "--fill_mib, --rounds, --readers and --baseline_seconds "
                 "must be positive, --think_us and --lead_seconds not "
                 "negative\n");
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
  config.target = (*server)->tcp_target();
  const std::string load_before = LoadAverage();
  const absl::Time started = absl::Now();
  std::vector<Round> results(rounds);
  for (int i = 0; i < rounds; ++i) {
    if (absl::Status s = RunRound(config, i, &results[i]); !s.ok()) {
      std::fprintf(stderr, "round %d: %s\n", i + 1, s.ToString().c_str());
      return 1;
    }
  }
  const absl::Duration elapsed = absl::Now() - started;
  const std::string load_after = LoadAverage();
  absl::StatusOr<int> exit_code = (*server)->Stop();

  std::printf("pause_bench: %s; poold with default flags%s%s\n",
              MachineDescription().c_str(),
              server_options.extra_flags.empty() ? "" : " but ",
              absl::StrJoin(server_options.extra_flags, " ").c_str());
  std::printf(
      "%d round(s), each: %llu blocks of %s (%s) allocated with data, %.0f%% "
      "freed at random, %s of reads without defragmentation (A), reads "
      "during one TriggerDefragmentation (B); took %s; load average %s "
      "before, %s after\n\n",
      rounds, static_cast<unsigned long long>(config.load.count),
      absl::GetFlag(FLAGS_sizes).c_str(), Mib(fill_bytes).c_str(),
      100 * config.load.free_fraction,
      absl::FormatDuration(config.baseline).c_str(),
      absl::FormatDuration(absl::Trunc(elapsed, absl::Seconds(1))).c_str(),
      load_before.c_str(), load_after.c_str());

  std::printf(
      "What AnalyzeFragmentation projected before each defragmentation, and "
      "what the defragmentation did:\n\n"
      "| round | fill time | kept | resident | live | fragmentation | "
      "reclaimable | projected moved | moved | reclaimed | slices | longest "
      "slice | defrag time | poold RSS |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  bool big_enough = true;
  bool complete = true;
  for (int i = 0; i < rounds; ++i) {
    const Round& r = results[i];
    const v1::FragmentationStats& total = r.analysis.total();
    big_enough = big_enough && total.resident_bytes() >= (uint64_t{1} << 30);
    complete = complete && r.report.complete();
    std::printf(
        "| %d | %s + %s | %llu blocks, %s | %s | %s | %s | %s | %llu "
        "blocks, %s | %llu blocks, %s | %s | %llu | %s | %s%s | %s -> %s |\n",
        i + 1,
        absl::FormatDuration(
            absl::Trunc(r.fill.allocate_time, absl::Milliseconds(100)))
            .c_str(),
        absl::FormatDuration(
            absl::Trunc(r.fill.free_time, absl::Milliseconds(100)))
            .c_str(),
        static_cast<unsigned long long>(r.fill.kept_handles.size()),
        Mib(r.fill.bytes_kept).c_str(), Mib(total.resident_bytes()).c_str(),
        Mib(total.live_bytes()).c_str(),
        Percent(total.fragmentation_ratio()).c_str(),
        Mib(total.reclaimable_bytes()).c_str(),
        static_cast<unsigned long long>(r.analysis.projected_blocks_moved()),
        Mib(r.analysis.projected_bytes_moved()).c_str(),
        static_cast<unsigned long long>(r.report.blocks_moved()),
        Mib(r.report.bytes_moved()).c_str(),
        Mib(r.report.bytes_reclaimed()).c_str(),
        static_cast<unsigned long long>(r.report.slices()),
        FormatLatency(DurationNs(r.report.max_slice_duration())).c_str(),
        FormatLatency(DurationNs(r.report.duration())).c_str(),
        r.report.complete() ? "" : " (INCOMPLETE)",
        Mib(r.report.rss_before_bytes()).c_str(),
        Mib(r.report.rss_after_bytes()).c_str());
  }
  std::printf(
      "\nresident, live, fragmentation, reclaimable: all pools (here only "
      "the medium pool holds blocks); RSS: poold's, from the OS, before and "
      "after the defragmentation.\n");
  if (!big_enough) {
    std::printf(
        "NOTE: some round's pools held less than the 1 GiB of fragmented "
        "data the target asks for (raise --fill_mib).\n");
  }

  std::printf(
      "\nReads: %d closed-loop readers, random think time (mean %s) between "
      "an answer and the next read, %s, over one TCP connection; B counts "
      "the reads sent between the TriggerDefragmentation request and its "
      "answer.\n\n",
      config.readers, absl::FormatDuration(config.think).c_str(),
      config.read_bytes == 0
          ? "whole blocks"
          : absl::StrCat(config.read_bytes, " bytes each").c_str());
  std::printf(
      "| reads | window | reads | p50 | p90 | p99 | p99.9 | max |\n"
      "|---|---|---|---|---|---|---|---|\n");
  const auto row = [](const std::string& name, double seconds,
                      const LatencySummary& s) {
    std::printf(
        "| %s | %.2f s | %llu | %s | %s | %s | %s | %s |\n", name.c_str(),
        seconds, static_cast<unsigned long long>(s.count),
        FormatLatency(s.p50_ns).c_str(), FormatLatency(s.p90_ns).c_str(),
        FormatLatency(s.p99_ns).c_str(), FormatLatency(s.p999_ns).c_str(),
        FormatLatency(s.max_ns).c_str());
  };
  const auto seconds = [](Clock::time_point from, Clock::time_point to) {
    return std::chrono::duration<double>(to - from).count();
  };
  std::vector<int64_t> all_a, all_b;
  double a_seconds = 0, b_seconds = 0;
  std::string rounds_json;
  uint64_t errors = 0, corrupt = 0;
  std::string first_error;
  for (int i = 0; i < rounds; ++i) {
    Round& r = results[i];
    std::vector<int64_t> a = LatenciesBetween(r.a, r.a_start, r.a_end);
    std::vector<int64_t> b = LatenciesBetween(r.b, r.b_start, r.b_end);
    all_a.insert(all_a.end(), a.begin(), a.end());
    all_b.insert(all_b.end(), b.begin(), b.end());
    a_seconds += seconds(r.a_start, r.a_end);
    b_seconds += seconds(r.b_start, r.b_end);
    const LatencySummary sa = Summarize(a);
    const LatencySummary sb = Summarize(b);
    if (rounds > 1) {
      row(absl::StrCat("round ", i + 1, " A: no defragmentation"),
          seconds(r.a_start, r.a_end), sa);
      row(absl::StrCat("round ", i + 1, " B: during defragmentation"),
          seconds(r.b_start, r.b_end), sb);
    }
    if (r.errors + r.corrupt > 0 && errors + corrupt == 0) {
      first_error = r.first_error;
    }
    errors += r.errors;
    corrupt += r.corrupt;
    const v1::FragmentationStats& total = r.analysis.total();
    absl::StrAppendFormat(
        &rounds_json,
        "%s  {\"blocks_allocated\": %d, \"bytes_allocated\": %d, "
        "\"blocks_kept\": %d, \"bytes_kept\": %d, \"resident_bytes\": %d, "
        "\"live_bytes\": %d, \"reclaimable_bytes\": %d, "
        "\"projected_bytes_moved\": %d, \"defrag\": {\"complete\": %s, "
        "\"bytes_moved\": %d, \"blocks_moved\": %d, \"bytes_reclaimed\": %d, "
        "\"slices\": %d, \"max_slice_ns\": %d, \"duration_ns\": %d, "
        "\"rss_before\": %d, \"rss_after\": %d},\n   \"a\": %s,\n   \"b\": "
        "%s}",
        i == 0 ? "" : ",\n", r.fill.blocks_allocated, r.fill.bytes_allocated,
        r.fill.kept_handles.size(), r.fill.bytes_kept, total.resident_bytes(),
        total.live_bytes(), total.reclaimable_bytes(),
        r.analysis.projected_bytes_moved(),
        r.report.complete() ? "true" : "false", r.report.bytes_moved(),
        r.report.blocks_moved(), r.report.bytes_reclaimed(), r.report.slices(),
        DurationNs(r.report.max_slice_duration()),
        DurationNs(r.report.duration()), r.report.rss_before_bytes(),
        r.report.rss_after_bytes(), SummaryJson(sa), SummaryJson(sb));
  }
  const LatencySummary sa = Summarize(all_a);
  const LatencySummary sb = Summarize(all_b);
  row(rounds > 1 ? "**A: no defragmentation, all rounds**"
                 : "A: no defragmentation",
      a_seconds, sa);
  row(rounds > 1 ? "**B: during defragmentation, all rounds**"
                 : "B: during defragmentation",
      b_seconds, sb);
  const double p99_ratio = sa.p99_ns > 0 ? static_cast<double>(sb.p99_ns) /
                                               static_cast<double>(sa.p99_ns)
                                         : 0;
  std::printf(
      "\np99 during / p99 without defragmentation = %s / %s = %.2f; target "
      "<= 2: %s\n",
      FormatLatency(sb.p99_ns).c_str(), FormatLatency(sa.p99_ns).c_str(),
      p99_ratio, p99_ratio <= 2.0 ? "met" : "MISSED");
  std::printf("failed reads: %llu; reads with wrong bytes: %llu%s\n",
              static_cast<unsigned long long>(errors),
              static_cast<unsigned long long>(corrupt),
              complete ? "" : "; a defragmentation was INCOMPLETE");
  if (!exit_code.ok() || *exit_code != 0) {
    std::fprintf(stderr, "poold did not stop cleanly: %s\n",
                 exit_code.ok() ? absl::StrCat("exit code ", *exit_code).c_str()
                                : exit_code.status().ToString().c_str());
  }

  const std::string json_path = absl::GetFlag(FLAGS_json);
  if (!json_path.empty()) {
    std::ofstream(json_path) << absl::StrFormat(
        "{\"fill_bytes\": %d, \"sizes\": \"%s\", \"free_fraction\": %.3f, "
        "\"readers\": %d, \"think_us\": %.1f, \"read_bytes\": %d,\n"
        " \"rounds\": [\n%s],\n \"a\": %s,\n \"b\": %s,\n"
        " \"p99_ratio\": %.4f, \"errors\": %d, \"corrupt\": %d}\n",
        fill_bytes, absl::GetFlag(FLAGS_sizes), config.load.free_fraction,
        config.readers, absl::ToDoubleMicroseconds(config.think),
        config.read_bytes, rounds_json, SummaryJson(sa), SummaryJson(sb),
        p99_ratio, errors, corrupt);
  }
  const std::string csv_path = absl::GetFlag(FLAGS_samples_csv);
  if (!csv_path.empty()) {
    std::ofstream csv(csv_path);
    csv << "round,phase,sent_ms,latency_us\n";
    const auto write = [&csv](int round, const char* phase,
                              const std::vector<ReadSample>& samples,
                              Clock::time_point from, Clock::time_point to) {
      for (const ReadSample& s : samples) {
        if (s.sent < from || s.sent > to) continue;
        csv << round << "," << phase << ","
            << std::chrono::duration<double, std::milli>(s.sent - from).count()
            << "," << s.latency_ns / 1000.0 << "\n";
      }
    };
    for (int i = 0; i < rounds; ++i) {
      const Round& r = results[i];
      write(i + 1, "A", r.a, r.a_start, r.a_end);
      write(i + 1, "B", r.b, r.b_start, r.b_end);
    }
  }
  if (errors + corrupt > 0 || !complete) {
    std::fprintf(stderr, "pause_bench: %s\n",
                 first_error.empty() ? "a defragmentation was incomplete"
                                     : first_error.c_str());
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
