// service_bench: what poold's channel, worker and engine add to gRPC's own
// cost of a unary call. It starts one poold_bench_server (the real
// PooldServer plus the no-op poold.bench.v1.Noop service) serving loopback
// TCP and a unix socket, and for each transport and number N of concurrent
// client streams runs, back to back:
//
//   Ping      Noop/Ping returning 100 bytes: gRPC alone (the baseline)
//   Allocate  a 100-byte block with its 100 bytes of data
//   Read      a whole 100-byte block allocated by the Allocate phase
//   Free      the blocks of the Allocate phase, each once
//
// Each phase keeps N calls in flight (a stream starts its next call when
// the last one completes, through gRPC's callback API) for a warm-up, then
// for the measured time; it records every call that started and completed
// inside the measured window. Streams share channels (each its own
// connection), --streams_per_channel to a channel. The whole sequence runs
// --rounds times; the table gives the median calls/s of the rounds,
// percentiles over all rounds' calls, and the median over rounds of
// calls/s divided by the same round's Ping calls/s (measured seconds
// before, on the same connections).
//
//   service_bench [--server=PATH] [--transports=tcp,unix] [--streams=1,8,64]
//                 [--seconds=1] [--warmup_seconds=0.3] [--rounds=5]
//                 [--json=FILE] [--tls_certs=DIR]
//
// Prints a Markdown table; exits 1 if any call failed.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/blocking_counter.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "noop.grpc.pb.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/bench/bench_stats.h"
#include "tests/bench/server_process.h"

ABSL_FLAG(std::string, server, POOLD_BENCH_SERVER_PATH,
          "Path of poold_bench_server.");
ABSL_FLAG(std::vector<std::string>, transports,
          std::vector<std::string>({"tcp", "unix"}),
          "Transports to measure: tcp (loopback), unix (unix socket).");
ABSL_FLAG(std::vector<std::string>, streams,
          std::vector<std::string>({"1", "8", "64"}),
          "Numbers of concurrent client streams (calls in flight).");
ABSL_FLAG(double, seconds, 1, "Measured time of each phase, in seconds.");
ABSL_FLAG(double, warmup_seconds, 0.3,
          "Unmeasured time at the start of each phase, in seconds.");
ABSL_FLAG(int, rounds, 5, "Times the whole sequence runs.");
ABSL_FLAG(int, streams_per_channel, 8,
          "Streams sharing one channel (one connection each).");
ABSL_FLAG(int, payload_bytes, 100,
          "Bytes of Allocate's data, of each block read, of Ping's response.");
ABSL_FLAG(std::vector<std::string>, server_flags, {},
          "More flags for the server, comma-separated.");
ABSL_FLAG(std::string, json, "", "Also write the results to this file.");
ABSL_FLAG(std::string, tls_certs, "",
          "A folder made by tests/e2e/make_test_certs.sh: the server's TCP "
          "listener then speaks TLS (server.pem, server.key) and the tcp "
          "transport's clients trust ca.pem; empty: plaintext.");

namespace poold::bench {
namespace {

using Clock = std::chrono::steady_clock;
// Both protos have a package v1: poold.v1 and poold.bench.v1.
namespace pool_v1 = ::poold::v1;
namespace noop_v1 = ::poold::bench::v1;

enum class Rpc { kPing, kAllocate, kRead, kFree };
constexpr Rpc kRpcs[] = {Rpc::kPing, Rpc::kAllocate, Rpc::kRead, Rpc::kFree};

const char* RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kPing:
      return "Ping";
    case Rpc::kAllocate:
      return "Allocate";
    case Rpc::kRead:
      return "Read";
    case Rpc::kFree:
      return "Free";
  }
  return "?";
}

// Deadline of every call: far above any latency, so it only ends a hang.
constexpr auto kCallTimeout = std::chrono::seconds(30);

// A channel with its own connection, and its stubs.
struct Connection {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pool_v1::PoolService::Stub> pool;
  std::unique_ptr<noop_v1::Noop::Stub> noop;
};

// Opens `count` channels to `target`, each with its own connection (a local
// subchannel pool, so gRPC does not share one connection among them), and
// waits until each is connected.
absl::StatusOr<std::vector<Connection>> Connect(
    const std::string& target, int count,
    const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
  std::vector<Connection> connections;
  for (int i = 0; i < count; ++i) {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    Connection c;
    c.channel = grpc::CreateCustomChannel(target, credentials, args);
    if (!c.channel->WaitForConnected(std::chrono::system_clock::now() +
                                     std::chrono::seconds(30))) {
      return absl::UnavailableError(absl::StrCat("cannot connect to ", target));
    }
    c.pool = pool_v1::PoolService::NewStub(c.channel);
    c.noop = noop_v1::Noop::NewStub(c.channel);
    connections.push_back(std::move(c));
  }
  return connections;
}

