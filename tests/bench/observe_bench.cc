// observe_bench: how fast poold's statistics answer while its worker is busy.
// It starts the real poold with /metrics on a free loopback port and runs
// --rounds rounds of:
//
//   fill     --fill_mib of blocks (--sizes) allocated through gRPC, then
//            --free_fraction of them freed at random;
//   phase A  three observers ask for the statistics for --baseline_seconds,
//            with no defragmentation: GetStats (the published snapshot),
//            GetStats with consistent=true (taken on the worker, through
//            its queue, as every GetStats was before snapshots), and
//            GET /metrics;
//   phase B  the same observers while one TriggerDefragmentation compacts
//            every pool; only requests sent between the request and its
//            answer count;
//   phase C  the same observers while a client keeps 64 Allocate and Free
//            calls in flight (--load_blocks blocks of 100 to 150 bytes,
//            allocated then all freed), so the worker's queue is never
//            empty.
//
// Each observer has one request in flight and waits --think_us between an
// answer and its next request. Prints a Markdown table of latencies per
// kind and phase.
//
//   observe_bench [--poold=PATH] [--fill_mib=1024] [--sizes=2KiB:16KiB]
//                 [--free_fraction=0.75] [--think_us=1000]
//                 [--baseline_seconds=2] [--rounds=3]
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/load_generator.h"
#include "client/size_distribution.h"
#include "grpcpp/grpcpp.h"
#include "httplib.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/bench/bench_stats.h"
#include "tests/bench/server_process.h"

ABSL_FLAG(std::string, poold, POOLD_BINARY_PATH, "Path of the poold binary.");
ABSL_FLAG(int64_t, fill_mib, 1024, "MiB of blocks to allocate.");
ABSL_FLAG(std::string, sizes, "2KiB:16KiB",
          "Block sizes, as poolctl load --sizes takes them.");
ABSL_FLAG(double, free_fraction, 0.75,
          "Fraction of the blocks freed again, chosen at random.");
ABSL_FLAG(double, think_us, 1000,
          "Time an observer waits between an answer and its next request.");
ABSL_FLAG(double, baseline_seconds, 2, "Length of phase A of a round.");
ABSL_FLAG(int, rounds, 3, "Rounds of fill and phases A, B and C.");
ABSL_FLAG(uint64_t, load_blocks, 100000, "Blocks of phase C's load.");

namespace poold::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Sample {
  Clock::time_point sent;
  int64_t latency_ns;
};

// One closed-loop observer on its own thread: calls `ask` (true when it
// answered as it should) until stopped.
class Observer {
 public:
  Observer(std::function<bool()> ask, absl::Duration think)
      : ask_(std::move(ask)), think_(think), thread_([this] { Run(); }) {}

  // Stops it and returns its samples and failures.
  std::vector<Sample> Stop(uint64_t* failures) {
    stop_.store(true);
    thread_.join();
    *failures = failures_;
    return std::move(samples_);
  }

 private:
  void Run() {
    while (!stop_.load(std::memory_order_relaxed)) {
      absl::SleepFor(think_);
      const Clock::time_point sent = Clock::now();
      const bool ok = ask_();
      const Clock::time_point done = Clock::now();
      if (!ok) {
        ++failures_;
        continue;
      }
      samples_.push_back(
          {sent,
           std::chrono::duration_cast<std::chrono::nanoseconds>(done - sent)
               .count()});
    }
  }

  const std::function<bool()> ask_;
  const absl::Duration think_;
  std::atomic<bool> stop_{false};
  std::vector<Sample> samples_;
  uint64_t failures_ = 0;
  std::thread thread_;
};

constexpr const char* kKinds[] = {"GetStats (snapshot)",
                                  "GetStats (consistent)", "GET /metrics"};

// The three ways to ask, each with its own connection; they live as long as
// this object, which must outlive the observers that call them.
class Askers {
 public:
  Askers(const std::string& target, const std::string& metrics_origin)
      : http_(metrics_origin) {
    for (int i = 0; i < 2; ++i) {
      stubs_.push_back(v1::PoolService::NewStub(
          grpc::CreateChannel(target, grpc::InsecureChannelCredentials())));
    }
    http_.set_read_timeout(30, 0);
  }

  // kKinds[kind].
  std::function<bool()> Ask(int kind) {
    if (kind == 2) {
      return [this] {
        httplib::Result result = http_.Get("/metrics");
        return result && result->status == 200 &&
               absl::StrContains(result->body, "poold_pool_live_bytes");
      };
    }
    v1::PoolService::Stub* stub = stubs_[kind].get();
    const bool consistent = kind == 1;
    return [stub, consistent] {
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() +
                           std::chrono::seconds(30));
      v1::GetStatsRequest request;
      request.set_consistent(consistent);
      v1::GetStatsResponse response;
      return stub->GetStats(&context, request, &response).ok();
    };
  }

 private:
  std::vector<std::unique_ptr<v1::PoolService::Stub>> stubs_;
  httplib::Client http_;
};

