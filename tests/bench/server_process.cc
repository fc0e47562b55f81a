// ServerProcess: posix_spawn of the server, log parsing, stop and cleanup.
#include "tests/bench/server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

extern char** environ;

namespace poold::bench {
namespace {

constexpr absl::string_view kListening = "poold listening on ";

std::string ErrnoMessage(int error) {
  return std::error_code(error, std::generic_category()).message();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const Options& options, absl::Duration timeout) {
  char temp_template[] = "/tmp/poold-bench.XXXXXX";
  if (mkdtemp(temp_template) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", ErrnoMessage(errno)));
  }
  const std::string temp_dir = temp_template;
  std::vector<std::string> args = {
      options.binary,
      absl::StrCat("--listen=", options.tcp ? "127.0.0.1:0" : "")};
  if (options.unix_socket) {
    args.push_back(absl::StrCat("--unix_socket=", temp_dir, "/poold.sock"));
  }
  args.insert(args.end(), options.extra_flags.begin(),
              options.extra_flags.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  const std::string log_path = temp_dir + "/server.log";
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null",
                                   O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(),
                                   O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  // The child starts with no signal blocked and default dispositions, so
  // SIGTERM reaches the server's own handling whatever this process does.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = -1;
  const int error =
      posix_spawn(&pid, argv[0], &actions, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (error != 0) {
    std::filesystem::remove_all(temp_dir);
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot start ", options.binary, ": ", ErrnoMessage(error)));
  }
  auto process =
      std::unique_ptr<ServerProcess>(new ServerProcess(pid, temp_dir));

  const int expected = (options.tcp ? 1 : 0) + (options.unix_socket ? 1 : 0);
  const absl::Time deadline = absl::Now() + timeout;
  while (!process->ParseTargets(expected)) {
    if (process->Reap()) {
      return absl::FailedPreconditionError(absl::StrCat(
          options.binary, " exited with code ", process->exit_code_,
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
  if (!Reap()) {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(temp_dir_, ignored);
}

bool ServerProcess::Reap() {
  if (exited_) return true;
  int status = 0;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r != pid_) return false;
  exited_ = true;
  exit_code_ = WIFEXITED(status)
                   ? WEXITSTATUS(status)
                   : 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return true;
}

absl::StatusOr<int> ServerProcess::Stop(absl::Duration timeout) {
  if (!Reap()) kill(pid_, SIGTERM);
  const absl::Time deadline = absl::Now() + timeout;
  while (!Reap()) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("server ", pid_, " still runs ",
                       absl::FormatDuration(timeout), " after SIGTERM"));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return exit_code_;
}

std::string ServerProcess::Log() const {
  std::ifstream in(temp_dir_ + "/server.log");
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

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
