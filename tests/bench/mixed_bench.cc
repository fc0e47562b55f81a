// mixed_bench: how much memory a whole server process holds for a sidecar's
// mixed-size data after cleaning up, against the alternatives, on the same
// sequence (MixedWorkload) at several live sizes:
//
//   poold     the real poold binary over gRPC (64 calls in flight), then
//             TriggerDefragmentation; RSS of the server process minus its RSS
//             when idle (just started)
//   glibc     the sequence with malloc/free in a child process of this
//             binary, then malloc_trim(0); RSS minus the RSS before the run
//   jemalloc  the same child with Debian's libjemalloc2 preloaded, then
//             mallctl("arena.<all>.purge")
//   redis     Debian's redis-server on loopback: SET and DEL of the blocks
//             as values (pipelined), then MEMORY PURGE; RSS minus its idle
//             RSS. Live counts the values' bytes only.
//
// Prints a markdown table of (RSS - idle RSS) / live bytes per backend and
// live size, and writes every figure to --json.
//
//   mixed_bench [--live_mib=16,64,256,1024] [--backends=poold,glibc,...]
//               [--json=mixed.json] [--seed=1]
#include <arpa/inet.h>
#include <dlfcn.h>
#include <hiredis.h>
#include <malloc.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/bench/mixed_workload.h"
#include "tests/bench/server_process.h"
#include "tests/support/subprocess.h"

ABSL_FLAG(std::string, live_mib, "16,64,256,1024",
          "Live data sizes to run, in MiB, comma-separated.");
ABSL_FLAG(std::string, backends, "poold,glibc,jemalloc,redis",
          "Backends to run, comma-separated.");
ABSL_FLAG(std::string, json, "", "Write every figure to this JSON file.");
ABSL_FLAG(uint64_t, seed, 1, "Seed of the sequence (same for every backend).");
ABSL_FLAG(int, window, 64, "RPCs (poold) or commands (redis) in flight.");
ABSL_FLAG(std::string, poold, POOLD_BINARY_PATH, "The poold binary.");
ABSL_FLAG(std::string, poold_flags, "",
          "More poold flags, space-separated (default: poold's defaults).");
ABSL_FLAG(std::string, redis_server, "/usr/bin/redis-server",
          "Debian's redis-server.");
ABSL_FLAG(std::string, jemalloc, "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
          "Debian's libjemalloc2, preloaded for the jemalloc backend.");
ABSL_FLAG(bool, malloc_child, false,
          "Internal: run the sequence with this process's malloc and print "
          "one JSON line.");

namespace poold::bench {
namespace {

constexpr uint64_t kMiB = 1 << 20;

// Resident bytes of process `pid` (/proc/<pid>/statm).
uint64_t RssOf(pid_t pid) {
  std::ifstream statm(absl::StrCat("/proc/", pid, "/statm"));
  uint64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// What one backend did on one live size.
struct Result {
  std::string backend;
  uint64_t live_bytes = 0;
  uint64_t idle_rss = 0;
  // RSS after the sequence, and after the backend's cleanup
  // (defragmentation, trim, purge).
  uint64_t rss_before_cleanup = 0;
  uint64_t rss = 0;
  double seconds = 0;
  // poold only: its pools' resident bytes after the defragmentation.
  uint64_t pools_resident = 0;
  std::string error;

  double Ratio(uint64_t rss_bytes) const {
    return static_cast<double>(rss_bytes - std::min(rss_bytes, idle_rss)) /
           static_cast<double>(live_bytes);
  }
};

// ---- poold ---------------------------------------------------------------

// Runs the sequence against a PoolService with up to `window` calls in
// flight; a free waits for its block's allocation to be answered.
class GrpcDriver {
 public:
  GrpcDriver(v1::PoolService::Stub* stub, const MixedWorkload& workload,
             int window)
      : stub_(stub),
        workload_(workload),
        window_(window),
        handles_(workload.blocks(), 0) {}

  absl::Status Run() {
    std::string data;
    for (const MixedWorkload::Event& event : workload_.events()) {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](GrpcDriver* d) { return d->in_flight_ < d->window_; }, this));
        if (!error_.ok()) break;
        if (!event.allocate) {
          // Its allocation was sent earlier; wait for the handle.
          waiting_for_ = event.block;
          mu_.Await(absl::Condition(this, &GrpcDriver::HandleKnown));
          if (!error_.ok()) break;
        }
        ++in_flight_;
      }
      if (event.allocate) {
        StartAllocate(event.block);
      } else {
        StartFree(event.block);
      }
    }
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](GrpcDriver* d) { return d->in_flight_ == 0; }, this));
    return error_;
  }

 private:
  struct Call {
    grpc::ClientContext context;
    v1::AllocateRequest allocate;
    v1::AllocateResponse allocated;
    v1::FreeRequest free;
    v1::FreeResponse freed;
  };

  void StartAllocate(uint32_t block) {
    auto* call = new Call;
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::seconds(120));
    const uint32_t size = workload_.sizes()[block];
    std::string* data = call->allocate.mutable_data();
    data->resize(size);
    MixedWorkload::Fill(block, size, data->data());
    stub_->async()->Allocate(&call->context, &call->allocate, &call->allocated,
                             [this, call, block](grpc::Status status) {
                               Finish(status, "Allocate", [&] {
                                 handles_[block] = call->allocated.handle();
                               });
                               delete call;
                             });
  }

  void StartFree(uint32_t block) {
    auto* call = new Call;
    call->context.set_deadline(std::chrono::system_clock::now() +
                               std::chrono::seconds(120));
    {
      absl::MutexLock lock(&mu_);
      call->free.set_handle(handles_[block]);
    }
    stub_->async()->Free(&call->context, &call->free, &call->freed,
                         [this, call](grpc::Status status) {
                           Finish(status, "Free", [] {});
                           delete call;
                         });
  }

  bool HandleKnown() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return handles_[waiting_for_] != 0 || !error_.ok();
  }

  template <typename F>
  void Finish(const grpc::Status& status, const char* what, F on_ok) {
    absl::MutexLock lock(&mu_);
    if (status.ok()) {
      on_ok();
    } else if (error_.ok()) {
      error_ =
          absl::InternalError(absl::StrCat(what, ": ", status.error_message()));
    }
    --in_flight_;
  }

  v1::PoolService::Stub* stub_;
  const MixedWorkload& workload_;
  const int window_;
  absl::Mutex mu_;
  int in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<uint64_t> handles_ ABSL_GUARDED_BY(mu_);
  uint32_t waiting_for_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
};