int Main() {
  absl::StatusOr<client::SizeDistribution> sizes =
      client::SizeDistribution::Parse(absl::GetFlag(FLAGS_sizes));
  if (!sizes.ok()) {
    std::fprintf(stderr, "--sizes: %s\n", sizes.status().ToString().c_str());
    return 1;
  }
  const double mean_size = sizes->mean_size();
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      {.binary = absl::GetFlag(FLAGS_poold),
       .extra_flags = {"--metrics_listen=127.0.0.1:0", "--auto_defrag=false"}});
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }
  std::string metrics_origin;
  for (absl::string_view line : absl::StrSplit((*server)->Log(), '\n')) {
    const size_t at = line.find("poold serving metrics at ");
    if (at == absl::string_view::npos) continue;
    std::string url(line.substr(at + strlen("poold serving metrics at ")));
    metrics_origin = url.substr(0, url.find('/', strlen("http://")));
  }
  if (metrics_origin.empty()) {
    std::fprintf(stderr, "poold logged no metrics address\n");
    return 1;
  }
  const std::string target = (*server)->tcp_target();
  auto channel =
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = v1::PoolService::NewStub(channel);
  const absl::Duration think =
      absl::Microseconds(absl::GetFlag(FLAGS_think_us));

  // [kind][phase]
  constexpr int kPhases = 3;
  std::vector<int64_t> latencies[3][kPhases];
  uint64_t failures = 0;
  double defrag_seconds = 0;
  for (int round = 0; round < absl::GetFlag(FLAGS_rounds); ++round) {
    client::LoadOptions load;
    load.count = static_cast<uint64_t>(
        (static_cast<double>(absl::GetFlag(FLAGS_fill_mib)) * (1 << 20)) /
        mean_size);
    load.sizes = *sizes;
    load.free_fraction = absl::GetFlag(FLAGS_free_fraction);
    load.concurrency = 64;
    load.seed = 1 + round;
    load.timeout = absl::Minutes(1);
    absl::StatusOr<client::LoadGenerator> generator =
        client::LoadGenerator::Create(channel, load);
    client::LoadSummary fill;
    if (!generator.ok() || !generator->Run(&fill).ok()) {
      std::fprintf(stderr, "round %d: the fill failed\n", round + 1);
      return 1;
    }
    for (int phase = 0; phase < kPhases; ++phase) {
      Askers askers(target, metrics_origin);
      std::vector<std::unique_ptr<Observer>> observers;
      for (int kind = 0; kind < 3; ++kind) {
        observers.push_back(
            std::make_unique<Observer>(askers.Ask(kind), think));
      }
      absl::SleepFor(absl::Milliseconds(200));  // connections up, unmeasured
      const Clock::time_point from = Clock::now();
      if (phase == 0) {
        absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_baseline_seconds)));
      } else if (phase == 2) {
        client::LoadOptions busy;
        busy.count = absl::GetFlag(FLAGS_load_blocks);
        busy.sizes = *client::SizeDistribution::Parse("100:150");
        busy.free_fraction = 1.0;
        busy.concurrency = 64;
        busy.seed = 100 + round;
        absl::StatusOr<client::LoadGenerator> load =
            client::LoadGenerator::Create(channel, busy);
        client::LoadSummary summary;
        if (!load.ok() || !load->Run(&summary).ok()) {
          std::fprintf(stderr, "round %d: the load failed\n", round + 1);
          return 1;
        }
      } else {
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() +
                             std::chrono::minutes(10));
        v1::DefragReport report;
        const grpc::Status status = stub->TriggerDefragmentation(
            &context, v1::TriggerDefragmentationRequest(), &report);
        if (!status.ok()) {
          std::fprintf(stderr, "TriggerDefragmentation: %s\n",
                       status.error_message().c_str());
          return 1;
        }
      }
      const Clock::time_point to = Clock::now();
      if (phase == 1) {
        defrag_seconds += std::chrono::duration<double>(to - from).count();
      }
      for (size_t kind = 0; kind < observers.size(); ++kind) {
        uint64_t failed = 0;
        for (const Sample& s : observers[kind]->Stop(&failed)) {
          if (s.sent >= from && s.sent <= to) {
            latencies[kind][phase].push_back(s.latency_ns);
          }
        }
        failures += failed;
      }
    }
    // Free what is left, so the next round starts empty.
    for (uint64_t handle : fill.kept_handles) {
      grpc::ClientContext context;
      v1::FreeRequest request;
      request.set_handle(handle);
      v1::FreeResponse response;
      stub->Free(&context, request, &response);
    }
    std::fprintf(stderr, "round %d done\n", round + 1);
  }
  std::printf(
      "## Statistics while the worker is busy\n\n%d rounds of %lld MiB "
      "(%s, %.0f%% freed); defragmentations took %.2f s in all; one "
      "observer of each kind, %.0f us think time\n\n",
      absl::GetFlag(FLAGS_rounds),
      static_cast<long long>(absl::GetFlag(FLAGS_fill_mib)),
      absl::GetFlag(FLAGS_sizes).c_str(),
      100 * absl::GetFlag(FLAGS_free_fraction), defrag_seconds,
      absl::GetFlag(FLAGS_think_us));
  std::printf("| request | phase | count | p50 | p99 | max |\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  constexpr const char* kPhaseNames[kPhases] = {
      "idle worker", "during a defragmentation", "64 Allocate/Free in flight"};
  for (int kind = 0; kind < 3; ++kind) {
    for (int phase = 0; phase < kPhases; ++phase) {
      const LatencySummary s = Summarize(latencies[kind][phase]);
      std::printf("| %s | %s | %llu | %s | %s | %s |\n", kKinds[kind],
                  kPhaseNames[phase], static_cast<unsigned long long>(s.count),
                  FormatLatency(s.p50_ns).c_str(),
                  FormatLatency(s.p99_ns).c_str(),
                  FormatLatency(s.max_ns).c_str());
    }
  }
  std::printf("\nfailed requests: %llu\n",
              static_cast<unsigned long long>(failures));
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace poold::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "How fast GetStats and /metrics answer while poold defragments.");
  absl::ParseCommandLine(argc, argv);
  return poold::bench::Main();
}
