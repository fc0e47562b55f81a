// ConnectionTracker: the TCP connections poold accepted and handed to gRPC,
// counted against --max_connections and --max_connections_per_address.
#ifndef POOLD_SERVER_CONNECTION_TRACKER_H_
#define POOLD_SERVER_CONNECTION_TRACKER_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/time/time.h"

namespace poold {

// gRPC closes a connection's descriptor when the connection ends and tells
// nobody. The tracker finds out by looking at the descriptor again: closed,
// or its number reused for another file (another device or inode).
// Not thread-safe: one thread (the acceptor's) uses it.
class ConnectionTracker {
 public:
  struct Limits {
    // Connections open at once; 0: no limit.
    uint32_t max_connections = 0;
    // Connections open at once from one client address (CallerIdentity::
    // ClientAddress: an IPv4 address, an IPv6 /64); 0: no limit.
    uint32_t max_per_address = 0;
  };

  // The limit that refused a connection.
  enum class Limit : uint8_t { kMaxConnections, kMaxPerAddress };

  explicit ConnectionTracker(Limits limits) : limits_(limits) {}

  ConnectionTracker(const ConnectionTracker&) = delete;
  ConnectionTracker& operator=(const ConnectionTracker&) = delete;

  // Decides about the connection just accepted on `fd` from `address` at
  // `now`. OK: it counts from now until its descriptor is closed.
  // RESOURCE_EXHAUSTED, naming the limit (and setting `*reached` to it when
  // given), when serving it would exceed one; the caller then closes it. Before
  // refusing, the connections that ended are forgotten (Prune), at most once
  // per kFullPruneInterval, so that a flood of refusals costs no more than
  // that. FAILED_PRECONDITION when `fd` is not open.
  absl::Status Admit(int fd, const std::string& address, absl::Time now,
                     Limit* reached = nullptr);

  // Forgets the connections whose descriptors were closed (or now name
  // another file), as of `now`. Returns how many remain.
  size_t Prune(absl::Time now);

  // How often a full tracker looks for connections that ended.
  static constexpr absl::Duration kFullPruneInterval = absl::Milliseconds(100);

  // Connections counted (some may have ended since the last Prune).
  size_t open() const { return by_fd_.size(); }
  // Of them, those from `address`.
  size_t open_from(const std::string& address) const;

  const Limits& limits() const { return limits_; }

 private:
  struct Connection {
    dev_t device = 0;
    ino_t inode = 0;
    std::string address;
  };

  // Whether a limit leaves no room for one more from `address`.
  bool Full(const std::string& address) const;
  void Forget(absl::flat_hash_map<int, Connection>::iterator it);

  const Limits limits_;
  absl::Time last_prune_ = absl::InfinitePast();
  absl::flat_hash_map<int, Connection> by_fd_;
  absl::flat_hash_map<std::string, uint32_t> per_address_;
};

}  // namespace poold

#endif  // POOLD_SERVER_CONNECTION_TRACKER_H_