Result RunPoold(const MixedWorkload& workload) {
  Result result;
  result.backend = "poold";
  result.live_bytes = workload.live_bytes();
  ServerProcess::Options options;
  options.binary = absl::GetFlag(FLAGS_poold);
  for (absl::string_view flag : absl::StrSplit(absl::GetFlag(FLAGS_poold_flags),
                                               ' ', absl::SkipEmpty())) {
    options.extra_flags.emplace_back(flag);
  }
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start(options);
  if (!server.ok()) {
    result.error = server.status().ToString();
    return result;
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(128 << 20);
  args.SetMaxSendMessageSize(128 << 20);
  auto channel = grpc::CreateCustomChannel(
      (*server)->tcp_target(), grpc::InsecureChannelCredentials(), args);
  auto stub = v1::PoolService::NewStub(channel);
  {
    // Idle: started, one call answered.
    grpc::ClientContext context;
    v1::GetStatsResponse stats;
    if (!stub->GetStats(&context, v1::GetStatsRequest(), &stats).ok()) {
      result.error = "GetStats failed";
      return result;
    }
    absl::SleepFor(absl::Milliseconds(300));
    result.idle_rss = RssOf((*server)->pid());
    grpc::ClientContext context2;
    if (stub->GetStats(&context2, v1::GetStatsRequest(), &stats).ok()) {
      const v1::ProcessStats& p = stats.process();
      std::fprintf(
          stderr,
          "  poold idle: rss %.2f MiB = pools %.2f + outside %.2f "
          "(anon %.2f, file %.2f; heap in use %.2f, free %.2f MiB)\n",
          p.rss_bytes() / 1048576.0, p.pools_resident_bytes() / 1048576.0,
          p.outside_pools_bytes() / 1048576.0, p.rss_anon_bytes() / 1048576.0,
          p.rss_file_bytes() / 1048576.0, p.heap_in_use_bytes() / 1048576.0,
          p.heap_free_bytes() / 1048576.0);
    }
  }
  const absl::Time start = absl::Now();
  GrpcDriver driver(stub.get(), workload, absl::GetFlag(FLAGS_window));
  if (absl::Status s = driver.Run(); !s.ok()) {
    result.error = s.ToString();
    return result;
  }
  result.rss_before_cleanup = RssOf((*server)->pid());
  {
    grpc::ClientContext context;
    v1::DefragReport report;
    const grpc::Status status = stub->TriggerDefragmentation(
        &context, v1::TriggerDefragmentationRequest(), &report);
    if (!status.ok() || !report.complete()) {
      result.error =
          absl::StrCat("TriggerDefragmentation: ", status.error_message());
      return result;
    }
  }
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  result.rss = RssOf((*server)->pid());
  grpc::ClientContext context;
  v1::GetStatsResponse stats;
  if (stub->GetStats(&context, v1::GetStatsRequest(), &stats).ok()) {
    result.pools_resident = stats.total().resident_bytes();
    const v1::ProcessStats& p = stats.process();
    std::fprintf(
        stderr,
        "  poold: rss %.2f MiB = pools %.2f (small %.2f, medium %.2f, "
        "large %.2f) + outside %.2f (anon %.2f, file %.2f; heap in "
        "use %.2f, free %.2f MiB)\n",
        p.rss_bytes() / 1048576.0, p.pools_resident_bytes() / 1048576.0,
        stats.pools(0).stats().resident_bytes() / 1048576.0,
        stats.pools(1).stats().resident_bytes() / 1048576.0,
        stats.pools(2).stats().resident_bytes() / 1048576.0,
        p.outside_pools_bytes() / 1048576.0, p.rss_anon_bytes() / 1048576.0,
        p.rss_file_bytes() / 1048576.0, p.heap_in_use_bytes() / 1048576.0,
        p.heap_free_bytes() / 1048576.0);
    if (stats.total().live_bytes() != workload.live_bytes()) {
      result.error =
          absl::StrCat("poold holds ", stats.total().live_bytes(),
                       " live bytes, expected ", workload.live_bytes());
    }
  }
  (void)(*server)->Stop();
  return result;
}

// ---- glibc and jemalloc ----------------------------------------------------

// The child: the sequence with this process's malloc; prints one JSON line.
int MallocChild() {
  const uint64_t live = std::stoull(absl::GetFlag(FLAGS_live_mib)) * kMiB;
  const MixedWorkload workload =
      MixedWorkload::Make(live, absl::GetFlag(FLAGS_seed));
  std::vector<char*> blocks(workload.blocks(), nullptr);
  const uint64_t idle = RssOf(getpid());
  const absl::Time start = absl::Now();
  for (const MixedWorkload::Event& event : workload.events()) {
    if (event.allocate) {
      const uint32_t size = workload.sizes()[event.block];
      char* p = static_cast<char*>(std::malloc(size));
      MixedWorkload::Fill(event.block, size, p);
      blocks[event.block] = p;
    } else {
      std::free(blocks[event.block]);
    }
  }
  const uint64_t before = RssOf(getpid());
  // jemalloc exports mallctl; glibc does not.
  using Mallctl = int (*)(const char*, void*, size_t*, void*, size_t);
  auto mallctl = reinterpret_cast<Mallctl>(dlsym(RTLD_DEFAULT, "mallctl"));
  if (mallctl != nullptr) {
    // 4096 is MALLCTL_ARENAS_ALL: every arena.
    mallctl("arena.4096.purge", nullptr, nullptr, nullptr, 0);
  } else {
    malloc_trim(0);
  }
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  absl::PrintF(
      "{\"malloc\": \"%s\", \"live\": %d, \"idle\": %d, \"before\": %d, "
      "\"after\": %d, \"seconds\": %.2f}\n",
      mallctl != nullptr ? "jemalloc" : "glibc", workload.live_bytes(), idle,
      before, RssOf(getpid()), seconds);
  return 0;
}

// Extracts `"key": number` from the child's JSON line.
uint64_t JsonNumber(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\": ");
  if (at == std::string::npos) return 0;
  return std::strtoull(json.c_str() + at + key.size() + 4, nullptr, 10);
}

