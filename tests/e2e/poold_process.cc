// PooldProcess: start, wait until serving, stop.
#include "tests/e2e/poold_process.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace poold::testing {
namespace {

using ::grpc::health::v1::Health;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

// What poold logs for each address it serves (see PooldServer::Start).
constexpr absl::string_view kListeningMarker = "poold listening on ";
constexpr absl::string_view kMetricsMarker = "poold serving metrics at ";

// Above poold's default --max_message_bytes.
constexpr int kClientMessageLimit = 128 << 20;

absl::StatusOr<std::string> MakeTempDir() {
  const char* tmp = getenv("TMPDIR");
  std::string pattern = absl::StrCat(
      tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/poold-e2e-XXXXXX");
  if (mkdtemp(pattern.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", pattern));
  }
  return pattern;
}

}  // namespace

std::string PooldProcess::BinaryPath() { return POOLD_BINARY_PATH; }

absl::StatusOr<std::unique_ptr<PooldProcess>> PooldProcess::Spawn(
    const Options& options) {
  absl::StatusOr<std::string> temp_dir = MakeTempDir();
  if (!temp_dir.ok()) return temp_dir.status();

  std::vector<std::string> argv = options.command_prefix;
  argv.push_back(BinaryPath());
  argv.push_back(absl::StrCat("--listen=", options.listen));
  std::string socket_path;
  if (options.unix_socket) {
    socket_path = options.unix_socket_path.empty()
                      ? absl::StrCat(*temp_dir, "/poold.sock")
                      : options.unix_socket_path;
    argv.push_back(absl::StrCat("--unix_socket=", socket_path));
  }
  argv.push_back(
      absl::StrCat("--auto_defrag=", options.auto_defrag ? "true" : "false"));
  argv.push_back(absl::StrCat("--metrics_listen=", options.metrics_listen));
  argv.insert(argv.end(), options.extra_flags.begin(),
              options.extra_flags.end());
  const int expected_targets =
      (options.listen.empty() ? 0 : 1) + (options.unix_socket ? 1 : 0);

  absl::StatusOr<std::unique_ptr<Subprocess>> process =
      Subprocess::Spawn(argv, absl::StrCat(*temp_dir, "/poold.log"));
  if (!process.ok()) {
    std::error_code ignored;
    std::filesystem::remove_all(*temp_dir, ignored);
    return process.status();
  }
  std::unique_ptr<PooldProcess> poold(new PooldProcess(
      *temp_dir, socket_path, expected_targets, *std::move(process)));
  poold->tcp_credentials_ = options.tcp_credentials;
  return poold;
}

absl::StatusOr<std::unique_ptr<PooldProcess>> PooldProcess::Start(
    const Options& options, absl::Duration timeout) {
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold = Spawn(options);
  if (!poold.ok()) return poold.status();
  if (absl::Status s = (*poold)->WaitUntilServing(timeout); !s.ok()) return s;
  return poold;
}

PooldProcess::~PooldProcess() {
  process_.reset();  // kills and reaps
  std::error_code ignored;
  std::filesystem::remove_all(temp_dir_, ignored);
}

bool PooldProcess::ParseTargets() {
  tcp_target_.clear();
  unix_target_.clear();
  int found = 0;
  for (absl::string_view line : absl::StrSplit(Log(), '\n')) {
    if (const size_t at = line.find(kMetricsMarker);
        at != absl::string_view::npos) {
      metrics_url_ = std::string(line.substr(at + kMetricsMarker.size()));
      continue;
    }
    const size_t at = line.find(kListeningMarker);
    if (at == absl::string_view::npos) continue;
    std::string target(line.substr(at + kListeningMarker.size()));
    if (absl::StartsWith(target, "unix:")) {
      unix_target_ = target;
    } else {
      tcp_target_ = target;
    }
    ++found;
  }
  return found >= expected_targets_;
}

absl::Status PooldProcess::WaitUntilServing(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  auto failed = [this](absl::string_view what) {
    return absl::UnavailableError(
        absl::StrCat("poold ", what, "; its log:\n", Log()));
  };
  while (!ParseTargets()) {
    if (!Running()) return failed("exited before listening");
    if (absl::Now() >= deadline) return failed("did not listen in time");
    absl::SleepFor(absl::Milliseconds(10));
  }
  for (const std::string* target : {&tcp_target_, &unix_target_}) {
    if (target->empty()) continue;
    while (true) {
      absl::StatusOr<HealthCheckResponse::ServingStatus> health =
          CheckHealth(*target, "", absl::Seconds(2),
                      target == &tcp_target_ ? tcp_credentials_ : nullptr);
      if (health.ok() && *health == HealthCheckResponse::SERVING) break;
      if (!Running()) return failed("exited before serving");
      if (absl::Now() >= deadline) {
        return failed(absl::StrCat("not SERVING on ", *target, " in time"));
      }
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  return absl::OkStatus();
}

int PooldProcess::tcp_port() const {
  const size_t colon = tcp_target_.rfind(':');
  int port = 0;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(tcp_target_.substr(colon + 1), &port)) {
    return 0;
  }
  return port;
}

std::shared_ptr<grpc::Channel> PooldProcess::NewChannel(
    const std::string& target) const {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kClientMessageLimit);
  args.SetMaxSendMessageSize(kClientMessageLimit);
  return grpc::CreateCustomChannel(
      target,
      target == tcp_target_ && tcp_credentials_ != nullptr
          ? tcp_credentials_
          : grpc::InsecureChannelCredentials(),
      args);
}

absl::StatusOr<HealthCheckResponse::ServingStatus> PooldProcess::CheckHealth(
    const std::string& target, const std::string& service,
    absl::Duration timeout,
    std::shared_ptr<grpc::ChannelCredentials> credentials) {
  auto stub = Health::NewStub(grpc::CreateChannel(
      target, credentials != nullptr ? credentials
                                     : grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  grpc::Status status = stub->Check(&context, request, &response);
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return response.status();
}

absl::StatusOr<uint64_t> PooldProcess::RssBytes() const {
  const std::string path = absl::StrCat("/proc/", pid(), "/statm");
  std::ifstream statm(path);
  uint64_t size_pages = 0;
  uint64_t resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read ", path, " (has poold exited?)"));
  }
  return resident_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

absl::StatusOr<int> PooldProcess::OpenDescriptors() const {
  const std::string path = absl::StrCat("/proc/", pid(), "/fd");
  std::error_code error;
  int count = 0;
  for (std::filesystem::directory_iterator it(path, error), end;
       !error && it != end; it.increment(error)) {
    ++count;
  }
  if (error) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot list ", path, ": ", error.message(), " (has poold exited?)"));
  }
  return count;
}

absl::StatusOr<int> PooldProcess::Stop(absl::Duration timeout) {
  if (Running()) {
    if (absl::Status s = Signal(SIGTERM); !s.ok() && Running()) return s;
  }
  return WaitForExit(timeout);
}

}  // namespace poold::testing