// What one phase measured.
struct PhaseResult {
  double calls_per_second = 0;
  // Length of the measured window (shorter than asked when a Free phase ran
  // out of blocks).
  double window_seconds = 0;
  std::vector<int64_t> latencies_ns;
  // CPU time the server used during the nominal measured window; -1 when
  // unknown.
  int64_t server_cpu_ns = -1;
  uint64_t errors = 0;
  std::string first_error;
};

// One phase: `streams` loops of calls of one kind, for a warm-up and a
// measured time. Thread-compatible; Run() once.
class Phase {
 public:
  struct Config {
    Rpc rpc = Rpc::kPing;
    int streams = 1;
    int streams_per_channel = 8;
    absl::Duration warmup;
    // InfiniteDuration(): until the blocks to free run out, unmeasured (the
    // clean-up of the blocks a Free phase did not reach).
    absl::Duration measure;
    int payload_bytes = 100;
    // The server's process id, to measure its CPU time; 0: do not.
    int server_pid = 0;
  };

  // `connections` must hold ceil(streams / streams_per_channel) entries.
  // `handles`: Read reads random ones (REQUIRES: not empty); Free frees
  // each once, from the first; Allocate appends the handles it allocated.
  Phase(const Config& config, std::vector<Connection>* connections,
        std::vector<uint64_t>* handles)
      : config_(config), connections_(connections), handles_(handles) {}

  // Runs the phase and waits for every call. For Free, `handles` loses the
  // blocks freed (failed frees included: they are not retried).
  PhaseResult Run();

 private:
  class Stream;
  friend class Stream;

  // A Free stream found no block left at `when`.
  void MarkExhausted(Clock::time_point when) {
    int64_t expected = kNever;
    const int64_t t = when.time_since_epoch().count();
    exhausted_at_.compare_exchange_strong(expected, t);
  }

  static constexpr int64_t kNever = INT64_MAX;

  const Config config_;
  std::vector<Connection>* const connections_;
  std::vector<uint64_t>* const handles_;
  std::string payload_;
  Clock::time_point measure_start_;
  Clock::time_point end_;
  std::atomic<size_t> next_free_{0};
  std::atomic<int64_t> exhausted_at_{kNever};
  absl::BlockingCounter* finished_ = nullptr;
};

// One stream: one call in flight at a time; the completion callback (on a
// gRPC thread) records the call and starts the next. Only that chain of
// callbacks touches a stream's members until the phase ends.
class Phase::Stream {
 public:
  Stream(Phase* phase, Connection* connection, uint64_t seed)
      : phase_(phase), connection_(connection), rng_(seed | 1) {
    ping_request_.set_response_bytes(phase->config_.payload_bytes);
    allocate_request_.set_size(phase->config_.payload_bytes);
    allocate_request_.set_data(phase->payload_);
  }

  // Starts the next call, or finishes the stream when the phase is over.
  void Issue() {
    const Clock::time_point now = Clock::now();
    if (now >= phase_->end_) return Finish();
    const std::vector<uint64_t>& handles = *phase_->handles_;
    switch (phase_->config_.rpc) {
      case Rpc::kRead:
        read_request_.set_handle(handles[NextRandom() % handles.size()]);
        break;
      case Rpc::kFree: {
        const size_t i = phase_->next_free_.fetch_add(1);
        if (i >= handles.size()) {
          phase_->MarkExhausted(now);
          return Finish();
        }
        free_request_.set_handle(handles[i]);
        break;
      }
      default:
        break;
    }
    context_ = std::make_unique<grpc::ClientContext>();
    context_->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
    auto done = [this](grpc::Status status) { OnDone(status); };
    start_ = Clock::now();
    switch (phase_->config_.rpc) {
      case Rpc::kPing:
        connection_->noop->async()->Ping(context_.get(), &ping_request_,
                                         &ping_response_, done);
        break;
      case Rpc::kAllocate:
        connection_->pool->async()->Allocate(context_.get(), &allocate_request_,
                                             &allocate_response_, done);
        break;
      case Rpc::kRead:
        connection_->pool->async()->Read(context_.get(), &read_request_,
                                         &read_response_, done);
        break;
      case Rpc::kFree:
        connection_->pool->async()->Free(context_.get(), &free_request_,
                                         &free_response_, done);
        break;
    }
  }