Result RunMalloc(const std::string& backend, uint64_t live_mib) {
  Result result;
  result.backend = backend;
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) {
    result.error = "cannot find /proc/self/exe";
    return result;
  }
  self[n] = '\0';
  std::vector<std::string> env;
  if (backend == "jemalloc") {
    env.push_back(absl::StrCat("LD_PRELOAD=", absl::GetFlag(FLAGS_jemalloc)));
  }
  absl::StatusOr<testing::ProcessResult> run = testing::RunProcess(
      {self, "--malloc_child", absl::StrCat("--live_mib=", live_mib),
       absl::StrCat("--seed=", absl::GetFlag(FLAGS_seed))},
      "/tmp", absl::Minutes(30), env);
  if (!run.ok() || run->exit_code != 0) {
    result.error = run.ok() ? run->output : run.status().ToString();
    return result;
  }
  const std::string& out = run->output;
  if (out.find(backend) == std::string::npos) {
    result.error = absl::StrCat("the child ran another malloc: ", out);
    return result;
  }
  result.live_bytes = JsonNumber(out, "live");
  result.idle_rss = JsonNumber(out, "idle");
  result.rss_before_cleanup = JsonNumber(out, "before");
  result.rss = JsonNumber(out, "after");
  const size_t at = out.find("\"seconds\": ");
  if (at != std::string::npos) result.seconds = std::atof(&out[at + 11]);
  return result;
}

