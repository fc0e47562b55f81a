// poold_bench_server: the real poold server (PooldServer: PoolService, its
// worker and engine, health, reflection) plus the benchmark-only
// poold.bench.v1.Noop service on the same gRPC server, threads and
// listeners. service_bench starts it to compare PoolService RPCs with a
// no-op RPC of the same build. Not for production: use poold.
//
// It takes poold's flags (server/server_flags.h). It stops on SIGTERM or
// SIGINT.
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
#include "server/server_flags.h"
#include "tests/bench/noop_service.h"

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
  poold::PooldServer::Options options = poold::ServerOptionsFromFlags();
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
