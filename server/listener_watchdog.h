// ListenerWatchdog: checks from inside poold that its own listeners still
// accept connections, and reports one that stopped. gRPC 1.51 stops a TCP
// listener for good when accept() fails for lack of file descriptors
// ("Failed accept4: Too many open files"); the process then looks alive but
// serves nobody new.
#ifndef POOLD_SERVER_LISTENER_WATCHDOG_H_
#define POOLD_SERVER_LISTENER_WATCHDOG_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace poold {

class ListenerWatchdog {
 public:
  struct Target {
    std::string address;  // a gRPC target: "127.0.0.1:50051", "unix:/p"
    // The listener speaks TLS: the check is a TLS handshake (the watchdog
    // has no client certificate to make a call with).
    bool tls = false;
  };

  // Every `interval`, makes a health check (grpc.health.v1), or for a TLS
  // target a TLS handshake, over a new connection to each of `targets`, with a
  // deadline of kCheckTimeout (a connection and a call on a loaded host can
  // take a while; the interval does not shorten it). When `failures_in_a_row`
  // checks of one target fail in a row, calls `on_dead(target, last error)`
  // once, from the watchdog's thread, and stops checking. `on_dead` must not
  // destroy the watchdog (it runs on its thread): signal someone who does.
  // REQUIRES: interval > 0, failures_in_a_row > 0.
  ListenerWatchdog(
      std::vector<Target> targets, absl::Duration interval,
      int failures_in_a_row,
      std::function<void(const std::string&, const std::string&)> on_dead);

  // Stops the thread; a check in progress is cancelled, not waited for.
  ~ListenerWatchdog();

  static constexpr absl::Duration kCheckTimeout = absl::Seconds(5);

  // Checks that passed so far (for tests). Thread-safe.
  uint64_t checks_passed() const {
    return checks_passed_.load(std::memory_order_acquire);
  }

  ListenerWatchdog(const ListenerWatchdog&) = delete;
  ListenerWatchdog& operator=(const ListenerWatchdog&) = delete;

 private:
  void Run();
  // "" when `target` answered a health check in time; else why not.
  std::string Check(const std::string& target);
  // "" when a TLS server at `target` (host:port) completed a handshake in
  // time; else why not.
  std::string CheckTls(const std::string& target);

  const std::vector<Target> targets_;
  const absl::Duration interval_;
  const int failures_in_a_row_;
  const std::function<void(const std::string&, const std::string&)> on_dead_;
  std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;  // guarded by mu_
  // The check in progress, cancelled by the destructor; guarded by mu_.
  grpc::ClientContext* checking_ = nullptr;
  // The socket of the TLS check in progress, shut down by the destructor;
  // guarded by mu_.
  int checking_fd_ = -1;
  std::atomic<uint64_t> checks_passed_{0};
  std::thread thread_;  // last: starts after everything above is built
};

}  // namespace poold

#endif  // POOLD_SERVER_LISTENER_WATCHDOG_H_