// ---- redis ---------------------------------------------------------------

Result RunRedis(const MixedWorkload& workload) {
  Result result;
  result.backend = "redis";
  result.live_bytes = workload.live_bytes();
  // A free port: bind port 0, read it, close (redis binds it right after).
  int port = 0;
  {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
    close(fd);
  }
  char dir[] = "/tmp/mixed-redis.XXXXXX";
  if (mkdtemp(dir) == nullptr) {
    result.error = "mkdtemp failed";
    return result;
  }
  absl::StatusOr<std::unique_ptr<testing::Subprocess>> redis =
      testing::Subprocess::Spawn(
          {absl::GetFlag(FLAGS_redis_server), "--port", absl::StrCat(port),
           "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
           dir},
          absl::StrCat(dir, "/redis.log"));
  if (!redis.ok()) {
    result.error = redis.status().ToString();
    return result;
  }
  redisContext* c = nullptr;
  for (int i = 0; i < 200; ++i) {
    c = redisConnect("127.0.0.1", port);
    if (c != nullptr && c->err == 0) break;
    if (c != nullptr) redisFree(c);
    c = nullptr;
    absl::SleepFor(absl::Milliseconds(50));
  }
  if (c == nullptr) {
    result.error = "cannot connect to redis-server";
    return result;
  }
  auto command = [&](const char* text) {
    auto* reply = static_cast<redisReply*>(redisCommand(c, text));
    std::string out;
    if (reply != nullptr && reply->str != nullptr) out = reply->str;
    freeReplyObject(reply);
    return out;
  };
  command("PING");
  absl::SleepFor(absl::Milliseconds(300));
  result.idle_rss = RssOf((*redis)->pid());
  const absl::Time start = absl::Now();
  const int window = absl::GetFlag(FLAGS_window);
  std::string data;
  int pending = 0;
  auto drain = [&]() {
    for (; pending > 0; --pending) {
      void* reply = nullptr;
      if (redisGetReply(c, &reply) != REDIS_OK) {
        result.error = c->errstr;
        return;
      }
      freeReplyObject(reply);
    }
  };
  for (const MixedWorkload::Event& event : workload.events()) {
    if (event.allocate) {
      const uint32_t size = workload.sizes()[event.block];
      data.resize(size);
      MixedWorkload::Fill(event.block, size, data.data());
      redisAppendCommand(c, "SET k%u %b", event.block, data.data(),
                         data.size());
    } else {
      redisAppendCommand(c, "DEL k%u", event.block);
    }
    if (++pending == window) drain();
    if (!result.error.empty()) break;
  }
  drain();
  result.rss_before_cleanup = RssOf((*redis)->pid());
  command("MEMORY PURGE");
  result.seconds = absl::ToDoubleSeconds(absl::Now() - start);
  absl::SleepFor(absl::Milliseconds(100));
  result.rss = RssOf((*redis)->pid());
  redisFree(c);
  (void)(*redis)->Signal(SIGTERM);
  (void)(*redis)->Wait(absl::Seconds(30));
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return result;
}

// ---- report ----------------------------------------------------------------

std::string Ratio(const Result* r, bool after) {
  if (r == nullptr) return "-";
  if (!r->error.empty()) return "error";
  return absl::StrFormat("%.3f",
                         r->Ratio(after ? r->rss : r->rss_before_cleanup));
}

