// Tests of TcpAcceptor with real sockets: connections are handed over within
// the limits and closed at once beyond them, the listener keeps accepting
// after the process ran out of descriptors, and Stop() closes the port.
#include "server/tcp_acceptor.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

using ::testing::HasSubstr;

// The connections handed over, kept open until the test closes them.
class Handed {
 public:
  void Take(int fd) {
    absl::MutexLock lock(&mu_);
    fds_.push_back(fd);
  }
  // Waits (at most 30 s) for `n` connections; returns how many there are.
  size_t WaitFor(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&] { return fds_.size() >= n; };
    mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(30));
    return fds_.size();
  }
  size_t size() {
    absl::MutexLock lock(&mu_);
    return fds_.size();
  }
  void CloseOne() {
    absl::MutexLock lock(&mu_);
    close(fds_.back());
    fds_.pop_back();
  }
  ~Handed() {
    for (int fd : fds_) close(fd);
  }

 private:
  absl::Mutex mu_;
  std::vector<int> fds_;
};

std::unique_ptr<TcpAcceptor> StartAcceptor(ConnectionTracker::Limits limits,
                                           Handed* handed) {
  absl::StatusOr<std::unique_ptr<TcpAcceptor>> acceptor =
      TcpAcceptor::Listen({"127.0.0.1", 0}, limits);
  EXPECT_TRUE(acceptor.ok()) << acceptor.status();
  if (!acceptor.ok()) return nullptr;
  (*acceptor)->Start([handed](int, int fd) { handed->Take(fd); },
                     [](const std::string& error) {
                       ADD_FAILURE() << "the acceptor failed: " << error;
                     });
  return *std::move(acceptor);
}

// A client connected to 127.0.0.1:`port` from `source` (127.0.0.0/8).
int Connect(int port, const char* source = "127.0.0.1") {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK_GE(fd, 0);
  sockaddr_in from{};
  from.sin_family = AF_INET;
  inet_pton(AF_INET, source, &from.sin_addr);
  CHECK_EQ(bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)), 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(port));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof(to)) != 0) {
    close(fd);
    return -1;
  }
  timeval timeout{.tv_sec = 30, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  return fd;
}

// Whether the server closed the client's connection: a read ends (0, or a
// reset) instead of timing out.
bool ClosedByServer(int fd) {
  char byte;
  const ssize_t n = recv(fd, &byte, 1, 0);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

TEST(TcpAcceptorTest, HandsOverConnectionsAndClosesThoseBeyondTheLimit) {
  Handed handed;
  std::unique_ptr<TcpAcceptor> acceptor =
      StartAcceptor({.max_connections = 2}, &handed);
  ASSERT_NE(acceptor, nullptr);
  EXPECT_GT(acceptor->port(), 0);
  const int a = Connect(acceptor->port());
  const int b = Connect(acceptor->port());
  ASSERT_EQ(handed.WaitFor(2), 2u);
  const int c = Connect(acceptor->port());
  ASSERT_GE(c, 0);
  EXPECT_TRUE(ClosedByServer(c));
  EXPECT_EQ(handed.size(), 2u);
  EXPECT_EQ(acceptor->refused(), 1u);
  EXPECT_EQ(acceptor->refused(TcpAcceptor::Refusal::kMaxConnections), 1u);
  EXPECT_EQ(acceptor->refused(TcpAcceptor::Refusal::kMaxPerAddress), 0u);
  EXPECT_EQ(acceptor->accepted(), 2u);
  EXPECT_EQ(acceptor->open_connections(), 2u);

  // Once a connection ends (the acceptor looks every second), there is room
  // again.
  handed.CloseOne();
  const absl::Time give_up = absl::Now() + absl::Seconds(10);
  while (acceptor->open_connections() > 1 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(acceptor->open_connections(), 1u);
  const int d = Connect(acceptor->port());
  EXPECT_EQ(handed.WaitFor(2), 2u);
  EXPECT_EQ(acceptor->accepted(), 3u);
  EXPECT_EQ(acceptor->refused(), 1u);
  for (int fd : {a, b, c, d}) close(fd);
}

TEST(TcpAcceptorTest, LimitsEachClientAddress) {
  Handed handed;
  std::unique_ptr<TcpAcceptor> acceptor =
      StartAcceptor({.max_connections = 10, .max_per_address = 1}, &handed);
  ASSERT_NE(acceptor, nullptr);
  const int first = Connect(acceptor->port(), "127.0.0.1");
  ASSERT_EQ(handed.WaitFor(1), 1u);
  const int second = Connect(acceptor->port(), "127.0.0.1");
  EXPECT_TRUE(ClosedByServer(second));
  // Another address still gets in.
  const int other = Connect(acceptor->port(), "127.0.0.2");
  EXPECT_EQ(handed.WaitFor(2), 2u);
  EXPECT_EQ(acceptor->refused(), 1u);
  EXPECT_EQ(acceptor->refused(TcpAcceptor::Refusal::kMaxPerAddress), 1u);
  EXPECT_EQ(acceptor->refused(TcpAcceptor::Refusal::kMaxConnections), 0u);
  for (int fd : {first, second, other}) close(fd);
}

// gRPC 1.51's listener stops for good when accept() fails with EMFILE. The
// acceptor closes the connections it has no descriptor for, and serves the
// next ones once descriptors are free again.
TEST(TcpAcceptorTest, KeepsAcceptingAfterRunningOutOfDescriptors) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // The sanitizers' runtime needs descriptors of its own (UBSan reported a
  // bad vptr once none was left). TransportLimitsE2eTest.
  // TheTcpListenerOutlivesRunningOutOfDescriptors covers this there.
  GTEST_SKIP() << "takes every file descriptor of the test process";
#endif
  Handed handed;  // outlives the acceptor's thread
  // Started before the descriptors run out (starting a thread then confuses
  // the sanitizers' runtime).
  std::unique_ptr<TcpAcceptor> acceptor = StartAcceptor({}, &handed);
  ASSERT_NE(acceptor, nullptr);
  // The clients' sockets, made now and connected once nothing is left.
  std::vector<int> clients;
  for (int i = 0; i < 5; ++i) {
    clients.push_back(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_GE(clients.back(), 0);
  }
  // Every descriptor number below the limit taken: the acceptor's spare is
  // the only one it can free.
  rlimit saved{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &saved), 0);
  std::vector<int> fillers;
  int fd;
  while ((fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0 && fd < 4096) {
    fillers.push_back(fd);
  }
  rlimit low = saved;
  low.rlim_cur = static_cast<rlim_t>(fd >= 0 ? fd : fillers.back() + 1);
  if (fd >= 0) close(fd);
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);

  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(static_cast<uint16_t>(acceptor->port()));
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  timeval timeout{.tv_sec = 30, .tv_usec = 0};
  for (int client : clients) {
    EXPECT_EQ(connect(client, reinterpret_cast<sockaddr*>(&to), sizeof(to)), 0);
    setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  }
  for (int client : clients) {
    EXPECT_TRUE(ClosedByServer(client));
  }
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &saved), 0);
  for (int filler : fillers) close(filler);
  for (int client : clients) close(client);
  EXPECT_EQ(acceptor->refused(), 5u);
  EXPECT_EQ(acceptor->refused(TcpAcceptor::Refusal::kOpenFiles), 5u);
  EXPECT_EQ(handed.size(), 0u);

  const int later = Connect(acceptor->port());
  EXPECT_EQ(handed.WaitFor(1), 1u);
  EXPECT_EQ(acceptor->accepted(), 1u);
  close(later);
}