  // Calls that started at or after the measured window's start and
  // completed before its end: completion time and latency.
  struct Sample {
    Clock::time_point done;
    int64_t latency_ns;
  };
  const std::vector<Sample>& samples() const { return samples_; }
  const std::vector<uint64_t>& allocated() const { return allocated_; }
  uint64_t errors() const { return errors_; }
  const std::string& first_error() const { return first_error_; }

 private:
  void OnDone(const grpc::Status& status) {
    const Clock::time_point now = Clock::now();
    bool ok = status.ok();
    if (ok) {
      switch (phase_->config_.rpc) {
        case Rpc::kAllocate:
          allocated_.push_back(allocate_response_.handle());
          break;
        case Rpc::kRead:
          if (read_response_.data().size() !=
              static_cast<size_t>(phase_->config_.payload_bytes)) {
            ok = false;
            RecordError(
                absl::StrCat("Read returned ", read_response_.data().size(),
                             " bytes, not ", phase_->config_.payload_bytes));
          }
          break;
        default:
          break;
      }
    } else {
      RecordError(absl::StrCat(RpcName(phase_->config_.rpc), ": code ",
                               status.error_code(), ": ",
                               status.error_message()));
    }
    if (ok && start_ >= phase_->measure_start_ && now <= phase_->end_) {
      samples_.push_back(
          {now,
           std::chrono::duration_cast<std::chrono::nanoseconds>(now - start_)
               .count()});
    }
    Issue();
  }

  void RecordError(std::string message) {
    if (errors_++ == 0) first_error_ = std::move(message);
  }

  void Finish() { phase_->finished_->DecrementCount(); }

  // xorshift64: cheap, and a stream's own.
  uint64_t NextRandom() {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    return rng_;
  }

  Phase* const phase_;
  Connection* const connection_;
  uint64_t rng_;
  std::unique_ptr<grpc::ClientContext> context_;
  Clock::time_point start_;
  noop_v1::PingRequest ping_request_;
  noop_v1::PingResponse ping_response_;
  pool_v1::AllocateRequest allocate_request_;
  pool_v1::AllocateResponse allocate_response_;
  pool_v1::ReadRequest read_request_;
  pool_v1::ReadResponse read_response_;
  pool_v1::FreeRequest free_request_;
  pool_v1::FreeResponse free_response_;
  std::vector<Sample> samples_;
  std::vector<uint64_t> allocated_;
  uint64_t errors_ = 0;
  std::string first_error_;
};

PhaseResult Phase::Run() {
  if (config_.rpc == Rpc::kRead && handles_->empty()) {
    PhaseResult result;
    result.errors = 1;
    result.first_error = "no block to read: the Allocate phase allocated none";
    return result;
  }
  payload_.assign(config_.payload_bytes, 'd');
  const bool unbounded = config_.measure == absl::InfiniteDuration();
  const Clock::time_point start = Clock::now();
  measure_start_ = start + absl::ToChronoNanoseconds(config_.warmup);
  end_ = unbounded
             ? Clock::time_point::max()
             : measure_start_ + absl::ToChronoNanoseconds(config_.measure);

  absl::BlockingCounter finished(config_.streams);
  finished_ = &finished;
  std::vector<std::unique_ptr<Stream>> streams;
  for (int i = 0; i < config_.streams; ++i) {
    Connection* c = &(*connections_)[i / config_.streams_per_channel];
    streams.push_back(std::make_unique<Stream>(this, c, 0x9e3779b9u * (i + 1)));
  }
  for (auto& s : streams) s->Issue();
  int64_t cpu_start = -1, cpu_end = -1;
  if (!unbounded && config_.server_pid > 0) {
    std::this_thread::sleep_until(measure_start_);
    cpu_start = ProcessCpuNanos(config_.server_pid);
    std::this_thread::sleep_until(end_);
    cpu_end = ProcessCpuNanos(config_.server_pid);
  }
  finished.Wait();

  PhaseResult result;
  if (cpu_start >= 0 && cpu_end >= 0) {
    result.server_cpu_ns = cpu_end - cpu_start;
  }
  Clock::time_point window_end = end_;
  const int64_t exhausted = exhausted_at_.load();
  if (exhausted != kNever) {
    window_end =
        std::min(window_end, Clock::time_point(Clock::duration(exhausted)));
  }
  for (const auto& s : streams) {
    for (const Stream::Sample& sample : s->samples()) {
      if (sample.done <= window_end) {
        result.latencies_ns.push_back(sample.latency_ns);
      }
    }
    if (config_.rpc == Rpc::kAllocate) {
      handles_->insert(handles_->end(), s->allocated().begin(),
                       s->allocated().end());
    }
    if (s->errors() > 0 && result.errors == 0) {
      result.first_error = s->first_error();
    }
    result.errors += s->errors();
  }
  if (config_.rpc == Rpc::kFree) {
    const size_t freed = std::min(next_free_.load(), handles_->size());
    handles_->erase(handles_->begin(), handles_->begin() + freed);
  }
  if (!unbounded) {
    result.window_seconds =
        std::chrono::duration<double>(window_end - measure_start_).count();
    if (result.window_seconds <= 0) {
      if (result.errors++ == 0) {
        result.first_error = "ran out of blocks to free during the warm-up";
      }
    } else {
      result.calls_per_second =
          result.latencies_ns.size() / result.window_seconds;
    }
  }
  return result;
}

