// stall_bench: how much large blocks delay the small reads of other
// clients. It starts the real poold on a loopback port, stores --small_blocks
// blocks of --small_bytes and two blocks of --large_mib, and runs one phase
// per "hog" for --seconds each:
//
//   idle      no hog: the baseline;
//   read      one client reads a whole large block, again and again;
//   write     one client overwrites a whole large block, again and again;
//   allocate  one client allocates a large block with data, then frees it;
//   reserve   one client allocates three large blocks without data (zeros),
//             then frees them: beyond the large pool's retained 128 MiB, the
//             free memory goes back to the OS;
//   batch_read   one client reads a whole large block in a Batch, again and
//                again;
//   batch_write  one client overwrites a whole large block in a Batch, again
//                and again;
//
// while --readers threads read random small blocks, each with one read in
// flight and a random think time (exponential, mean --think_us) between an
// answer and its next read, so that reads arrive at moments unrelated to the
// hog's. Each phase prints the small reads' percentiles, p99 against the
// idle phase's, and the hog's throughput. Every read checks its bytes.
//
// The hog is a process of its own (another connection), as another client
// would be, run at --hog_nice: on a real deployment it would not share
// poold's cores.
//
//   stall_bench [--poold=PATH] [--large_mib=64] [--readers=2]
//               [--think_us=500] [--seconds=5]
//               [--hogs=read,write,allocate,reserve,batch_read,batch_write]
//
// Exits 1 when a call fails or a read returns wrong bytes.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
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
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/bench/bench_stats.h"
#include "tests/bench/server_process.h"

ABSL_FLAG(std::string, poold, POOLD_BINARY_PATH, "Path of the poold binary.");
ABSL_FLAG(std::vector<std::string>, poold_flags, {},
          "More flags for poold, comma-separated.");
ABSL_FLAG(int, small_blocks, 1000, "Small blocks the readers read.");
ABSL_FLAG(int, small_bytes, 100, "Size of a small block.");
ABSL_FLAG(int, large_mib, 64, "Size of a large block, in MiB.");
ABSL_FLAG(int, readers, 2, "Reader threads of small blocks.");
ABSL_FLAG(double, think_us, 500,
          "Mean think time of a reader between an answer and its next "
          "read, in microseconds (exponentially distributed).");
ABSL_FLAG(double, seconds, 5, "Length of each phase.");
ABSL_FLAG(std::vector<std::string>, hogs,
          std::vector<std::string>({"read", "write", "allocate", "reserve",
                                    "batch_read", "batch_write"}),
          "Phases after the idle one: read, write, allocate, reserve, "
          "batch_read, batch_write.");
ABSL_FLAG(int, hog_nice, 19,
          "Niceness of the hog's process. A hog client runs on another "
          "machine in practice; here, on the same few cores, its own CPU "
          "(receiving and checking 64 MiB answers) would otherwise slow the "
          "readers' client threads, which is not poold's doing. poold's "
          "work for the hog keeps its normal priority.");
ABSL_FLAG(std::string, as_hog, "",
          "Internal: run as the hog process of this phase.");
ABSL_FLAG(std::string, hog_target, "", "Internal: the hog's poold.");
ABSL_FLAG(uint64_t, hog_handle, 0, "Internal: the hog's large block.");

namespace poold::bench {
namespace {

using Clock = std::chrono::steady_clock;

std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetMaxReceiveMessageSize(128 << 20);
  args.SetMaxSendMessageSize(128 << 20);
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                   args);
}

// The bytes of small block `i`, and of a large block: distinct per block.
std::string SmallBytes(int i, int size) {
  std::string bytes(size, '\0');
  for (int k = 0; k < size; ++k) bytes[k] = static_cast<char>((i + k) % 251);
  return bytes;
}

std::string LargeBytes() {
  return SmallBytes(7, absl::GetFlag(FLAGS_large_mib) << 20);
}

[[noreturn]] void Fail(const std::string& what, const grpc::Status& status) {
  std::fprintf(stderr, "stall_bench: %s: %s\n", what.c_str(),
               status.error_message().c_str());
  std::exit(1);
}

uint64_t Allocate(v1::PoolService::Stub& stub, std::string data) {
  v1::AllocateRequest request;
  request.set_size(data.size());
  request.set_data(std::move(data));
  v1::AllocateResponse response;
  grpc::ClientContext context;
  const grpc::Status status = stub.Allocate(&context, request, &response);
  if (!status.ok()) Fail("Allocate", status);
  return response.handle();
}

