// ServerProcess: a poold-like server binary (poold or poold_bench_server)
// started by a benchmark as a child process on a free loopback port and/or a
// unix socket, with its targets read from its log, and a graceful stop.
#ifndef POOLD_TESTS_BENCH_SERVER_PROCESS_H_
#define POOLD_TESTS_BENCH_SERVER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/support/subprocess.h"

namespace poold::bench {

class ServerProcess {
 public:
  struct Options {
    // Path of the binary; it must log "poold listening on <target>" for
    // every address it serves (PooldServer::Start does).
    std::string binary;
    // Serve TCP on a free loopback port (--listen=127.0.0.1:0).
    bool tcp = true;
    // Serve a unix socket in a fresh temporary folder as well.
    bool unix_socket = false;
    // More flags, e.g. "--defrag_slice_us=100".
    std::vector<std::string> extra_flags;
  };

  // Starts the server (stdin /dev/null; stdout and stderr to a log file in
  // a temporary folder) and waits up to `timeout` until it logged every
  // address it serves. Fails, with the server's log, if it exits first or
  // the time runs out. REQUIRES: options.tcp or options.unix_socket.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const Options& options, absl::Duration timeout = absl::Seconds(60));

  // Kills the server (SIGKILL) if it still runs, reaps it and removes the
  // temporary folder.
  ~ServerProcess();

  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  pid_t pid() const { return child_->pid(); }
  // gRPC targets: "127.0.0.1:41234" and "unix:/tmp/poold-bench.XXXXXX/
  // poold.sock"; empty when not served.
  const std::string& tcp_target() const { return tcp_target_; }
  const std::string& unix_target() const { return unix_target_; }

  // SIGTERM, then waits up to `timeout` for the exit. Returns the exit code
  // (128 + signal when a signal ended it); DEADLINE_EXCEEDED when it still
  // runs.
  absl::StatusOr<int> Stop(absl::Duration timeout = absl::Seconds(60));

  // What the server logged so far.
  std::string Log() const;

 private:
  ServerProcess(std::unique_ptr<testing::Subprocess> child,
                std::string temp_dir)
      : child_(std::move(child)), temp_dir_(std::move(temp_dir)) {}

  // Reads the "listening on" lines of the log; true once `expected` targets
  // are known.
  bool ParseTargets(int expected);

  std::unique_ptr<testing::Subprocess> child_;
  const std::string temp_dir_;
  std::string tcp_target_;
  std::string unix_target_;
};

}  // namespace poold::bench

#endif  // POOLD_TESTS_BENCH_SERVER_PROCESS_H_