// Results of one (transport, N, RPC) cell over all rounds.
struct Cell {
  std::vector<double> rates;   // calls/s per round
  std::vector<double> ratios;  // calls/s / Ping calls/s of the same round
  std::vector<double> windows;
  std::vector<int64_t> latencies_ns;
  // Server CPU time and calls of the rounds whose CPU time is known.
  int64_t server_cpu_ns = 0;
  uint64_t cpu_calls = 0;
  uint64_t errors = 0;
  std::string first_error;
};

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int Main() {
  const int streams_per_channel = absl::GetFlag(FLAGS_streams_per_channel);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int payload_bytes = absl::GetFlag(FLAGS_payload_bytes);
  const absl::Duration warmup =
      absl::Seconds(absl::GetFlag(FLAGS_warmup_seconds));
  const absl::Duration measure = absl::Seconds(absl::GetFlag(FLAGS_seconds));
  std::vector<int> stream_counts;
  for (const std::string& s : absl::GetFlag(FLAGS_streams)) {
    int n = 0;
    if (!absl::SimpleAtoi(s, &n) || n < 1) {
      std::fprintf(stderr, "--streams: bad number \"%s\"\n", s.c_str());
      return 1;
    }
    stream_counts.push_back(n);
  }
  const std::vector<std::string> transports = absl::GetFlag(FLAGS_transports);
  for (const std::string& t : transports) {
    if (t != "tcp" && t != "unix") {
      std::fprintf(stderr, "--transports: \"%s\" is not tcp or unix\n",
                   t.c_str());
      return 1;
    }
  }
  if (streams_per_channel < 1 || rounds < 1 || payload_bytes < 1 ||
      stream_counts.empty() || transports.empty() ||
      measure <= absl::ZeroDuration() || warmup < absl::ZeroDuration()) {
    std::fprintf(stderr,
                 "--streams_per_channel, --rounds, --payload_bytes and "
                 "--seconds must be positive, --warmup_seconds not negative\n");
    return 1;
  }

  ServerProcess::Options server_options;
  server_options.binary = absl::GetFlag(FLAGS_server);
  server_options.tcp = true;
  server_options.unix_socket = true;
  server_options.extra_flags = absl::GetFlag(FLAGS_server_flags);
  std::shared_ptr<grpc::ChannelCredentials> tcp_credentials =
      grpc::InsecureChannelCredentials();
  if (const std::string certs = absl::GetFlag(FLAGS_tls_certs);
      !certs.empty()) {
    server_options.extra_flags.push_back(
        absl::StrCat("--tls_cert_file=", certs, "/server.pem"));
    server_options.extra_flags.push_back(
        absl::StrCat("--tls_key_file=", certs, "/server.key"));
    std::ifstream ca_file(absl::StrCat(certs, "/ca.pem"));
    std::stringstream ca;
    ca << ca_file.rdbuf();
    if (!ca_file || ca.str().empty()) {
      std::fprintf(stderr, "--tls_certs: cannot read %s/ca.pem\n",
                   certs.c_str());
      return 1;
    }
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca.str();
    tcp_credentials = grpc::SslCredentials(ssl);
  }
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(server_options);
  if (!server.ok()) {
    std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
    return 1;
  }

  const int max_streams =
      *std::max_element(stream_counts.begin(), stream_counts.end());
  const int max_channels =
      (max_streams + streams_per_channel - 1) / streams_per_channel;
  std::map<std::string, std::vector<Connection>> connections;
  for (const std::string& t : transports) {
    absl::StatusOr<std::vector<Connection>> c =
        t == "tcp"
            ? Connect((*server)->tcp_target(), max_channels, tcp_credentials)
            : Connect((*server)->unix_target(), max_channels,
                      grpc::InsecureChannelCredentials());
    if (!c.ok()) {
      std::fprintf(stderr, "%s\n", c.status().ToString().c_str());
      return 1;
    }
    connections[t] = *std::move(c);
  }

  const std::string load_before = LoadAverage();
  const absl::Time started = absl::Now();
  std::map<std::tuple<std::string, int, Rpc>, Cell> cells;
  for (int round = 0; round < rounds; ++round) {
    for (const std::string& t : transports) {
      for (int n : stream_counts) {
        std::vector<uint64_t> handles;
        double ping_rate = 0;
        for (Rpc rpc : kRpcs) {
          Phase::Config config;
          config.rpc = rpc;
          config.streams = n;
          config.streams_per_channel = streams_per_channel;
          config.warmup = warmup;
          config.measure = measure;
          config.payload_bytes = payload_bytes;
          config.server_pid = (*server)->pid();
          PhaseResult r = Phase(config, &connections[t], &handles).Run();
          if (rpc == Rpc::kPing) ping_rate = r.calls_per_second;
          Cell& cell = cells[{t, n, rpc}];
          cell.rates.push_back(r.calls_per_second);
          cell.ratios.push_back(ping_rate > 0 ? r.calls_per_second / ping_rate
                                              : 0);
          cell.windows.push_back(r.window_seconds);
          if (r.server_cpu_ns >= 0) {
            cell.server_cpu_ns += r.server_cpu_ns;
            cell.cpu_calls += r.latencies_ns.size();
          }
          cell.latencies_ns.insert(cell.latencies_ns.end(),
                                   r.latencies_ns.begin(),
                                   r.latencies_ns.end());
          if (r.errors > 0 && cell.errors == 0) {
            cell.first_error = r.first_error;
          }
          cell.errors += r.errors;
          std::fprintf(stderr, "round %d %s N=%d %s: %.0f calls/s\n", round + 1,
                       t.c_str(), n, RpcName(rpc), r.calls_per_second);
        }
        if (!handles.empty()) {
          // Blocks the Free phase did not reach: free them, unmeasured, so
          // the server's memory stays bounded.
          Phase::Config config;
          config.rpc = Rpc::kFree;
          config.streams = n;
          config.streams_per_channel = streams_per_channel;
          config.measure = absl::InfiniteDuration();
          PhaseResult r = Phase(config, &connections[t], &handles).Run();
          if (r.errors > 0) {
            std::fprintf(stderr, "clean-up: %s\n", r.first_error.c_str());
            cells[{t, n, Rpc::kFree}].errors += r.errors;
          }
        }
      }
    }
  }
  const absl::Duration elapsed = absl::Now() - started;
  const std::string load_after = LoadAverage();
  connections.clear();
  absl::StatusOr<int> exit_code = (*server)->Stop();

  std::printf(
      "service_bench: %s; poold_bench_server (PooldServer + Noop), default "
      "flags%s%s\n",
      MachineDescription().c_str(),
      server_options.extra_flags.empty() ? "" : " and ",
      absl::StrJoin(server_options.extra_flags, " ").c_str());
  std::printf(
      "%d round(s) x (%s warm-up + %s measured) per phase, %d streams per "
      "channel, %d-byte payloads; took %s; load average %s before, %s "
      "after\n\n",
      rounds, absl::FormatDuration(warmup).c_str(),
      absl::FormatDuration(measure).c_str(), streams_per_channel, payload_bytes,
      absl::FormatDuration(absl::Trunc(elapsed, absl::Seconds(1))).c_str(),
      load_before.c_str(), load_after.c_str());
  std::printf(
      "| transport | N | channels | RPC | calls/s | p50 | p99 | ratio to Ping "
      "| server CPU/call |\n|---|---|---|---|---|---|---|---|---|\n");
  std::vector<std::string> misses;
  uint64_t errors = 0;
  std::string json = "[\n";
  for (const std::string& t : transports) {
    for (int n : stream_counts) {
      for (Rpc rpc : kRpcs) {
        Cell& cell = cells[{t, n, rpc}];
        const LatencySummary lat = Summarize(cell.latencies_ns);
        const double ratio = Median(cell.ratios);
        const double rate = Median(cell.rates);
        const int channels =
            (n + streams_per_channel - 1) / streams_per_channel;
        const double cpu_per_call_ns =
            cell.cpu_calls > 0 ? static_cast<double>(cell.server_cpu_ns) /
                                     static_cast<double>(cell.cpu_calls)
                               : 0;
        std::printf(
            "| %s | %d | %d | %s | %s | %s | %s | %s | %s |\n", t.c_str(), n,
            channels, RpcName(rpc), FormatRate(rate).c_str(),
            FormatLatency(lat.p50_ns).c_str(),
            FormatLatency(lat.p99_ns).c_str(),
            rpc == Rpc::kPing ? "1.00 (baseline)"
                              : absl::StrFormat("%.2f", ratio).c_str(),
            cell.cpu_calls > 0
                ? FormatLatency(static_cast<int64_t>(cpu_per_call_ns)).c_str()
                : "?");
        if (rpc != Rpc::kPing && ratio < 0.8) {
          misses.push_back(
              absl::StrFormat("%s N=%d %s (%.2f)", t, n, RpcName(rpc), ratio));
        }
        if (cell.errors > 0) {
          std::fprintf(stderr, "%s N=%d %s: %llu failed calls, first: %s\n",
                       t.c_str(), n, RpcName(rpc),
                       static_cast<unsigned long long>(cell.errors),
                       cell.first_error.c_str());
        }
        errors += cell.errors;
        absl::StrAppendFormat(
            &json,
            "  {\"transport\": \"%s\", \"streams\": %d, \"channels\": %d, "
            "\"rpc\": \"%s\", \"calls_per_second\": %.1f, "
            "\"rates_per_round\": [%s], \"ratio_to_ping\": %.4f, "
            "\"ratios_per_round\": [%s], \"windows_s\": [%s], "
            "\"calls\": %llu, \"p50_ns\": %lld, \"p90_ns\": %lld, "
            "\"p99_ns\": %lld, \"max_ns\": %lld, "
            "\"server_cpu_ns_per_call\": %.0f, \"errors\": %llu},\n",
            t, n, channels, RpcName(rpc), rate,
            absl::StrJoin(cell.rates, ", ",
                          [](std::string* out, double v) {
                            absl::StrAppendFormat(out, "%.1f", v);
                          }),
            rpc == Rpc::kPing ? 1.0 : ratio,
            absl::StrJoin(cell.ratios, ", ",
                          [](std::string* out, double v) {
                            absl::StrAppendFormat(out, "%.4f", v);
                          }),
            absl::StrJoin(cell.windows, ", ",
                          [](std::string* out, double v) {
                            absl::StrAppendFormat(out, "%.3f", v);
                          }),
            static_cast<unsigned long long>(lat.count),
            static_cast<long long>(lat.p50_ns),
            static_cast<long long>(lat.p90_ns),
            static_cast<long long>(lat.p99_ns),
            static_cast<long long>(lat.max_ns), cpu_per_call_ns,
            static_cast<unsigned long long>(cell.errors));
      }
    }
  }
  if (json.size() > 2) json.erase(json.size() - 2, 1);  // the last comma
  json += "]\n";
  std::printf(
      "\nN: calls in flight; calls/s: median of the rounds; p50/p99: over "
      "every measured call of all rounds; ratio: median over rounds of "
      "calls/s / Ping calls/s of the same round; server CPU/call: the "
      "server process's user + system CPU time in the measured windows "
      "(from /proc, 10 ms ticks) over the calls completed in them, all "
      "rounds.\n");
  std::printf("Target (every RPC >= 0.8 x Ping's calls/s): %s\n",
              misses.empty()
                  ? "met"
                  : ("missed on " + absl::StrJoin(misses, ", ")).c_str());
  if (!exit_code.ok() || *exit_code != 0) {
    std::fprintf(stderr, "poold_bench_server did not stop cleanly: %s\n",
                 exit_code.ok() ? absl::StrCat("exit code ", *exit_code).c_str()
                                : exit_code.status().ToString().c_str());
  }
  const std::string json_path = absl::GetFlag(FLAGS_json);
  if (!json_path.empty()) std::ofstream(json_path) << json;
  if (errors > 0) {
    std::fprintf(stderr, "service_bench: %llu calls failed\n",
                 static_cast<unsigned long long>(errors));
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace poold::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Cost of poold's Allocate, Read and Free beside a no-op RPC of the same "
      "server build, over loopback TCP and a unix socket.");
  absl::ParseCommandLine(argc, argv);
  return poold::bench::Main();
}
