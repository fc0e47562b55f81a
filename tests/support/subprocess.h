// Subprocess: a child process for end-to-end tests and benchmarks, started with
// posix_spawn (safe in a multi-threaded test), its stdout and stderr in a
// file, with signals, a bounded wait and cleanup.
#ifndef POOLD_TESTS_SUPPORT_SUBPROCESS_H_
#define POOLD_TESTS_SUPPORT_SUBPROCESS_H_

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace poold::testing {

class Subprocess {
 public:
  // Starts `argv[0]` (a path) with `argv`, stdin from /dev/null, stdout and
  // stderr appended to `output_path`, the environment of this process plus
  // `extra_env` ("NAME=value"), default signal dispositions and no signal
  // blocked.
  static absl::StatusOr<std::unique_ptr<Subprocess>> Spawn(
      const std::vector<std::string>& argv, const std::string& output_path,
      const std::vector<std::string>& extra_env = {});

  // Kills (SIGKILL) and reaps the process if it still runs.
  ~Subprocess();

  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }

  // True while the process has not exited (reaps it when it has).
  bool Running();

  // Sends `signal_number`. FAILED_PRECONDITION once the process exited.
  absl::Status Signal(int signal_number);

  // Waits up to `timeout` for the process to exit. Returns its exit code, or
  // 128 + the signal number when a signal ended it; DEADLINE_EXCEEDED when
  // it still runs.
  absl::StatusOr<int> Wait(absl::Duration timeout);

  // Everything the process wrote so far.
  std::string ReadOutput() const;

 private:
  Subprocess(pid_t pid, std::string output_path)
      : pid_(pid), output_path_(std::move(output_path)) {}

  // Reaps the process without blocking; true once it has exited.
  bool Reap();

  const pid_t pid_;
  const std::string output_path_;
  std::optional<int> exit_code_;  // set once reaped
};

// Runs `argv` to completion (at most `timeout`) and returns its exit code and
// output (stdout and stderr together), using a scratch file in `scratch_dir`.
struct ProcessResult {
  int exit_code = -1;
  std::string output;
};
absl::StatusOr<ProcessResult> RunProcess(
    const std::vector<std::string>& argv, const std::string& scratch_dir,
    absl::Duration timeout, const std::vector<std::string>& extra_env = {});

}  // namespace poold::testing

#endif  // POOLD_TESTS_SUPPORT_SUBPROCESS_H_
