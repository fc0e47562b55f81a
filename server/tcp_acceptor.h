// TcpAcceptor: poold's own TCP listener. It accepts each connection itself
// and hands it to gRPC (an external connection acceptor, with the server's
// credentials, TLS or plaintext), so that it can refuse connections beyond
// --max_connections (and from one address, --max_connections_per_address),
// and keep accepting when the process runs out of file descriptors, where
// gRPC 1.51's own listener stops for good ("Failed accept4: Too many open
// files", CVE-2023-4785).
#ifndef POOLD_SERVER_TCP_ACCEPTOR_H_
#define POOLD_SERVER_TCP_ACCEPTOR_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "server/connection_tracker.h"
#include "server/endpoints.h"
#include "server/scoped_fd.h"

namespace poold {

class TcpAcceptor {
 public:
  // Takes a connection admitted on `listener_fd`: `fd` is the callee's from
  // then on (gRPC closes it when the connection ends).
  using Handoff = std::function<void(int listener_fd, int fd)>;
  // Accepting failed for a reason that will not pass (not a lack of
  // descriptors or memory, not a client that gave up); the acceptor has
  // stopped.
  using OnFailure = std::function<void(const std::string& error)>;

  // Binds `address` and listens. An empty host, "0.0.0.0" and "::" mean every
  // interface, IPv6 and IPv4 (one dual-stack socket where the system has
  // IPv6); a name may give several addresses, all on one port. Port 0: the
  // OS picks a free port. No SO_REUSEPORT: a port in use fails, UNAVAILABLE
  // with the address and the reason.
  static absl::StatusOr<std::unique_ptr<TcpAcceptor>> Listen(
      const HostPort& address, ConnectionTracker::Limits limits);

  // Stop().
  ~TcpAcceptor();

  TcpAcceptor(const TcpAcceptor&) = delete;
  TcpAcceptor& operator=(const TcpAcceptor&) = delete;

  // The port listened on.
  int port() const { return port_; }

  // Starts accepting on a thread of its own. A connection within the limits
  // goes to `handoff`; one beyond them is closed at once and counted. Call
  // once.
  void Start(Handoff handoff, OnFailure on_failure);

  // Stops accepting and closes the listening sockets (connections already
  // handed over stay gRPC's). Idempotent; not from `handoff` or
  // `on_failure`.
  void Stop();

  // Whether Stop() has told the accepting thread to stop (it may still be
  // finishing its batch). Thread-safe.
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }

  // Counters; thread-safe. Connections open: as of the last accept or the
  // last look (at most a second ago).
  uint64_t open_connections() const {
    return open_.load(std::memory_order_relaxed);
  }
  uint64_t accepted() const {
    return accepted_.load(std::memory_order_relaxed);
  }
  // Why a connection was refused.
  enum class Refusal : uint8_t {
    kMaxConnections,  // --max_connections reached
    kMaxPerAddress,   // --max_connections_per_address reached
    kOpenFiles,       // no file descriptor left (the open-files limit)
    kOther,           // the descriptor was gone before it was looked at
  };
  static constexpr int kRefusals = 4;
  // Connections refused for `why`, and for any reason.
  uint64_t refused(Refusal why) const {
    return refused_[static_cast<int>(why)].load(std::memory_order_relaxed);
  }
  uint64_t refused() const {
    uint64_t total = 0;
    for (const std::atomic<uint64_t>& count : refused_) {
      total += count.load(std::memory_order_relaxed);
    }
    return total;
  }
  const ConnectionTracker::Limits& limits() const { return tracker_.limits(); }

 private:
  TcpAcceptor(std::vector<ScopedFd> listeners, int port,
              ConnectionTracker::Limits limits, ScopedFd wake);

  enum class Drained {
    kAll,     // nothing more waits
    kPause,   // no descriptor or memory to spare: wait a little
    kFailed,  // accepting failed for good (on_failure_ was called)
  };

  void Run();
  // Accepts (or refuses) what waits on `listener`.
  Drained AcceptAll(int listener);
  // Out of descriptors: frees the spare one to accept a waiting connection
  // and close it, so that its client is told at once, then takes the spare
  // again. False when no connection could be taken that way.
  bool RefuseWithSpare(int listener);
  void Refuse(int fd, Refusal reason, const std::string& why);

  std::vector<ScopedFd> listeners_;
  const int port_;
  ScopedFd wake_;   // an eventfd: Stop() writes it
  ScopedFd spare_;  // /dev/null, given up when accept() finds no descriptor
  ConnectionTracker tracker_;  // the accepting thread's
  Handoff handoff_;
  OnFailure on_failure_;
  std::thread thread_;
  bool stopped_ = false;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> open_{0};
  std::atomic<uint64_t> accepted_{0};
  std::array<std::atomic<uint64_t>, kRefusals> refused_{};
};

}  // namespace poold

#endif  // POOLD_SERVER_TCP_ACCEPTOR_H_
