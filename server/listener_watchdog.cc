// ListenerWatchdog: a thread that health-checks poold's own listeners.
#include "server/listener_watchdog.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace poold {
namespace {

// Each check gets its own connection: a channel that shares no subchannel
// with another one (a connection made before the listener died would pass).
std::shared_ptr<grpc::Channel> FreshChannel(const std::string& target) {
  static std::atomic<int> serial{0};
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("poold.listener_check", serial.fetch_add(1));
  return grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(),
                                   args);
}

}  // namespace

ListenerWatchdog::ListenerWatchdog(
    std::vector<std::string> targets, absl::Duration interval,
    int failures_in_a_row,
    std::function<void(const std::string&, const std::string&)> on_dead)
    : targets_(std::move(targets)),
      interval_(interval),
      failures_in_a_row_(failures_in_a_row),
      on_dead_(std::move(on_dead)),
      thread_([this] { Run(); }) {}

ListenerWatchdog::~ListenerWatchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    if (checking_ != nullptr) checking_->TryCancel();
  }
  stop_cv_.notify_all();
  thread_.join();
}

void ListenerWatchdog::Run() {
  std::vector<int> failures(targets_.size(), 0);
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stop_cv_.wait_for(lock, absl::ToChronoNanoseconds(interval_),
                            [this] { return stop_; })) {
        return;
      }
    }
    for (size_t i = 0; i < targets_.size(); ++i) {
      const std::string error = Check(targets_[i]);
      failures[i] = error.empty() ? 0 : failures[i] + 1;
      if (failures[i] >= failures_in_a_row_) {
        on_dead_(targets_[i], error);
        return;
      }
    }
  }
}

std::string ListenerWatchdog::Check(const std::string& target) {
  std::unique_ptr<grpc::health::v1::Health::Stub> stub =
      grpc::health::v1::Health::NewStub(FreshChannel(target));
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + kCheckTimeout));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return "";
    checking_ = &context;
  }
  // Wait for the connection within the deadline instead of failing fast.
  context.set_wait_for_ready(true);
  grpc::health::v1::HealthCheckResponse response;
  const grpc::Status status =
      stub->Check(&context, grpc::health::v1::HealthCheckRequest(), &response);
  {
    std::lock_guard<std::mutex> lock(mu_);
    checking_ = nullptr;
    if (stop_) return "";  // cancelled by the destructor: not a failure
  }
  if (status.ok()) return "";
  return absl::StrCat("a health check over a new connection got ",
                      status.error_code(), " (", status.error_message(),
                      ") within ", absl::FormatDuration(kCheckTimeout));
}

}  // namespace poold
