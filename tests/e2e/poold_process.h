// PooldProcess: the real poold binary, started for an end-to-end test on a
// free port and/or a unix socket, with helpers to wait until it serves, talk
// to it, signal it and collect its exit code and log.
#ifndef POOLD_TESTS_E2E_POOLD_PROCESS_H_
#define POOLD_TESTS_E2E_POOLD_PROCESS_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/grpcpp.h"
#include "tests/support/subprocess.h"

namespace poold::testing {

class PooldProcess {
 public:
  struct Options {
    // --listen; the default picks a free loopback port; "" disables TCP.
    std::string listen = "127.0.0.1:0";
    // Also serve on a unix socket: at `unix_socket_path`, or, when that is
    // empty, at poold.sock in the process's temporary folder.
    bool unix_socket = false;
    std::string unix_socket_path;
    // --auto_defrag. Off by default here, so that tests which count
    // defragmentations or check projections see only their own.
    bool auto_defrag = false;
    // --metrics_listen; the default picks a free loopback port (several
    // poolds run at once); "" disables metrics.
    std::string metrics_listen = "127.0.0.1:0";
    // More flags, e.g. "--channel_capacity=1".
    std::vector<std::string> extra_flags;
    // A command that runs poold, e.g. {"/usr/bin/prlimit", "--nofile=64"};
    // empty: poold is started directly.
    std::vector<std::string> command_prefix;
    // How the health checks and NewChannel reach the TCP listener (TLS
    // credentials when poold serves TLS); null: plaintext.
    std::shared_ptr<grpc::ChannelCredentials> tcp_credentials;
  };

  // Generous for sanitizer builds on a busy machine.
  static constexpr absl::Duration kStartTimeout = absl::Seconds(60);
  static constexpr absl::Duration kStopTimeout = absl::Seconds(60);

  // Path of the poold binary under test.
  static std::string BinaryPath();

  // Starts poold and waits until it listens on every address and the health
  // service answers SERVING on each.
  static absl::StatusOr<std::unique_ptr<PooldProcess>> Start(
      const Options& options, absl::Duration timeout = kStartTimeout);

  // Starts poold without waiting, e.g. for a run that should fail.
  static absl::StatusOr<std::unique_ptr<PooldProcess>> Spawn(
      const Options& options);

  // Kills poold if it still runs and removes its temporary folder.
  ~PooldProcess();

  PooldProcess(const PooldProcess&) = delete;
  PooldProcess& operator=(const PooldProcess&) = delete;

  // Waits until poold logged every address it listens on and answers health
  // SERVING there. Fails at once, with its log, if poold exits.
  absl::Status WaitUntilServing(absl::Duration timeout = kStartTimeout);

  // gRPC targets, known once WaitUntilServing succeeded: "127.0.0.1:41234"
  // (empty without TCP) and "unix:/tmp/.../poold.sock" (empty without).
  const std::string& tcp_target() const { return tcp_target_; }
  const std::string& unix_target() const { return unix_target_; }
  // The TCP target, or else the unix one.
  const std::string& target() const {
    return tcp_target_.empty() ? unix_target_ : tcp_target_;
  }
  int tcp_port() const;
  // "http://127.0.0.1:PORT/metrics", known once WaitUntilServing succeeded
  // (poold logs it before it listens for gRPC); empty without metrics.
  const std::string& metrics_url() const { return metrics_url_; }
  const std::string& unix_socket_path() const { return unix_socket_path_; }
  // A scratch folder owned by this process object, removed with it.
  const std::string& temp_dir() const { return temp_dir_; }

  // A channel to `target` (default: target()) with message limits as large
  // as poold's.
  std::shared_ptr<grpc::Channel> NewChannel(const std::string& target) const;
  std::shared_ptr<grpc::Channel> NewChannel() const {
    return NewChannel(target());
  }

  // One grpc.health.v1.Health/Check call.
  static absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus>
  CheckHealth(const std::string& target, const std::string& service = "",
              absl::Duration timeout = absl::Seconds(5),
              std::shared_ptr<grpc::ChannelCredentials> credentials = nullptr);

  pid_t pid() const { return process_->pid(); }
  // poold's resident set size as the OS reports it (/proc/<pid>/statm,
  // resident pages times the page size). FAILED_PRECONDITION once it exited.
  absl::StatusOr<uint64_t> RssBytes() const;
  // How many file descriptors poold has open (/proc/<pid>/fd).
  // FAILED_PRECONDITION once it exited.
  absl::StatusOr<int> OpenDescriptors() const;
  bool Running() { return process_->Running(); }
  absl::Status Signal(int signal_number) {
    return process_->Signal(signal_number);
  }
  // Exit code, or 128 + signal; DEADLINE_EXCEEDED when still running.
  absl::StatusOr<int> WaitForExit(absl::Duration timeout = kStopTimeout) {
    return process_->Wait(timeout);
  }
  // SIGTERM, then WaitForExit.
  absl::StatusOr<int> Stop(absl::Duration timeout = kStopTimeout);

  // poold's log (stderr) so far.
  std::string Log() const { return process_->ReadOutput(); }

 private:
  PooldProcess(std::string temp_dir, std::string unix_socket_path,
               int expected_targets, std::unique_ptr<Subprocess> process)
      : temp_dir_(std::move(temp_dir)),
        unix_socket_path_(std::move(unix_socket_path)),
        expected_targets_(expected_targets),
        process_(std::move(process)) {}

  // Reads the "listening on" lines of the log into the targets; true when
  // all expected ones are there.
  bool ParseTargets();

  const std::string temp_dir_;
  const std::string unix_socket_path_;
  const int expected_targets_;
  std::unique_ptr<Subprocess> process_;
  std::shared_ptr<grpc::ChannelCredentials> tcp_credentials_;
  std::string tcp_target_;
  std::string unix_target_;
  std::string metrics_url_;
};

}  // namespace poold::testing

#endif  // POOLD_TESTS_E2E_POOLD_PROCESS_H_
