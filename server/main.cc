// poold: the memory-pool gRPC server. Parses flags, starts the server, and
// shuts it down gracefully on SIGTERM or SIGINT.
#include <signal.h>

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

namespace {
const poold::PooldServer::Options kDefaults;

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

ABSL_FLAG(std::string, listen, kDefaults.listen,
          "TCP address to serve on: host:port or [ipv6]:port; port 0 picks a "
          "free port; empty disables TCP.");
ABSL_FLAG(std::string, unix_socket, kDefaults.unix_socket,
          "Unix socket path to serve on as well (file mode 0660); empty: "
          "none. A stale socket file is removed; a live one makes poold "
          "refuse to start.");
ABSL_FLAG(uint64_t, channel_capacity, kDefaults.channel_capacity,
          "Commands queued for the worker thread; when full, RPCs answer "
          "RESOURCE_EXHAUSTED at once.");
ABSL_FLAG(uint64_t, max_message_bytes, kDefaults.max_message_bytes,
          "Largest gRPC message received or sent; at least --max_block_bytes "
          "+ 4096.");
ABSL_FLAG(uint64_t, max_block_bytes, kDefaults.max_block_bytes,
          "Largest block Allocate accepts.");
ABSL_FLAG(absl::Duration, shutdown_grace, kDefaults.shutdown_grace,
          "On SIGTERM/SIGINT, how long RPCs in flight may still finish "
          "before they are cancelled.");
ABSL_FLAG(absl::Duration, shutdown_drain, kDefaults.shutdown_drain,
          "On SIGTERM/SIGINT, how long poold keeps its listeners open while "
          "draining (health NOT_SERVING, new RPCs UNAVAILABLE) before it "
          "closes them; a second signal ends the drain at once. \"inf\": "
          "until the second signal.");
ABSL_FLAG(uint64_t, memory_limit_bytes, kDefaults.memory_limit_bytes,
          "Resident bytes the pools may hold, metadata included (0: no "
          "limit). An allocation that would pass it first compacts the pools, "
          "then fails with RESOURCE_EXHAUSTED. Leave room above it for gRPC's "
          "own buffers when sizing a container.");
ABSL_FLAG(uint64_t, defrag_slice_us,
          absl::ToInt64Microseconds(kDefaults.defrag_slice),
          "Time budget of one defragmentation slice, in microseconds; "
          "between slices the worker serves other requests.");
ABSL_FLAG(absl::Duration, cache_decay, kDefaults.cache_decay,
          "Empty memory the pools keep for quick reuse goes back to the OS "
          "after this long unused.");
ABSL_FLAG(bool, testing_hold_worker, false,
          "TESTING ONLY, never in production: the worker takes no commands "
          "until shutdown, so the command channel fills up (used by the "
          "end-to-end test of RESOURCE_EXHAUSTED).");

int main(int argc, char** argv) {
  // Block the shutdown signals before any thread starts, so every thread
  // inherits the mask and only sigwait below receives them.
  sigset_t shutdown_signals;
  sigemptyset(&shutdown_signals);
  sigaddset(&shutdown_signals, SIGTERM);
  sigaddset(&shutdown_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &shutdown_signals, nullptr);

  // --help lists the flags defined in this file.
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/main.cc");
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

  poold::PooldServer::Options options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.unix_socket = absl::GetFlag(FLAGS_unix_socket);
  options.channel_capacity = absl::GetFlag(FLAGS_channel_capacity);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.max_block_bytes = absl::GetFlag(FLAGS_max_block_bytes);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.shutdown_drain = absl::GetFlag(FLAGS_shutdown_drain);
  options.memory_limit_bytes = absl::GetFlag(FLAGS_memory_limit_bytes);
  options.defrag_slice =
      absl::Microseconds(absl::GetFlag(FLAGS_defrag_slice_us));
  options.cache_decay = absl::GetFlag(FLAGS_cache_decay);
  options.testing_hold_worker = absl::GetFlag(FLAGS_testing_hold_worker);

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
  return EXIT_SUCCESS;
}
