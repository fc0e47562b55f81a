// ServerProcess: the server as a Subprocess, its targets from its log, stop
// and cleanup.
#include "tests/bench/server_process.h"

#include <signal.h>
#include <stdlib.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace poold::bench {
namespace {

constexpr absl::string_view kListening = "poold listening on ";

}  // namespace

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const Options& options, absl::Duration timeout) {
  char temp_template[] = "/tmp/poold-bench.XXXXXX";
  if (mkdtemp(temp_template) == nullptr) {
    return absl::InternalError(absl::StrCat(
        "mkdtemp: ",
        std::error_code(errno, std::generic_category()).message()));
  }
  const std::string temp_dir = temp_template;
  std::vector<std::string> argv = {
      options.binary,
      absl::StrCat("--listen=", options.tcp ? "127.0.0.1:0" : ""),
      // Several servers may run at once: no fixed metrics port.
      "--metrics_listen="};
  if (options.unix_socket) {
    argv.push_back(absl::StrCat("--unix_socket=", temp_dir, "/poold.sock"));
  }
  argv.insert(argv.end(), options.extra_flags.begin(),
              options.extra_flags.end());
  absl::StatusOr<std::unique_ptr<testing::Subprocess>> child =
      testing::Subprocess::Spawn(argv, temp_dir + "/server.log");
  if (!child.ok()) {
    std::error_code ignored;
    std::filesystem::remove_all(temp_dir, ignored);
    return child.status();
  }
  auto process = std::unique_ptr<ServerProcess>(
      new ServerProcess(*std::move(child), temp_dir));

  const int expected = (options.tcp ? 1 : 0) + (options.unix_socket ? 1 : 0);
  const absl::Time deadline = absl::Now() + timeout;
  while (!process->ParseTargets(expected)) {
    if (!process->child_->Running()) {
      absl::StatusOr<int> code = process->child_->Wait(absl::ZeroDuration());
      return absl::FailedPreconditionError(
          absl::StrCat(options.binary, " exited with code ", code.value_or(-1),
                       " before serving; its log:\n", process->Log()));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          options.binary, " did not serve within ",
          absl::FormatDuration(timeout), "; its log:\n", process->Log()));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return process;
}

ServerProcess::~ServerProcess() {
  child_.reset();  // kills and reaps the server if it still runs
  std::error_code ignored;
  std::filesystem::remove_all(temp_dir_, ignored);
}

absl::StatusOr<int> ServerProcess::Stop(absl::Duration timeout) {
  if (child_->Running()) {
    if (absl::Status s = child_->Signal(SIGTERM); !s.ok()) return s;
  }
  return child_->Wait(timeout);
}

std::string ServerProcess::Log() const { return child_->ReadOutput(); }

bool ServerProcess::ParseTargets(int expected) {
  int found = 0;
  for (absl::string_view line : absl::StrSplit(Log(), '\n')) {
    const size_t at = line.find(kListening);
    if (at == absl::string_view::npos) continue;
    const absl::string_view target =
        absl::StripAsciiWhitespace(line.substr(at + kListening.size()));
    if (absl::StartsWith(target, "unix:")) {
      unix_target_ = std::string(target);
    } else {
      tcp_target_ = std::string(target);
    }
    ++found;
  }
  return found >= expected;
}

}  // namespace poold::bench
