// poold: the memory-pool gRPC server. Parses flags, starts the server, and
// shuts it down gracefully on SIGTERM or SIGINT.
#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "server/poold_server.h"
#include "server/server_flags.h"

namespace {
// Waits up to `timeout` for one of the blocked `signals`. Returns its name,
// or "" when the time ran out.
std::string WaitForSignal(const sigset_t& signals, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int signal_number = -1;
    if (timeout == absl::InfiniteDuration()) {
      if (sigwait(&signals, &signal_number) != 0) continue;
    } else {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return "";
      const timespec wait = absl::ToTimespec(left);
      signal_number = sigtimedwait(&signals, nullptr, &wait);
      if (signal_number < 0) continue;  // EAGAIN (time is up) or EINTR
    }
    return strsignal(signal_number);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Block the shutdown signals before any thread starts, so every thread
  // inherits the mask and only sigwait below receives them.
  sigset_t shutdown_signals;
  sigemptyset(&shutdown_signals);
  sigaddset(&shutdown_signals, SIGTERM);
  sigaddset(&shutdown_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &shutdown_signals, nullptr);

  // --help lists poold's own flags (not those of the libraries).
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/server_flags.cc");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "a memory-pool gRPC server (poold.v1.PoolService). See "
      "README.md.\nUsage: poold [--listen=host:port] [--unix_socket=path] "
      "[flags]");
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  FLAGS_logtostderr = true;
  google::InitGoogleLogging(argv[0]);
  if (positional.size() > 1) {
    LOG(ERROR) << "poold takes no arguments besides flags; got \""
               << positional[1] << "\"";
    return EXIT_FAILURE;
  }

  poold::PooldServer::Options options = poold::ServerOptionsFromFlags();
  // A listener that stopped accepting: stop as on SIGTERM, then exit 1.
  options.on_listener_failure = [] { kill(getpid(), SIGTERM); };

  absl::StatusOr<std::unique_ptr<poold::PooldServer>> server =
      poold::PooldServer::Start(options);
  if (!server.ok()) {
    LOG(ERROR) << "poold cannot start: " << server.status().message();
    return EXIT_FAILURE;
  }

  // (Wait before logging: a log line takes its time stamp when it starts.)
  const std::string first =
      WaitForSignal(shutdown_signals, absl::InfiniteDuration());
  LOG(INFO) << "poold received " << first;
  (*server)->BeginShutdown();
  if (options.shutdown_drain > absl::ZeroDuration()) {
    LOG(INFO) << "poold draining for "
              << absl::FormatDuration(options.shutdown_drain)
              << "; send SIGTERM or SIGINT again to stop now";
    const std::string second =
        WaitForSignal(shutdown_signals, options.shutdown_drain);
    if (!second.empty()) LOG(INFO) << "poold received " << second;
  }
  (*server)->Shutdown();
  if ((*server)->listener_failed()) {
    LOG(ERROR) << "poold exits 1: a listener stopped accepting connections";
    return EXIT_FAILURE;
  }
  return EXIT_SUCCESS;
}
