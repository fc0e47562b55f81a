// ListenerWatchdog: a thread that health-checks poold's own listeners.
#include "server/listener_watchdog.h"

#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "server/endpoints.h"

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
    std::vector<Target> targets, absl::Duration interval, int failures_in_a_row,
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
    if (checking_fd_ >= 0) shutdown(checking_fd_, SHUT_RDWR);
  }
  stop_cv_.notify_all();
  thread_.join();
}

void ListenerWatchdog::Run() {
  // OpenSSL writes to the TLS check's socket with write(): a peer that
  // resets it (or the destructor's shutdown) must not raise SIGPIPE, which
  // would end the process.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);
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
      const Target& target = targets_[i];
      const std::string error =
          target.tls ? CheckTls(target.address) : Check(target.address);
      failures[i] = error.empty() ? 0 : failures[i] + 1;
      if (error.empty()) checks_passed_.fetch_add(1, std::memory_order_release);
      if (failures[i] >= failures_in_a_row_) {
        on_dead_(target.address, error);
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

std::string ListenerWatchdog::CheckTls(const std::string& target) {
  absl::StatusOr<HostPort> address = ParseListenAddress(target);
  if (!address.ok()) return std::string(address.status().message());
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc =
          getaddrinfo(address->host.c_str(),
                      std::to_string(address->port).c_str(), &hints, &found);
      rc != 0) {
    return absl::StrCat("cannot resolve ", target, ": ", gai_strerror(rc));
  }
  const int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(found);
    return absl::StrCat("socket: ", strerror(errno));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      close(fd);
      freeaddrinfo(found);
      return "";
    }
    checking_fd_ = fd;
  }
  // connect() and every read and write give up after kCheckTimeout.
  const timeval timeout = absl::ToTimeval(kCheckTimeout);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  std::string error;
  if (connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    error = absl::StrCat("connect: ", strerror(errno));
  }
  freeaddrinfo(found);
  if (error.empty()) {
    // Our own listener: its certificate is not what is checked, only that
    // a TLS server answers (TLS 1.3 completes the client's side before the
    // server looks at the client's certificate).
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL* ssl = ctx != nullptr ? SSL_new(ctx) : nullptr;
    if (ssl == nullptr) {
      error = "cannot set up OpenSSL";
    } else {
      SSL_set_verify(ssl, SSL_VERIFY_NONE, nullptr);
      SSL_set_fd(ssl, fd);
      if (SSL_connect(ssl) != 1) {
        const unsigned long code = ERR_peek_last_error();
        char text[256] = "no answer";
        if (code != 0) ERR_error_string_n(code, text, sizeof(text));
        error = absl::StrCat(
            "a TLS handshake over a new connection failed "
            "within ",
            absl::FormatDuration(kCheckTimeout), ": ", text);
      } else {
        SSL_shutdown(ssl);
      }
    }
    ERR_clear_error();
    if (ssl != nullptr) SSL_free(ssl);
    if (ctx != nullptr) SSL_CTX_free(ctx);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    checking_fd_ = -1;
    close(fd);
    if (stop_) return "";
  }
  return error;
}

}  // namespace poold
