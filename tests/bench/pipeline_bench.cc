// pipeline_bench: stores and reads of 100-byte values against poold and
// Redis side by side, in one run, at pipeline depths 1 to 256 and on 1 and 8
// connections (docs/PERFORMANCE.md, section 9).
//
//   poold  poold_bench_server (the real PooldServer) on loopback TCP. Depth
//          1: unary Allocate and Read; depth D > 1: Batch calls of D
//          allocations or D reads. Each connection has one call in flight.
//   redis  Debian's redis-server on loopback (no persistence), driven by
//          hiredis: D SET (or GET) commands appended, then D replies read.
//
// Each connection is a client thread. A cell (backend, connections, depth,
// operation) runs a warm-up, then a measured window; ops/s counts the
// operations completed in it, server CPU/op is the server process's user +
// system time in the window over those operations. Stores make new blocks
// (keys); each thread frees (DELs) them after the read phase, untimed.
#include <arpa/inet.h>
#include <hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/bench/bench_stats.h"
#include "tests/bench/server_process.h"
#include "tests/support/subprocess.h"

ABSL_FLAG(std::string, server, POOLD_BENCH_SERVER_PATH,
          "poold_bench_server binary.");
ABSL_FLAG(std::string, redis_server, "/usr/bin/redis-server",
          "Debian's redis-server.");
ABSL_FLAG(std::string, connections, "1,8", "Connection counts.");
ABSL_FLAG(std::string, depths, "1,16,64,256",
          "Pipeline depths: operations per batch (poold) or commands per "
          "pipeline (redis).");
ABSL_FLAG(double, seconds, 1.0, "Measured window of each cell.");
ABSL_FLAG(double, warmup_seconds, 0.3, "Warm-up before each window.");
ABSL_FLAG(int, value_bytes, 100, "Value size.");
ABSL_FLAG(std::string, json, "",
          "Also write every cell here as JSON (for plot_pipeline.py).");

namespace poold::bench {
namespace {

enum class Op { kStore, kRead };

struct Cell {
  std::string backend;
  int connections = 0;
  int depth = 0;
  Op op = Op::kStore;
  uint64_t ops = 0;
  double seconds = 0;
  int64_t server_cpu_ns = -1;
  std::string error;
};

std::vector<int> ParseInts(const std::string& text) {
  std::vector<int> values;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int value = 0;
    if (absl::SimpleAtoi(part, &value) && value > 0) values.push_back(value);
  }
  return values;
}

// One client connection's work in a cell: runs `step` (one pipeline or
// batch; returns operations done, or -1 on error) until told to stop, and
// counts what completed inside the measured window.
struct Window {
  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0};
  std::atomic<bool> failed{false};
};

// Runs `clients` threads, each calling step(thread) in a loop, with a
// warm-up and a measured window; fills `cell`.
template <typename Step>
void Measure(int clients, int server_pid, Step step, Cell* cell) {
  Window window;
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      while (!window.stop.load(std::memory_order_relaxed)) {
        const bool counted = window.measuring.load(std::memory_order_acquire);
        const int64_t done = step(t);
        if (done < 0) {
          window.failed.store(true);
          return;
        }
        // Only batches that began and ended inside the window count.
        if (counted && window.measuring.load(std::memory_order_acquire)) {
          window.ops.fetch_add(done, std::memory_order_relaxed);
        }
      }
    });
  }
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_warmup_seconds)));
  const int64_t cpu_start = ProcessCpuNanos(server_pid);
  const absl::Time start = absl::Now();
  window.measuring.store(true, std::memory_order_release);
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_seconds)));
  window.measuring.store(false, std::memory_order_release);
  const absl::Time end = absl::Now();
  const int64_t cpu_end = ProcessCpuNanos(server_pid);
  window.stop.store(true);
  for (std::thread& thread : threads) thread.join();
  cell->ops = window.ops.load();
  cell->seconds = absl::ToDoubleSeconds(end - start);
  if (cpu_start >= 0 && cpu_end >= 0) cell->server_cpu_ns = cpu_end - cpu_start;
  if (window.failed.load()) cell->error = "a call failed";
}

// ---- poold ---------------------------------------------------------------

