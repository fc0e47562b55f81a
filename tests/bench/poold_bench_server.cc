// poold_bench_server: the real poold server (PooldServer: PoolService, its
// worker and engine, health, reflection) plus the benchmark-only
// poold.bench.v1.Noop service on the same gRPC server, threads and
// listeners. service_bench starts it to compare PoolService RPCs with a
// no-op RPC of the same build. Not for production: use poold.
//
// Its flags mean what poold's flags of the same name mean, with the same
// defaults. It stops on SIGTERM or SIGINT.
#include <signal.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "server/poold_server.h"
#include "tests/bench/noop_service.h"

namespace {
const poold::PooldServer::Options kDefaults;
}  // namespace

ABSL_FLAG(std::string, listen, kDefaults.listen,
          "TCP address: host:port; port 0 picks a free port; empty: none.");
ABSL_FLAG(std::string, unix_socket, kDefaults.unix_socket,
          "Unix socket path to serve on as well; empty: none.");
ABSL_FLAG(uint64_t, channel_capacity, kDefaults.channel_capacity,
          "Commands queued for the worker thread.");
ABSL_FLAG(uint64_t, max_message_bytes, kDefaults.max_message_bytes,
          "Largest gRPC message received or sent.");
ABSL_FLAG(uint64_t, max_block_bytes, kDefaults.max_block_bytes,
          "Largest block Allocate accepts.");
ABSL_FLAG(uint64_t, memory_limit_bytes, kDefaults.memory_limit_bytes,
          "Resident bytes the pools may hold (0: no limit).");
ABSL_FLAG(uint64_t, defrag_slice_us,
          absl::ToInt64Microseconds(kDefaults.defrag_slice),
          "Time budget of one defragmentation slice, in microseconds.");
ABSL_FLAG(absl::Duration, cache_decay, kDefaults.cache_decay,
          "Empty memory unused this long goes back to the OS.");
ABSL_FLAG(absl::Duration, shutdown_grace, kDefaults.shutdown_grace,
          "How long RPCs in flight may finish at shutdown.");

int main(int argc, char** argv) {
  // Block the stop signals before any thread starts; sigwait takes them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::SetProgramUsageMessage(
      "poold plus the benchmark-only poold.bench.v1.Noop service, for "
      "service_bench.\nUsage: poold_bench_server [--listen=host:port] "
      "[--unix_socket=path] [flags]");
  absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);

  poold::bench::NoopService noop;  // outlives the server
  poold::PooldServer::Options options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.unix_socket = absl::GetFlag(FLAGS_unix_socket);
  options.channel_capacity = absl::GetFlag(FLAGS_channel_capacity);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.max_block_bytes = absl::GetFlag(FLAGS_max_block_bytes);
  options.memory_limit_bytes = absl::GetFlag(FLAGS_memory_limit_bytes);
  options.defrag_slice =
      absl::Microseconds(absl::GetFlag(FLAGS_defrag_slice_us));
  options.cache_decay = absl::GetFlag(FLAGS_cache_decay);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.extra_services = {&noop};

  absl::StatusOr<std::unique_ptr<poold::PooldServer>> server =
      poold::PooldServer::Start(options);
  if (!server.ok()) {
    LOG(ERROR) << "poold_bench_server cannot start: "
               << server.status().message();
    return EXIT_FAILURE;
  }
  LOG(INFO) << "poold_bench_server also serves "
            << poold::bench::v1::Noop::service_full_name();

  int signal_number = 0;
  while (sigwait(&stop_signals, &signal_number) != 0) {
  }
  LOG(INFO) << "poold_bench_server received signal " << signal_number;
  (*server)->Shutdown();
  return EXIT_SUCCESS;
}
