// ListenerWatchdog: checks from inside poold that its own listeners still
// accept connections, and reports one that stopped. gRPC 1.51 stops a TCP
// listener for good when accept() fails for lack of file descriptors
// ("Failed accept4: Too many open files"); the process then looks alive but
// serves nobody new.
#ifndef POOLD_SERVER_LISTENER_WATCHDOG_H_
#define POOLD_SERVER_LISTENER_WATCHDOG_H_

#include <condition_variable>
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
  // Every `interval`, makes a health check (grpc.health.v1) over a new
  // connection to each of `targets`, with a deadline of kCheckTimeout (a
  // connection and a call on a loaded host can take a while; the interval
  // does not shorten it). When `failures_in_a_row` checks of one target fail
  // in a row, calls `on_dead(target, last error)` once, from the watchdog's
  // thread, and stops checking. `on_dead` must not destroy the watchdog (it
  // runs on its thread): signal someone who does.
  // REQUIRES: interval > 0, failures_in_a_row > 0.
  ListenerWatchdog(
      std::vector<std::string> targets, absl::Duration interval,
      int failures_in_a_row,
      std::function<void(const std::string&, const std::string&)> on_dead);

  // Stops the thread; a check in progress is cancelled, not waited for.
  ~ListenerWatchdog();

  static constexpr absl::Duration kCheckTimeout = absl::Seconds(5);

  ListenerWatchdog(const ListenerWatchdog&) = delete;
  ListenerWatchdog& operator=(const ListenerWatchdog&) = delete;

 private:
  void Run();
  // "" when `target` answered a health check in time; else why not.
  std::string Check(const std::string& target);

  const std::vector<std::string> targets_;
  const absl::Duration interval_;
  const int failures_in_a_row_;
  const std::function<void(const std::string&, const std::string&)> on_dead_;
  std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;  // guarded by mu_
  // The check in progress, cancelled by the destructor; guarded by mu_.
  grpc::ClientContext* checking_ = nullptr;
  std::thread thread_;  // last: starts after everything above is built
};

}  // namespace poold

#endif  // POOLD_SERVER_LISTENER_WATCHDOG_H_