class PooldClients {
 public:
  // `stream`: every batch (depth 1 too) goes over one BatchStream per
  // connection instead of a Batch call each.
  PooldClients(const std::string& target, int clients, bool stream)
      : stream_(stream) {
    streams_.resize(clients);
    for (int t = 0; t < clients; ++t) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // own connection
      args.SetMaxReceiveMessageSize(128 << 20);
      stubs_.push_back(v1::PoolService::NewStub(grpc::CreateCustomChannel(
          target, grpc::InsecureChannelCredentials(), args)));
      handles_.emplace_back();
      random_.emplace_back(t + 1);
    }
  }

  ~PooldClients() {
    for (Stream& stream : streams_) {
      if (stream.rw == nullptr) continue;
      stream.rw->WritesDone();
      (void)stream.rw->Finish();
    }
  }

  // One store step of thread t: `depth` new 100-byte blocks.
  int64_t Store(int t, int depth, const std::string& value) {
    grpc::ClientContext context;
    if (depth == 1 && !stream_) {
      v1::AllocateRequest request;
      request.set_data(value);
      v1::AllocateResponse response;
      if (!stubs_[t]->Allocate(&context, request, &response).ok()) return -1;
      handles_[t].push_back(response.handle());
      return 1;
    }
    v1::BatchRequest request;
    for (int i = 0; i < depth; ++i) {
      request.add_operations()->mutable_allocate()->set_data(value);
    }
    v1::BatchResponse response;
    if (!Exchange(t, &context, request, &response)) return -1;
    for (const v1::BatchResult& result : response.results()) {
      if (result.code() != 0) return -1;
      handles_[t].push_back(result.allocate().handle());
    }
    return depth;
  }

  // One read step of thread t: `depth` reads of its blocks at random.
  int64_t Read(int t, int depth) {
    std::vector<uint64_t>& mine = handles_[t];
    if (mine.empty()) return -1;
    std::uniform_int_distribution<size_t> pick(0, mine.size() - 1);
    grpc::ClientContext context;
    if (depth == 1 && !stream_) {
      v1::ReadRequest request;
      request.set_handle(mine[pick(random_[t])]);
      v1::ReadResponse response;
      if (!stubs_[t]->Read(&context, request, &response).ok()) return -1;
      return 1;
    }
    v1::BatchRequest request;
    for (int i = 0; i < depth; ++i) {
      request.add_operations()->mutable_read()->set_handle(
          mine[pick(random_[t])]);
    }
    v1::BatchResponse response;
    if (!Exchange(t, &context, request, &response)) return -1;
    for (const v1::BatchResult& result : response.results()) {
      if (result.code() != 0) return -1;
    }
    return depth;
  }

  // Frees every block of every thread (untimed).
  void FreeAll() {
    for (size_t t = 0; t < stubs_.size(); ++t) {
      std::vector<uint64_t>& mine = handles_[t];
      for (size_t i = 0; i < mine.size(); i += 1024) {
        v1::BatchRequest request;
        for (size_t k = i; k < std::min(mine.size(), i + 1024); ++k) {
          request.add_operations()->mutable_free()->set_handle(mine[k]);
        }
        grpc::ClientContext context;
        v1::BatchResponse response;
        (void)stubs_[t]->Batch(&context, request, &response);
      }
      mine.clear();
    }
  }

 private:
  struct Stream {
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<
        grpc::ClientReaderWriter<v1::BatchRequest, v1::BatchResponse>>
        rw;
  };

  // One batch of thread t: a Batch call (`context` is the call's), or a
  // request and its answer on the thread's stream.
  bool Exchange(int t, grpc::ClientContext* context,
                const v1::BatchRequest& request, v1::BatchResponse* response) {
    if (!stream_) return stubs_[t]->Batch(context, request, response).ok();
    Stream& stream = streams_[t];
    if (stream.rw == nullptr) {
      stream.context = std::make_unique<grpc::ClientContext>();
      stream.rw = stubs_[t]->BatchStream(stream.context.get());
    }
    return stream.rw->Write(request) && stream.rw->Read(response);
  }

  const bool stream_;
  std::vector<Stream> streams_;
  std::vector<std::unique_ptr<v1::PoolService::Stub>> stubs_;
  std::vector<std::vector<uint64_t>> handles_;
  std::vector<std::mt19937_64> random_;
};

// ---- redis ---------------------------------------------------------------

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

class RedisClients {
 public:
  RedisClients(int port, int clients) {
    for (int t = 0; t < clients; ++t) {
      redisContext* c = nullptr;
      for (int i = 0; i < 200 && c == nullptr; ++i) {
        c = redisConnect("127.0.0.1", port);
        if (c != nullptr && c->err != 0) {
          redisFree(c);
          c = nullptr;
          absl::SleepFor(absl::Milliseconds(50));
        }
      }
      contexts_.push_back(c);
      keys_.push_back(0);
      random_.emplace_back(t + 1);
    }
  }
  ~RedisClients() {
    for (redisContext* c : contexts_) {
      if (c != nullptr) redisFree(c);
    }
  }
  bool ok() const {
    for (redisContext* c : contexts_) {
      if (c == nullptr) return false;
    }
    return true;
  }