// The Read commands' queue-wait histogram of poold's worker now.
v1::Histogram ReadQueueWait(v1::PoolService::Stub& stub) {
  v1::GetStatsRequest request;
  request.set_consistent(true);
  v1::GetStatsResponse response;
  grpc::ClientContext context;
  const grpc::Status status = stub.GetStats(&context, request, &response);
  if (!status.ok()) Fail("GetStats", status);
  for (const v1::CommandLatency& latency : response.worker().latency()) {
    if (latency.method() == "Read") return latency.queue_wait();
  }
  return v1::Histogram();
}

// The bucket bound under which `q` of the durations counted between
// `before` and `after` fall ("> last bound" past the last one).
std::string QuantileBound(const v1::Histogram& before,
                          const v1::Histogram& after, double q) {
  std::vector<uint64_t> counts(after.counts().begin(), after.counts().end());
  uint64_t total = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (i < static_cast<size_t>(before.counts_size())) {
      counts[i] -= before.counts(i);
    }
    total += counts[i];
  }
  if (total == 0) return "-";
  uint64_t seen = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    seen += counts[i];
    if (seen >= q * total) {
      if (i >= static_cast<size_t>(after.bounds_seconds_size())) {
        return "> " + FormatLatency(static_cast<int64_t>(
                          after.bounds_seconds().rbegin()[0] * 1e9));
      }
      return "<= " +
             FormatLatency(static_cast<int64_t>(after.bounds_seconds(i) * 1e9));
    }
  }
  return "-";
}

struct PhaseResult {
  std::vector<int64_t> latencies_ns;
  std::string queue_wait_p99;
  double poold_cpu = 0;  // cores
  uint64_t errors = 0;
  uint64_t hog_calls = 0;
  double seconds = 0;
};

// The hog's loop, in a process of its own (--as_hog): one line on stdout
// per call. Returns only on a failure.
int RunHog(const std::string& hog) {
  const std::string target = absl::GetFlag(FLAGS_hog_target);
  const uint64_t large_handle = absl::GetFlag(FLAGS_hog_handle);
  const std::string large_data = LargeBytes();
  auto stub = v1::PoolService::NewStub(NewChannel(target));
  while (true) {
    grpc::ClientContext context;
    grpc::Status status;
    if (hog == "read") {
      v1::ReadRequest request;
      request.set_handle(large_handle);
      v1::ReadResponse response;
      status = stub->Read(&context, request, &response);
      if (status.ok() && response.data() != large_data) {
        std::fprintf(stderr, "stall_bench: the hog read wrong bytes\n");
        return 1;
      }
    } else if (hog == "write") {
      v1::WriteRequest request;
      request.set_handle(large_handle);
      request.set_data(large_data);
      v1::WriteResponse response;
      status = stub->Write(&context, request, &response);
    } else if (hog == "allocate") {
      v1::AllocateRequest request;
      request.set_size(large_data.size());
      request.set_data(large_data);
      v1::AllocateResponse response;
      status = stub->Allocate(&context, request, &response);
      if (status.ok()) {
        grpc::ClientContext free_context;
        v1::FreeRequest free;
        free.set_handle(response.handle());
        v1::FreeResponse freed;
        status = stub->Free(&free_context, free, &freed);
      }
    } else if (hog == "reserve") {
      std::vector<uint64_t> handles;
      for (int i = 0; i < 3 && status.ok(); ++i) {
        grpc::ClientContext allocate_context;
        v1::AllocateRequest request;
        request.set_size(large_data.size());
        v1::AllocateResponse response;
        status = stub->Allocate(&allocate_context, request, &response);
        if (status.ok()) handles.push_back(response.handle());
      }
      for (uint64_t handle : handles) {
        grpc::ClientContext free_context;
        v1::FreeRequest free;
        free.set_handle(handle);
        v1::FreeResponse freed;
        const grpc::Status s = stub->Free(&free_context, free, &freed);
        if (status.ok()) status = s;
      }
    } else if (hog == "batch_read" || hog == "batch_write") {
      v1::BatchRequest request;
      v1::BatchOperation* operation = request.add_operations();
      if (hog == "batch_read") {
        operation->mutable_read()->set_handle(large_handle);
      } else {
        operation->mutable_write()->set_handle(large_handle);
        operation->mutable_write()->set_data(large_data);
      }
      v1::BatchResponse response;
      status = stub->Batch(&context, request, &response);
      if (status.ok() &&
          (response.results_size() != 1 || response.results(0).code() != 0)) {
        std::fprintf(stderr, "stall_bench: the hog's batch failed: %s\n",
                     response.results_size() == 1
                         ? response.results(0).message().c_str()
                         : "no result");
        return 1;
      }
      if (status.ok() && hog == "batch_read" &&
          response.results(0).read().data() != large_data) {
        std::fprintf(stderr, "stall_bench: the hog read wrong bytes\n");
        return 1;
      }
    } else {
      std::fprintf(stderr, "stall_bench: no hog named %s\n", hog.c_str());
      return 1;
    }
    if (!status.ok()) Fail("hog " + hog, status);
    std::printf("call\n");
    std::fflush(stdout);
  }
}

