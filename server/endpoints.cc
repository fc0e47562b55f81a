// Listening endpoints: address parsing and unix socket file handling.
#include "server/endpoints.h"

#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "server/scoped_fd.h"

namespace poold {
namespace {

std::string ErrnoText(int error) {
  return std::error_code(error, std::generic_category()).message();
}

}  // namespace

absl::StatusOr<HostPort> ParseListenAddress(absl::string_view address) {
  const size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address \"", address, "\" is not host:port or [ipv6]:port"));
  }
  absl::string_view host = address.substr(0, colon);
  absl::string_view port_text = address.substr(colon + 1);
  if (!host.empty() && host.front() == '[') {
    if (host.size() < 2 || host.back() != ']') {
      return absl::InvalidArgumentError(
          absl::StrCat("listen address \"", address, "\": unbalanced [ ]"));
    }
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "listen address \"", address, "\": put an IPv6 host in [ ]"));
  }
  int port = 0;
  if (port_text.empty() || !absl::SimpleAtoi(port_text, &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("listen address \"", address,
                     "\": the port must be a number from 0 to 65535"));
  }
  return HostPort{std::string(host), port};
}

std::string FormatHostPort(absl::string_view host, int port) {
  if (host.find(':') != absl::string_view::npos) {
    return absl::StrCat("[", host, "]:", port);
  }
  return absl::StrCat(host, ":", port);
}

absl::Status ValidateUnixSocketPath(const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError("the unix socket path is empty");
  }
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unix socket path \"", path, "\" is ", path.size(),
        " bytes; the limit is ", sizeof(sockaddr_un::sun_path) - 1));
  }
  return absl::OkStatus();
}

absl::Status ClaimUnixSocketPath(const std::string& path) {
  if (absl::Status valid = ValidateUnixSocketPath(path); !valid.ok()) {
    return valid;
  }
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat("cannot inspect ", path, ": ", ErrnoText(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, " exists and is not a socket; refusing to replace it"));
  }
  // Non-blocking: a listener that never accepts, with its backlog full,
  // must not hang the start-up.
  ScopedFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (fd.get() < 0) {
    return absl::InternalError(
        absl::StrCat("socket(AF_UNIX): ", ErrnoText(errno)));
  }
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr),
              sizeof(addr)) == 0 ||
      errno == EINPROGRESS) {
    return absl::AlreadyExistsError(absl::StrCat(
        "unix socket ", path,
        " is in use: another process (another poold?) listens on it"));
  }
  if (errno == EAGAIN) {
    return absl::AlreadyExistsError(
        absl::StrCat("unix socket ", path,
                     " is in use: a process listens on it but does not accept "
                     "connections (its backlog is full)"));
  }
  if (errno != ECONNREFUSED) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot tell whether unix socket ", path,
                     " is in use: connect: ", ErrnoText(errno)));
  }
  // Nobody listens: a leftover of a process that did not clean up.
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot remove stale unix socket ", path, ": ", ErrnoText(errno)));
  }
  LOG(WARNING) << "removed stale unix socket file " << path
               << " (no process listened on it)";
  return absl::OkStatus();
}

absl::StatusOr<FileId> UnixSocketFileId(const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot inspect ", path, ": ", ErrnoText(errno)));
  }
  if (!S_ISSOCK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a socket"));
  }
  return FileId{st.st_dev, st.st_ino};
}

void RemoveUnixSocketFile(const std::string& path, const FileId& id) {
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      LOG(WARNING) << "cannot inspect " << path << ": " << ErrnoText(errno);
    }
    return;
  }
  if (!S_ISSOCK(st.st_mode)) {
    LOG(WARNING) << path << " is no longer a socket; leaving it alone";
    return;
  }
  if (st.st_dev != id.device || st.st_ino != id.inode) {
    LOG(WARNING) << path
                 << " is no longer the socket this poold created (another "
                    "process, perhaps a newer poold, listens there now); "
                    "leaving it alone";
    return;
  }
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    LOG(WARNING) << "cannot remove " << path << ": " << ErrnoText(errno);
  }
}

absl::Status ProbeTcpBind(const HostPort& address) {
  addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string port = absl::StrCat(address.port);
  const int error =
      getaddrinfo(address.host.empty() ? nullptr : address.host.c_str(),
                  port.c_str(), &hints, &found);
  if (error != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot resolve \"", address.host, "\": ", gai_strerror(error)));
  }
  absl::Status result = absl::OkStatus();
  for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
    ScopedFd fd(
        socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol));
    if (fd.get() < 0) continue;
    const int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      result = absl::UnavailableError(ErrnoText(errno));
      break;
    }
  }
  freeaddrinfo(found);
  return result;
}

}  // namespace poold
