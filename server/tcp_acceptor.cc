// TcpAcceptor: binding, the accept loop on poll(), admission and refusal.
#include "server/tcp_acceptor.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <system_error>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "server/caller_identity.h"

namespace poold {
namespace {

std::string ErrnoText(int error) {
  return std::error_code(error, std::generic_category()).message();
}

// How often the accepting thread looks for connections gRPC has closed (for
// the open count in the statistics).
constexpr absl::Duration kPruneInterval = absl::Seconds(1);
// Connections taken from one listener before poll() is asked again, so that
// Stop() and the other listeners are heard during a flood.
constexpr int kAcceptBatch = 64;
// How long accepting pauses when the process has no descriptor or memory to
// spare even for refusing.
constexpr absl::Duration kBackoff = absl::Milliseconds(100);

// The client address of a peer, as gRPC would name it ("ipv4:10.0.0.7:41234",
// IPv4-mapped IPv6 addresses as IPv4), keyed as CallerIdentity keys clients.
std::string AddressKey(const sockaddr_storage& peer) {
  char text[INET6_ADDRSTRLEN] = "";
  if (peer.ss_family == AF_INET) {
    const auto& in = reinterpret_cast<const sockaddr_in&>(peer);
    inet_ntop(AF_INET, &in.sin_addr, text, sizeof(text));
    return CallerIdentity::ClientAddress(
        absl::StrCat("ipv4:", text, ":", ntohs(in.sin_port)));
  }
  if (peer.ss_family == AF_INET6) {
    const auto& in6 = reinterpret_cast<const sockaddr_in6&>(peer);
    if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
      inet_ntop(AF_INET, &in6.sin6_addr.s6_addr[12], text, sizeof(text));
      return CallerIdentity::ClientAddress(
          absl::StrCat("ipv4:", text, ":", ntohs(in6.sin6_port)));
    }
    inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof(text));
    return CallerIdentity::ClientAddress(
        absl::StrCat("ipv6:[", text, "]:", ntohs(in6.sin6_port)));
  }
  return "unknown";
}

// A listening socket for `address` (family, socktype, protocol, sockaddr),
// or the failing call with its errno text.
// `*error` is the failing call's errno.
absl::StatusOr<ScopedFd> ListenOn(int family, const sockaddr* address,
                                  socklen_t length, bool dual_stack,
                                  int* error) {
  ScopedFd fd(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    *error = errno;
    return absl::UnavailableError(absl::StrCat("socket: ", ErrnoText(errno)));
  }
  const int one = 1;
  const int zero = 0;
  // Restarting while old connections linger in TIME_WAIT must work; a
  // second server on the port must not (no SO_REUSEPORT).
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (family == AF_INET6) {
    setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, dual_stack ? &zero : &one,
               sizeof(int));
  }
  if (bind(fd.get(), address, length) != 0) {
    *error = errno;
    return absl::UnavailableError(absl::StrCat(
        ErrnoText(errno),
        errno == EADDRINUSE ? " (is another poold running?)" : ""));
  }
  if (listen(fd.get(), SOMAXCONN) != 0) {
    *error = errno;
    return absl::UnavailableError(absl::StrCat("listen: ", ErrnoText(errno)));
  }
  return fd;
}