TEST(TcpAcceptorTest, StopClosesThePort) {
  Handed handed;
  std::unique_ptr<TcpAcceptor> acceptor = StartAcceptor({}, &handed);
  ASSERT_NE(acceptor, nullptr);
  const int port = acceptor->port();
  const int before = Connect(port);
  ASSERT_EQ(handed.WaitFor(1), 1u);
  acceptor->Stop();
  acceptor->Stop();  // idempotent
  EXPECT_EQ(Connect(port), -1);
  close(before);
}

TEST(TcpAcceptorTest, APortInUseIsRefusedWithTheAddress) {
  Handed handed;
  std::unique_ptr<TcpAcceptor> first = StartAcceptor({}, &handed);
  ASSERT_NE(first, nullptr);
  absl::StatusOr<std::unique_ptr<TcpAcceptor>> second =
      TcpAcceptor::Listen({"127.0.0.1", first->port()}, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(),
              HasSubstr(absl::StrCat("127.0.0.1:", first->port())));
  EXPECT_THAT(second.status().message(), HasSubstr("in use"));
}

// A flood keeps the listener readable; Stop() must still be heard. The
// acceptor takes at most a batch of connections before it looks at its
// wake-up again: with 200 waiting and Stop() called during the first
// hand-over, it hands over at most that batch (all 200 if it drained the
// backlog first).
TEST(TcpAcceptorTest, StopIsHeardBetweenBatches) {
  Handed handed;
  absl::Notification first_taken;
  absl::Notification release;
  absl::StatusOr<std::unique_ptr<TcpAcceptor>> acceptor =
      TcpAcceptor::Listen({"127.0.0.1", 0}, {});
  ASSERT_TRUE(acceptor.ok()) << acceptor.status();
  std::vector<int> clients;
  for (int i = 0; i < 200; ++i) clients.push_back(Connect((*acceptor)->port()));
  (*acceptor)->Start(
      [&](int, int fd) {
        handed.Take(fd);
        if (!first_taken.HasBeenNotified()) {
          first_taken.Notify();
          release.WaitForNotification();
        }
      },
      [](const std::string& error) { ADD_FAILURE() << error; });
  first_taken.WaitForNotification();
  std::thread stop([&] { (*acceptor)->Stop(); });
  while (!(*acceptor)->stopping()) std::this_thread::yield();
  release.Notify();
  stop.join();
  EXPECT_LE(handed.size(), 64u);
  for (int fd : clients) close(fd);
}

TEST(TcpAcceptorTest, EveryInterfaceTakesIpv4Clients) {
  Handed handed;
  absl::StatusOr<std::unique_ptr<TcpAcceptor>> acceptor =
      TcpAcceptor::Listen({"", 0}, {});
  ASSERT_TRUE(acceptor.ok()) << acceptor.status();
  (*acceptor)->Start([&handed](int, int fd) { handed.Take(fd); },
                     [](const std::string&) {});
  const int client = Connect((*acceptor)->port());
  EXPECT_EQ(handed.WaitFor(1), 1u);
  close(client);
}

}  // namespace
}  // namespace poold