  // Reads `count` replies; false on an error.
  bool Replies(int t, int count) {
    for (int i = 0; i < count; ++i) {
      void* reply = nullptr;
      if (redisGetReply(contexts_[t], &reply) != REDIS_OK) return false;
      const bool error =
          static_cast<redisReply*>(reply)->type == REDIS_REPLY_ERROR;
      freeReplyObject(reply);
      if (error) return false;
    }
    return true;
  }

  int64_t Store(int t, int depth, const std::string& value) {
    for (int i = 0; i < depth; ++i) {
      redisAppendCommand(contexts_[t], "SET k%d:%llu %b", t,
                         static_cast<unsigned long long>(keys_[t]++),
                         value.data(), value.size());
    }
    return Replies(t, depth) ? depth : -1;
  }

  int64_t Read(int t, int depth) {
    if (keys_[t] == 0) return -1;
    std::uniform_int_distribution<uint64_t> pick(0, keys_[t] - 1);
    for (int i = 0; i < depth; ++i) {
      redisAppendCommand(contexts_[t], "GET k%d:%llu", t,
                         static_cast<unsigned long long>(pick(random_[t])));
    }
    return Replies(t, depth) ? depth : -1;
  }

  void FreeAll() {
    if (!contexts_.empty()) {
      freeReplyObject(redisCommand(contexts_[0], "FLUSHALL"));
    }
    for (uint64_t& keys : keys_) keys = 0;
  }

 private:
  std::vector<redisContext*> contexts_;
  std::vector<uint64_t> keys_;
  std::vector<std::mt19937_64> random_;
};

// Runs the store then the read cell of every (connections, depth) on one
// backend, with `make(clients)` creating its clients.
template <typename Clients, typename Make>
void RunBackend(const std::string& backend, int server_pid, Make make,
                std::vector<Cell>* cells) {
  const std::string value(absl::GetFlag(FLAGS_value_bytes), 'v');
  for (int connections : ParseInts(absl::GetFlag(FLAGS_connections))) {
    for (int depth : ParseInts(absl::GetFlag(FLAGS_depths))) {
      std::unique_ptr<Clients> clients = make(connections);
      for (Op op : {Op::kStore, Op::kRead}) {
        Cell cell;
        cell.backend = backend;
        cell.connections = connections;
        cell.depth = depth;
        cell.op = op;
        if (clients == nullptr) {
          cell.error = "cannot connect";
        } else if (op == Op::kStore) {
          Measure(
              connections, server_pid,
              [&](int t) { return clients->Store(t, depth, value); }, &cell);
        } else {
          Measure(
              connections, server_pid,
              [&](int t) { return clients->Read(t, depth); }, &cell);
        }
        std::fprintf(stderr, "%s %d conn depth %d %s: %.0f ops/s %s\n",
                     backend.c_str(), connections, depth,
                     op == Op::kStore ? "store" : "read",
                     cell.seconds > 0 ? cell.ops / cell.seconds : 0.0,
                     cell.error.c_str());
        cells->push_back(cell);
      }
      if (clients != nullptr) clients->FreeAll();
    }
  }
}

const Cell* Find(const std::vector<Cell>& cells, const std::string& backend,
                 int connections, int depth, Op op) {
  for (const Cell& cell : cells) {
    if (cell.backend == backend && cell.connections == connections &&
        cell.depth == depth && cell.op == op) {
      return &cell;
    }
  }
  return nullptr;
}