int BoundPort(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    return -1;
  }
  return address.ss_family == AF_INET6
             ? ntohs(reinterpret_cast<sockaddr_in6&>(address).sin6_port)
             : ntohs(reinterpret_cast<sockaddr_in&>(address).sin_port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<TcpAcceptor>> TcpAcceptor::Listen(
    const HostPort& address, ConnectionTracker::Limits limits) {
  const std::string name = FormatHostPort(address.host, address.port);
  std::vector<ScopedFd> listeners;
  int port = address.port;
  if (address.host.empty() || address.host == "0.0.0.0" ||
      address.host == "::") {
    // Every interface: a dual-stack IPv6 socket, else IPv4 alone.
    sockaddr_in6 any6{};
    any6.sin6_family = AF_INET6;
    any6.sin6_addr = in6addr_any;
    any6.sin6_port = htons(static_cast<uint16_t>(port));
    int error = 0;
    absl::StatusOr<ScopedFd> fd =
        ListenOn(AF_INET6, reinterpret_cast<sockaddr*>(&any6), sizeof(any6),
                 /*dual_stack=*/true, &error);
    // IPv4 alone only where the system has no IPv6; any other failure (the
    // port in use) is the answer.
    if (!fd.ok() && error != EAFNOSUPPORT && error != EADDRNOTAVAIL) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", name, ": ", fd.status().message()));
    }
    if (!fd.ok()) {
      LOG(INFO) << "no IPv6 for " << name << " (" << fd.status().message()
                << "); listening on IPv4 only";
      sockaddr_in any4{};
      any4.sin_family = AF_INET;
      any4.sin_addr.s_addr = htonl(INADDR_ANY);
      any4.sin_port = htons(static_cast<uint16_t>(port));
      absl::StatusOr<ScopedFd> fd4 =
          ListenOn(AF_INET, reinterpret_cast<sockaddr*>(&any4), sizeof(any4),
                   /*dual_stack=*/false, &error);
      if (!fd4.ok()) {
        return absl::UnavailableError(absl::StrCat(
            "cannot listen on ", name, ": ", fd4.status().message()));
      }
      fd = std::move(fd4);
    }
    listeners.push_back(*std::move(fd));
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const int resolved = getaddrinfo(address.host.c_str(), "0", &hints, &found);
    if (resolved != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot listen on ", name, ": cannot resolve \"",
                       address.host, "\": ", gai_strerror(resolved)));
    }
    std::string failures;
    for (const addrinfo* ai = found; ai != nullptr; ai = ai->ai_next) {
      sockaddr_storage at{};
      memcpy(&at, ai->ai_addr, ai->ai_addrlen);
      // Every address on the same port: the one the first was given.
      if (at.ss_family == AF_INET6) {
        reinterpret_cast<sockaddr_in6&>(at).sin6_port =
            htons(static_cast<uint16_t>(port));
      } else if (at.ss_family == AF_INET) {
        reinterpret_cast<sockaddr_in&>(at).sin_port =
            htons(static_cast<uint16_t>(port));
      } else {
        continue;
      }
      int error = 0;
      absl::StatusOr<ScopedFd> fd =
          ListenOn(at.ss_family, reinterpret_cast<sockaddr*>(&at),
                   ai->ai_addrlen, /*dual_stack=*/false, &error);
      if (!fd.ok()) {
        absl::StrAppend(&failures, failures.empty() ? "" : "; ",
                        fd.status().message());
        continue;
      }
      if (port == 0) port = BoundPort(fd->get());
      listeners.push_back(*std::move(fd));
    }
    freeaddrinfo(found);
    if (listeners.empty()) {
      return absl::UnavailableError(
          absl::StrCat("cannot listen on ", name, ": ", failures));
    }
    if (!failures.empty()) {
      LOG(WARNING) << "listening on only some addresses of " << name << ": "
                   << failures;
    }
  }
  port = BoundPort(listeners.front().get());
  ScopedFd wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (wake.get() < 0) {
    return absl::UnavailableError(absl::StrCat("eventfd: ", ErrnoText(errno)));
  }
  return absl::WrapUnique(
      new TcpAcceptor(std::move(listeners), port, limits, std::move(wake)));
}

TcpAcceptor::TcpAcceptor(std::vector<ScopedFd> listeners, int port,
                         ConnectionTracker::Limits limits, ScopedFd wake)
    : listeners_(std::move(listeners)),
      port_(port),
      wake_(std::move(wake)),
      spare_(open("/dev/null", O_RDONLY | O_CLOEXEC)),
      tracker_(limits) {}

TcpAcceptor::~TcpAcceptor() { Stop(); }

void TcpAcceptor::Start(Handoff handoff, OnFailure on_failure) {
  CHECK(!thread_.joinable()) << "TcpAcceptor::Start called twice";
  handoff_ = std::move(handoff);
  on_failure_ = std::move(on_failure);
  thread_ = std::thread([this] { Run(); });
}

void TcpAcceptor::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (thread_.joinable()) {
    const uint64_t one = 1;
    // An eventfd write of 1 cannot block or fail short of a full counter.
    if (write(wake_.get(), &one, sizeof(one)) != sizeof(one)) {
      PLOG(ERROR) << "cannot wake the TCP acceptor";
    }
    stopping_.store(true, std::memory_order_release);
    thread_.join();
  }
  listeners_.clear();
}

