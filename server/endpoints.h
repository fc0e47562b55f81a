// Where poold listens: parsing --listen, claiming the --unix_socket path
// (removing a stale socket file, refusing a live one), and explaining why a
// TCP address cannot be bound.
#ifndef POOLD_SERVER_ENDPOINTS_H_
#define POOLD_SERVER_ENDPOINTS_H_

#include <sys/types.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace poold {

struct HostPort {
  std::string host;  // without brackets; may be empty (all interfaces)
  int port = 0;      // 0: the OS picks a free port
};

// Parses "host:port" or "[ipv6]:port", port 0..65535. INVALID_ARGUMENT
// otherwise.
absl::StatusOr<HostPort> ParseListenAddress(absl::string_view address);

// "host:port", with brackets around an IPv6 host: a gRPC target.
std::string FormatHostPort(absl::string_view host, int port);

// INVALID_ARGUMENT when `path` is empty or too long for a unix socket address.
absl::Status ValidateUnixSocketPath(const std::string& path);

// Makes `path` free for a new listening unix socket. Nothing there: OK. A
// socket file nobody listens on (left by a crash): removed, OK. A socket a
// process listens on: ALREADY_EXISTS. Any other file: FAILED_PRECONDITION,
// and the file is left alone.
absl::Status ClaimUnixSocketPath(const std::string& path);

// Which file a path names: its device and inode.
struct FileId {
  dev_t device = 0;
  ino_t inode = 0;
};

// The identity of the socket file at `path`; FAILED_PRECONDITION when there
// is none (or it is not a socket).
absl::StatusOr<FileId> UnixSocketFileId(const std::string& path);

// Removes `path` if it is still the socket file `id` (the one this process
// created). Anything else there (a newer poold's socket that replaced ours,
// another file) is left alone, with a log line; so are failures.
void RemoveUnixSocketFile(const std::string& path, const FileId& id);

// Tries to bind a TCP socket to `address` (as gRPC would, without
// SO_REUSEPORT) and returns why that fails, or OK. For error messages only:
// the answer may be stale by the time it is read.
absl::Status ProbeTcpBind(const HostPort& address);

}  // namespace poold

#endif  // POOLD_SERVER_ENDPOINTS_H_
