// PoolctlRunner: runs the real poolctl binary as a subprocess, with its
// stdout and stderr captured apart, for the end-to-end tests.
#ifndef POOLD_TESTS_E2E_POOLCTL_POOLCTL_RUNNER_H_
#define POOLD_TESTS_E2E_POOLCTL_POOLCTL_RUNNER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace poold::testing {

struct PoolctlResult {
  int exit_code = -1;  // or 128 + signal
  std::string out;     // stdout
  std::string err;     // stderr
};

class PoolctlRunner {
 public:
  // Runs poolctl with files in `scratch_dir` for its output.
  explicit PoolctlRunner(std::string scratch_dir)
      : scratch_dir_(std::move(scratch_dir)) {}

  // Path of the poolctl binary under test.
  static std::string BinaryPath();

  // Runs `poolctl args...` to completion (killed after `timeout`), with
  // stdin from `stdin_path` (default /dev/null) and the environment of this
  // process. DEADLINE_EXCEEDED if it had to be killed.
  absl::StatusOr<PoolctlResult> Run(
      const std::vector<std::string>& args,
      absl::Duration timeout = absl::Seconds(60),
      const std::string& stdin_path = "/dev/null");

 private:
  std::string scratch_dir_;
  int runs_ = 0;
};

}  // namespace poold::testing

#endif  // POOLD_TESTS_E2E_POOLCTL_POOLCTL_RUNNER_H_