int Main() {
  if (absl::GetFlag(FLAGS_malloc_child)) return MallocChild();
  std::vector<uint64_t> sizes;
  for (absl::string_view s :
       absl::StrSplit(absl::GetFlag(FLAGS_live_mib), ',', absl::SkipEmpty())) {
    uint64_t mib = 0;
    if (!absl::SimpleAtoi(s, &mib) || mib == 0) {
      std::fprintf(stderr, "bad --live_mib entry '%s'\n",
                   std::string(s).c_str());
      return 1;
    }
    sizes.push_back(mib);
  }
  const std::vector<std::string> backends =
      absl::StrSplit(absl::GetFlag(FLAGS_backends), ',', absl::SkipEmpty());
  std::vector<std::map<std::string, Result>> rows;
  for (uint64_t mib : sizes) {
    const MixedWorkload workload =
        MixedWorkload::Make(mib * kMiB, absl::GetFlag(FLAGS_seed));
    const uint64_t* by_pool = workload.live_by_pool();
    std::fprintf(stderr,
                 "live %llu MiB: %llu blocks allocated (%.1f MiB), %llu kept "
                 "(%.1f MiB: small %.1f, medium %.1f, large %.1f MiB)\n",
                 static_cast<unsigned long long>(mib),
                 static_cast<unsigned long long>(workload.blocks()),
                 workload.allocated_bytes() / 1048576.0,
                 static_cast<unsigned long long>(workload.live_blocks()),
                 workload.live_bytes() / 1048576.0, by_pool[0] / 1048576.0,
                 by_pool[1] / 1048576.0, by_pool[2] / 1048576.0);
    std::map<std::string, Result> row;
    for (const std::string& backend : backends) {
      Result r;
      if (backend == "poold") {
        r = RunPoold(workload);
      } else if (backend == "glibc" || backend == "jemalloc") {
        r = RunMalloc(backend, mib);
      } else if (backend == "redis") {
        r = RunRedis(workload);
      } else {
        std::fprintf(stderr, "unknown backend %s\n", backend.c_str());
        return 1;
      }
      std::fprintf(stderr,
                   "  %-8s idle %6.1f MiB, after the sequence %7.1f MiB, "
                   "after cleanup %7.1f MiB: %s x live (%.1f s)%s%s\n",
                   backend.c_str(), r.idle_rss / 1048576.0,
                   r.rss_before_cleanup / 1048576.0, r.rss / 1048576.0,
                   Ratio(&r, true).c_str(), r.seconds,
                   r.error.empty() ? "" : " ERROR: ", r.error.c_str());
      row[backend] = r;
    }
    rows.push_back(std::move(row));
  }

  auto find = [](const std::map<std::string, Result>& row,
                 const std::string& name) -> const Result* {
    auto it = row.find(name);
    return it == row.end() ? nullptr : &it->second;
  };
  absl::PrintF(
      "| live | poold after defrag | poold pools only | poold before "
      "defrag | glibc + malloc_trim | glibc | jemalloc + purge | jemalloc | "
      "redis + MEMORY PURGE | redis |\n|---|---|---|---|---|---|---|---|---|---"
      "|\n");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Result* poold = find(rows[i], "poold");
    std::string pools = "-";
    if (poold != nullptr && poold->error.empty()) {
      pools =
          absl::StrFormat("%.3f", static_cast<double>(poold->pools_resident) /
                                      static_cast<double>(poold->live_bytes));
    }
    absl::PrintF("| %d MiB | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                 sizes[i], Ratio(poold, true), pools, Ratio(poold, false),
                 Ratio(find(rows[i], "glibc"), true),
                 Ratio(find(rows[i], "glibc"), false),
                 Ratio(find(rows[i], "jemalloc"), true),
                 Ratio(find(rows[i], "jemalloc"), false),
                 Ratio(find(rows[i], "redis"), true),
                 Ratio(find(rows[i], "redis"), false));
  }

  const std::string json_path = absl::GetFlag(FLAGS_json);
  if (!json_path.empty()) {
    std::vector<std::string> entries;
    for (size_t i = 0; i < rows.size(); ++i) {
      for (const auto& [name, r] : rows[i]) {
        entries.push_back(absl::StrFormat(
            "{\"live_mib\": %d, \"backend\": \"%s\", \"live_bytes\": %d, "
            "\"idle_rss\": %d, \"rss_before_cleanup\": %d, \"rss\": %d, "
            "\"ratio\": %.4f, \"pools_resident\": %d, \"seconds\": %.2f, "
            "\"error\": \"%s\"}",
            sizes[i], name, r.live_bytes, r.idle_rss, r.rss_before_cleanup,
            r.rss, r.error.empty() ? r.Ratio(r.rss) : 0.0, r.pools_resident,
            r.seconds, r.error.empty() ? "" : "see stderr"));
      }
    }
    std::ofstream out(json_path);
    out << "[\n  " << absl::StrJoin(entries, ",\n  ") << "\n]\n";
  }
  for (const auto& row : rows) {
    for (const auto& [name, r] : row) {
      if (!r.error.empty()) return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace poold::bench

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "RSS over live bytes of poold, glibc, jemalloc and Redis on one "
      "mixed-size sequence (see the header of mixed_bench.cc).");
  absl::ParseCommandLine(argc, argv);
  return poold::bench::Main();
}