int Main() {
  std::vector<Cell> cells;
  const std::string load_before = LoadAverage();
  {
    ServerProcess::Options options;
    options.binary = absl::GetFlag(FLAGS_server);
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(options);
    if (!server.ok()) {
      std::fprintf(stderr, "%s\n", server.status().ToString().c_str());
      return 1;
    }
    const std::string target = (*server)->tcp_target();
    for (const bool stream : {false, true}) {
      RunBackend<PooldClients>(
          stream ? "poold-stream" : "poold", (*server)->pid(),
          [&](int clients) {
            return std::make_unique<PooldClients>(target, clients, stream);
          },
          &cells);
    }
    (void)(*server)->Stop();
  }
  {
    const int port = FreePort();
    char dir[] = "/tmp/pipeline-redis.XXXXXX";
    if (mkdtemp(dir) == nullptr) return 1;
    absl::StatusOr<std::unique_ptr<testing::Subprocess>> redis =
        testing::Subprocess::Spawn(
            {absl::GetFlag(FLAGS_redis_server), "--port", absl::StrCat(port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
             dir},
            absl::StrCat(dir, "/redis.log"));
    if (!redis.ok()) {
      std::fprintf(stderr, "%s\n", redis.status().ToString().c_str());
      return 1;
    }
    RunBackend<RedisClients>(
        "redis", (*redis)->pid(),
        [&](int clients) -> std::unique_ptr<RedisClients> {
          auto made = std::make_unique<RedisClients>(port, clients);
          if (!made->ok()) return nullptr;
          return made;
        },
        &cells);
  }
  std::printf("# pipeline_bench: %d-byte values, %.1f s windows\n\n",
              absl::GetFlag(FLAGS_value_bytes), absl::GetFlag(FLAGS_seconds));
  std::printf("Machine: %s; load before %s, after %s\n\n",
              MachineDescription().c_str(), load_before.c_str(),
              LoadAverage().c_str());
  std::printf(
      "| connections | depth | operation | poold ops/s | poold stream ops/s | "
      "redis ops/s | poold / redis | stream / redis | poold server CPU/op | "
      "stream server CPU/op | redis server CPU/op |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int connections : ParseInts(absl::GetFlag(FLAGS_connections))) {
    for (int depth : ParseInts(absl::GetFlag(FLAGS_depths))) {
      for (Op op : {Op::kStore, Op::kRead}) {
        const Cell* p = Find(cells, "poold", connections, depth, op);
        const Cell* q = Find(cells, "poold-stream", connections, depth, op);
        const Cell* r = Find(cells, "redis", connections, depth, op);
        auto rate = [](const Cell* c) {
          return c != nullptr && c->seconds > 0 && c->error.empty()
                     ? c->ops / c->seconds
                     : 0.0;
        };
        auto cpu = [](const Cell* c) -> std::string {
          if (c == nullptr || c->ops == 0 || c->server_cpu_ns < 0) return "?";
          return absl::StrFormat("%.2f us", c->server_cpu_ns / 1e3 / c->ops);
        };
        std::printf(
            "| %d | %d%s | %s | %.0f | %.0f | %.0f | %.2f | %.2f | %s | %s | "
            "%s |\n",
            connections, depth, depth == 1 ? " (unary)" : "",
            op == Op::kStore ? "store" : "read", rate(p), rate(q), rate(r),
            rate(r) > 0 ? rate(p) / rate(r) : 0.0,
            rate(r) > 0 ? rate(q) / rate(r) : 0.0, cpu(p).c_str(),
            cpu(q).c_str(), cpu(r).c_str());
      }
    }
  }
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::string json = "[\n";
    for (size_t i = 0; i < cells.size(); ++i) {
      const Cell& c = cells[i];
      absl::StrAppendFormat(
          &json,
          "  {\"backend\": \"%s\", \"connections\": %d, \"depth\": %d, "
          "\"operation\": \"%s\", \"ops\": %d, \"seconds\": %.6f, "
          "\"server_cpu_ns\": %d, \"error\": \"%s\"}%s\n",
          c.backend, c.connections, c.depth,
          c.op == Op::kStore ? "store" : "read", c.ops, c.seconds,
          c.server_cpu_ns, c.error, i + 1 < cells.size() ? "," : "");
    }
    json += "]\n";
    if (FILE* f = std::fopen(path.c_str(), "w")) {
      std::fputs(json.c_str(), f);
      std::fclose(f);
    }
  }
  std::printf(
      "\nstore: poold Allocate with the value (Batch of `depth` allocations "
      "above depth 1; stream: one BatchStream per connection, one batch of "
      "`depth` in flight, at depth 1 too), redis SET; read: poold Read (Batch "
      "of reads), redis "
      "GET, of keys stored in the store cell, at random. ops/s: operations "
      "completed in the window over its length; server CPU/op: the server "
      "process's user + system CPU time in the window (10 ms ticks) over "
      "those operations.\n");
  return 0;
}

}  // namespace
}  // namespace poold::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Stores and reads of small values against poold (unary calls and "
      "batches) and Redis (pipelines), side by side.");
  absl::ParseCommandLine(argc, argv);
  return poold::bench::Main();
}