// Calls the hog made so far (lines of its output).
uint64_t HogCalls(const testing::Subprocess& hog) {
  const std::string output = hog.ReadOutput();
  return std::count(output.begin(), output.end(), '\n');
}

// One phase: readers of small blocks, and the hog named `hog` ("" for none).
PhaseResult RunPhase(const std::string& target, int pid,
                     const std::vector<uint64_t>& small,
                     const std::vector<std::string>& small_data,
                     uint64_t large_handle, const std::string& hog,
                     const std::string& scratch) {
  std::atomic<uint64_t> errors{0};
  std::unique_ptr<testing::Subprocess> hog_process;
  if (!hog.empty()) {
    // This very binary, found before nice runs (for nice, /proc/self/exe
    // would be nice itself).
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
      std::fprintf(stderr, "stall_bench: cannot find its own binary\n");
      std::exit(1);
    }
    const std::vector<std::string> argv = {
        "/usr/bin/nice",
        absl::StrCat("-n", absl::GetFlag(FLAGS_hog_nice)),
        std::string(self, n),
        absl::StrCat("--as_hog=", hog),
        absl::StrCat("--hog_target=", target),
        absl::StrCat("--hog_handle=", large_handle),
        absl::StrCat("--large_mib=", absl::GetFlag(FLAGS_large_mib))};
    absl::StatusOr<std::unique_ptr<testing::Subprocess>> spawned =
        testing::Subprocess::Spawn(argv,
                                   absl::StrCat(scratch, "/hog-", hog, ".log"));
    if (!spawned.ok()) {
      std::fprintf(stderr, "stall_bench: %s\n",
                   std::string(spawned.status().message()).c_str());
      std::exit(1);
    }
    hog_process = *std::move(spawned);
    // Its first call is over before the window opens.
    while (HogCalls(*hog_process) == 0) {
      if (!hog_process->Running()) {
        std::fprintf(stderr, "stall_bench: the hog stopped: %s\n",
                     hog_process->ReadOutput().c_str());
        std::exit(1);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  const uint64_t hog_calls_before =
      hog_process != nullptr ? HogCalls(*hog_process) : 0;
  auto stats_stub = v1::PoolService::NewStub(NewChannel(target));
  const v1::Histogram wait_before = ReadQueueWait(*stats_stub);
  const int64_t cpu_before = ProcessCpuNanos(pid);
  const int readers = absl::GetFlag(FLAGS_readers);
  std::vector<std::vector<int64_t>> samples(readers);
  std::vector<std::thread> threads;
  const double think_us = absl::GetFlag(FLAGS_think_us);
  const Clock::time_point start = Clock::now();
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(
                  std::chrono::duration<double>(absl::GetFlag(FLAGS_seconds)));
  for (int r = 0; r < readers; ++r) {
    threads.emplace_back([&, r] {
      auto stub = v1::PoolService::NewStub(NewChannel(target));
      std::mt19937_64 random(r + 1);
      std::exponential_distribution<double> think(1.0 / think_us);
      while (Clock::now() < end) {
        std::this_thread::sleep_for(
            std::chrono::duration<double, std::micro>(think(random)));
        const size_t i = random() % small.size();
        v1::ReadRequest request;
        request.set_handle(small[i]);
        v1::ReadResponse response;
        grpc::ClientContext context;
        const Clock::time_point sent = Clock::now();
        const grpc::Status status = stub->Read(&context, request, &response);
        const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               Clock::now() - sent)
                               .count();
        if (!status.ok()) Fail("Read", status);
        if (response.data() != small_data[i]) ++errors;
        samples[r].push_back(ns);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  PhaseResult result;
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (hog_process != nullptr) {
    result.hog_calls = HogCalls(*hog_process) - hog_calls_before;
  }
  result.poold_cpu = (ProcessCpuNanos(pid) - cpu_before) / 1e9 / result.seconds;
  result.queue_wait_p99 =
      QuantileBound(wait_before, ReadQueueWait(*stats_stub), 0.99);
  hog_process.reset();  // killed
  for (auto& s : samples) {
    result.latencies_ns.insert(result.latencies_ns.end(), s.begin(), s.end());
  }
  result.errors = errors.load();
  return result;
}

int Main() {
  ServerProcess::Options options;
  options.binary = absl::GetFlag(FLAGS_poold);
  options.extra_flags = absl::GetFlag(FLAGS_poold_flags);
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(options);
  if (!server.ok()) {
    std::fprintf(stderr, "stall_bench: %s\n",
                 std::string(server.status().message()).c_str());
    return 1;
  }
  const std::string target = (*server)->tcp_target();
  auto stub = v1::PoolService::NewStub(NewChannel(target));
  const int small_bytes = absl::GetFlag(FLAGS_small_bytes);
  std::vector<uint64_t> small;
  std::vector<std::string> small_data;
  for (int i = 0; i < absl::GetFlag(FLAGS_small_blocks); ++i) {
    small_data.push_back(SmallBytes(i, small_bytes));
    small.push_back(Allocate(*stub, small_data.back()));
  }
  const uint64_t large = Allocate(*stub, LargeBytes());
  char scratch_template[] = "/tmp/stall-bench.XXXXXX";
  const char* scratch = mkdtemp(scratch_template);
  if (scratch == nullptr) {
    std::fprintf(stderr, "stall_bench: mkdtemp failed\n");
    return 1;
  }

  std::printf("# stall_bench: %s; load %s\n", MachineDescription().c_str(),
              LoadAverage().c_str());
  std::printf(
      "%d readers of %d-byte blocks (think %.0f us) beside one client "
      "looping on %d MiB blocks, %.0f s per phase\n\n",
      absl::GetFlag(FLAGS_readers), small_bytes, absl::GetFlag(FLAGS_think_us),
      absl::GetFlag(FLAGS_large_mib), absl::GetFlag(FLAGS_seconds));
  std::printf(
      "| hog | small reads | p50 | p99 | p99.9 | max | p99 / idle p99 | "
      "worker queue wait p99 | hog calls/s | hog MiB/s | poold CPU |\n");
  std::printf(
      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | "
      "---: |\n");
  std::vector<std::string> phases = {""};
  for (const std::string& hog : absl::GetFlag(FLAGS_hogs)) {
    phases.push_back(hog);
  }
  int64_t idle_p99 = 0;
  bool failed = false;
  for (const std::string& hog : phases) {
    PhaseResult result = RunPhase(target, (*server)->pid(), small, small_data,
                                  large, hog, scratch);
    const LatencySummary summary = Summarize(result.latencies_ns);
    if (hog.empty()) idle_p99 = summary.p99_ns;
    const double calls_per_second = result.hog_calls / result.seconds;
    std::printf(
        "| %s | %llu | %s | %s | %s | %s | %.2f | %s | %.1f | %.0f | %.2f "
        "cores |\n",
        hog.empty() ? "none (idle)" : hog.c_str(),
        static_cast<unsigned long long>(summary.count),
        FormatLatency(summary.p50_ns).c_str(),
        FormatLatency(summary.p99_ns).c_str(),
        FormatLatency(summary.p999_ns).c_str(),
        FormatLatency(summary.max_ns).c_str(),
        idle_p99 > 0 ? static_cast<double>(summary.p99_ns) / idle_p99 : 0.0,
        result.queue_wait_p99.c_str(), calls_per_second,
        calls_per_second * absl::GetFlag(FLAGS_large_mib), result.poold_cpu);
    std::fflush(stdout);
    if (result.errors > 0) {
      std::fprintf(stderr, "stall_bench: %llu reads returned wrong bytes\n",
                   static_cast<unsigned long long>(result.errors));
      failed = true;
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(scratch, ignored);
  return failed ? 1 : 0;
}

}  // namespace
}  // namespace poold::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "How much large blocks delay other clients' small reads.");
  absl::ParseCommandLine(argc, argv);
  if (!absl::GetFlag(FLAGS_as_hog).empty()) {
    return poold::bench::RunHog(absl::GetFlag(FLAGS_as_hog));
  }
  return poold::bench::Main();
}