void TcpAcceptor::Run() {
  std::vector<pollfd> polled;
  polled.push_back({wake_.get(), POLLIN, 0});
  for (const ScopedFd& listener : listeners_) {
    polled.push_back({listener.get(), POLLIN, 0});
  }
  absl::Time paused_until = absl::InfinitePast();
  absl::Time next_prune = absl::Now() + kPruneInterval;
  while (true) {
    const absl::Time now = absl::Now();
    if (now >= next_prune) {
      open_.store(tracker_.Prune(now), std::memory_order_relaxed);
      next_prune = now + kPruneInterval;
    }
    const bool paused = now < paused_until;
    const absl::Time wake_at =
        paused ? std::min(paused_until, next_prune) : next_prune;
    // Ceiling: never 0 ms before the time is due (a busy loop).
    const int timeout = static_cast<int>(absl::ToInt64Milliseconds(
        wake_at - now + absl::Milliseconds(1) - absl::Nanoseconds(1)));
    // While paused only the wake-up is watched (the listeners stay readable).
    const nfds_t count = paused ? 1 : polled.size();
    const int ready = poll(polled.data(), count, std::max(timeout, 0));
    if (ready < 0) {
      if (errno == EINTR) continue;
      const std::string error = absl::StrCat("poll: ", ErrnoText(errno));
      LOG(ERROR) << "TCP acceptor stops: " << error;
      on_failure_(error);
      return;
    }
    if (polled[0].revents != 0) return;  // Stop()
    for (nfds_t i = 1; i < count; ++i) {
      if (polled[i].revents == 0) continue;
      switch (AcceptAll(polled[i].fd)) {
        case Drained::kAll:
          break;
        case Drained::kPause:
          paused_until = absl::Now() + kBackoff;
          break;
        case Drained::kFailed:
          return;
      }
    }
  }
}

TcpAcceptor::Drained TcpAcceptor::AcceptAll(int listener) {
  for (int taken = 0; taken < kAcceptBatch; ++taken) {
    sockaddr_storage peer{};
    socklen_t length = sizeof(peer);
    const int fd = accept4(listener, reinterpret_cast<sockaddr*>(&peer),
                           &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      switch (errno) {
        case EINTR:
          continue;
        case EAGAIN:
          return Drained::kAll;
        // The client gave up, or the network failed under it (accept(2)
        // says to retry on these).
        case ECONNABORTED:
        case EPROTO:
        case EPERM:
        case ENETDOWN:
        case ENOPROTOOPT:
        case EHOSTDOWN:
        case ENONET:
        case EHOSTUNREACH:
        case EOPNOTSUPP:
        case ENETUNREACH:
          continue;
        case EMFILE:
        case ENFILE:
          // No descriptor even for the spare: wait a little.
          if (!RefuseWithSpare(listener)) return Drained::kPause;
          continue;
        case ENOBUFS:
        case ENOMEM: {
          LOG_EVERY_T(WARNING, 10)
              << "TCP connections wait: accept: " << ErrnoText(errno);
          return Drained::kPause;
        }
        default: {
          const std::string error = absl::StrCat("accept: ", ErrnoText(errno));
          LOG(ERROR) << "TCP acceptor stops: " << error;
          on_failure_(error);
          return Drained::kFailed;
        }
      }
    }
    const std::string address = AddressKey(peer);
    // Small answers leave at once (as gRPC's own listener sets it).
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ConnectionTracker::Limit reached;
    if (absl::Status admitted =
            tracker_.Admit(fd, address, absl::Now(), &reached);
        !admitted.ok()) {
      const Refusal reason =
          admitted.code() != absl::StatusCode::kResourceExhausted
              ? Refusal::kOther
          : reached == ConnectionTracker::Limit::kMaxConnections
              ? Refusal::kMaxConnections
              : Refusal::kMaxPerAddress;
      Refuse(fd, reason,
             absl::StrCat("a connection from ", address,
                          " refused: ", admitted.message()));
      continue;
    }
    accepted_.fetch_add(1, std::memory_order_relaxed);
    open_.store(tracker_.open(), std::memory_order_relaxed);
    handoff_(listener, fd);
  }
  return Drained::kAll;  // more may wait: poll() says so at once
}

bool TcpAcceptor::RefuseWithSpare(int listener) {
  const int error = errno;
  if (spare_.get() < 0) {
    spare_ = ScopedFd(open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (spare_.get() < 0) return false;
  }
  spare_.Reset();
  const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd >= 0) {
    Refuse(fd, Refusal::kOpenFiles,
           absl::StrCat("a connection refused: accept: ", ErrnoText(error),
                        " (the open-files limit)"));
  }
  spare_ = ScopedFd(open("/dev/null", O_RDONLY | O_CLOEXEC));
  return fd >= 0;
}

void TcpAcceptor::Refuse(int fd, Refusal reason, const std::string& why) {
  // Counted before the client can see it.
  refused_[static_cast<int>(reason)].fetch_add(1, std::memory_order_relaxed);
  close(fd);
  LOG_EVERY_T(WARNING, 10) << why << " (" << refused() << " refused so far)";
}

}  // namespace poold
