// End-to-end tests of what one client can make poold hold, against the real
// binary: a polite client with 60,000 calls in flight on one channel is
// never refused (the stream limit makes its gRPC queue them); a client that
// never reads its Read responses holds at most --max_payload_bytes_in_flight,
// and all of it comes back when it leaves; the memory of a flood of streams
// reset at once goes back to the OS; a header block over
// --max_metadata_bytes is refused. The hostile clients are
// tests/e2e/h2_attacks.py (Debian's python3-h2).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/pool_test_client.h"
#include "tests/e2e/poold_process.h"
#include "tests/support/subprocess.h"

namespace poold::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr uint64_t kMiB = uint64_t{1} << 20;

std::unique_ptr<PooldProcess> StartPoold(std::vector<std::string> flags) {
  PooldProcess::Options options;
  options.extra_flags = std::move(flags);
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  EXPECT_TRUE(poold.ok()) << poold.status();
  return poold.ok() ? *std::move(poold) : nullptr;
}

std::vector<std::string> AttackArgv(std::vector<std::string> args) {
  std::vector<std::string> argv = {POOLD_PYTHON3, POOLD_H2_ATTACKS_PY};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// Polls GetStats until `done` holds for it or `timeout` passes; returns the
// last answer.
v1::GetStatsResponse StatsWhen(
    PoolTestClient& client,
    const std::function<bool(const v1::GetStatsResponse&)>& done,
    absl::Duration timeout = absl::Seconds(60)) {
  const absl::Time give_up = absl::Now() + timeout;
  v1::GetStatsResponse stats;
  while (true) {
    stats.Clear();
    const grpc::Status status = client.GetStats(false, &stats);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok() || done(stats) || absl::Now() > give_up) return stats;
    absl::SleepFor(absl::Milliseconds(20));
  }
}

// Polls poold's RSS until it is at most `bytes` or `timeout` passes;
// returns the last reading.
uint64_t RssWhenAtMost(const PooldProcess& poold, uint64_t bytes,
                       absl::Duration timeout = absl::Seconds(30)) {
  const absl::Time give_up = absl::Now() + timeout;
  while (true) {
    const uint64_t rss = poold.RssBytes().value_or(0);
    if (rss <= bytes || absl::Now() > give_up) return rss;
    absl::SleepFor(absl::Milliseconds(50));
  }
}

// Waits (at most a minute) for an idle poold's RSS to stop moving, and
// returns it.
uint64_t SettledRss(const PooldProcess& poold) {
  uint64_t last = poold.RssBytes().value_or(0);
  for (int i = 0; i < 120; ++i) {
    absl::SleepFor(absl::Milliseconds(500));
    const uint64_t now = poold.RssBytes().value_or(0);
    if (now + kMiB / 4 >= last && now <= last + kMiB / 4) return now;
    last = now;
  }
  return last;
}

// H: one client keeps 60,000 Reads in flight on one channel. poold allows
// --max_concurrent_streams (100) of them at once, far below the channel's
// 1,024 commands, so the client's gRPC queues the rest and every call is
// answered OK; none is refused RESOURCE_EXHAUSTED.
TEST(TransportLimitsE2eTest, APoliteClientWithManyCallsInFlightIsNeverRefused) {
  std::unique_ptr<PooldProcess> poold = StartPoold({});
  ASSERT_NE(poold, nullptr);
  PoolTestClient client(poold->NewChannel());
  v1::AllocateResponse block;
  ASSERT_TRUE(client.Allocate(100, std::string(100, 'p'), &block).ok());

  constexpr int kCalls = 60000;
  struct Call {
    grpc::ClientContext context;
    v1::ReadRequest request;
    v1::ReadResponse response;
  };
  std::vector<std::unique_ptr<Call>> calls(kCalls);
  absl::Mutex mu;
  int answered = 0;                 // guarded by mu
  int ok = 0;                       // guarded by mu
  std::vector<std::string> errors;  // guarded by mu; the first few
  for (int i = 0; i < kCalls; ++i) {
    calls[i] = std::make_unique<Call>();
    Call& call = *calls[i];
    call.context.set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Minutes(5)));
    call.request.set_handle(block.handle());
    client.stub()->async()->Read(
        &call.context, &call.request, &call.response,
        [&mu, &answered, &ok, &errors, &call](grpc::Status status) {
          absl::MutexLock lock(&mu);
          ++answered;
          if (status.ok() && call.response.data() == std::string(100, 'p')) {
            ++ok;
          } else if (errors.size() < 5) {
            errors.push_back(absl::StrCat(status.error_code(), ": ",
                                          status.error_message()));
          }
        });
  }
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(
        +[](int* n) { return *n == kCalls; }, &answered));
    EXPECT_EQ(ok, kCalls) << "first errors: "
                          << ::testing::PrintToString(errors);
  }
  v1::GetStatsResponse stats;
  ASSERT_TRUE(client.GetStats(false, &stats).ok());
  EXPECT_EQ(stats.worker().commands_refused(), 0u);
  EXPECT_EQ(poold->Stop().value_or(-1), 0) << poold->Log();
}

// F: a client that never reads its responses (no flow-control window) asks
// for a 16 MiB block 24 times. poold holds four responses (64 MiB, the
// limit) and refuses the other 20 at once; meanwhile another client's Read
// of that size is refused too, saying why. When the client leaves, every
// byte comes back: the budget, and the process's RSS.
TEST(TransportLimitsE2eTest, UnreadResponsesHoldAtMostTheLimitAndComeBack) {
  std::unique_ptr<PooldProcess> poold =
      StartPoold({absl::StrCat("--max_payload_bytes_in_flight=", 64 * kMiB)});
  ASSERT_NE(poold, nullptr);
  PoolTestClient client(poold->NewChannel());
  const std::string contents = BlockContents(7, 16 * kMiB);
  v1::AllocateResponse block;
  ASSERT_TRUE(client.Allocate(contents.size(), contents, &block).ok());
  const uint64_t rss_before = SettledRss(*poold);

  const std::string done_file = poold->temp_dir() + "/attacker-done";
  absl::StatusOr<std::unique_ptr<Subprocess>> attacker = Subprocess::Spawn(
      AttackArgv({"unread-reads", poold->tcp_target(),
                  std::to_string(block.handle()), "24", done_file}),
      poold->temp_dir() + "/attacker.log");
  ASSERT_TRUE(attacker.ok()) << attacker.status();

  const v1::GetStatsResponse held =
      StatsWhen(client, [](const v1::GetStatsResponse& s) {
        return s.transport().payload_refusals() >= 20;
      });
  EXPECT_EQ(held.transport().payload_refusals(), 20u)
      << (*attacker)->ReadOutput();
  EXPECT_EQ(held.transport().payload_bytes_in_flight(), 64 * kMiB);
  EXPECT_EQ(held.transport().max_payload_bytes_in_flight(), 64 * kMiB);
  const uint64_t rss_held = poold->RssBytes().value_or(0);
  // Each held response is in memory once: poold freed its response message
  // when it answered; gRPC's serialized copy waits for the client. (A
  // sanitizer's allocator keeps freed memory in quarantine: RSS says little
  // there.)
  if (!kSanitizerBuild) {
    EXPECT_LE(rss_held, rss_before + 64 * kMiB + 16 * kMiB);
  }

  std::string data;
  const grpc::Status refused = client.Read(block.handle(), 0, 0, &data);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(),
              HasSubstr("--max_payload_bytes_in_flight"));

  std::ofstream(done_file).put('\n');
  absl::StatusOr<int> code = (*attacker)->Wait(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << (*attacker)->ReadOutput();

  const v1::GetStatsResponse released =
      StatsWhen(client, [](const v1::GetStatsResponse& s) {
        return s.transport().payload_bytes_in_flight() == 0;
      });
  EXPECT_EQ(released.transport().payload_bytes_in_flight(), 0u);
  ASSERT_TRUE(client.Read(block.handle(), 0, 0, &data).ok());
  EXPECT_TRUE(data == contents);
  const uint64_t rss_after = kSanitizerBuild
                                 ? poold->RssBytes().value_or(0)
                                 : RssWhenAtMost(*poold, rss_before + 8 * kMiB);
  if (!kSanitizerBuild) {
    EXPECT_LE(rss_after, rss_before + 8 * kMiB)
        << "before " << FormatBytes(rss_before) << ", holding "
        << FormatBytes(rss_held) << ", after " << FormatBytes(rss_after);
  }
  std::fprintf(stderr,
               "unread responses: RSS %s before, %s while 64 MiB of "
               "responses were held, %s after\n",
               FormatBytes(rss_before).c_str(), FormatBytes(rss_held).c_str(),
               FormatBytes(rss_after).c_str());
  EXPECT_EQ(poold->Stop().value_or(-1), 0) << poold->Log();
}

// F: 50,000 streams opened and reset at once on one connection. gRPC 1.51
// keeps their calls a while (CVE-2023-44487, see docs/SECURITY.md) and RSS
// grows by hundreds of MiB; none of them reaches the worker. As gRPC frees
// them, in stages, the idle worker sees malloc's free memory grow and hands
// it back: RSS settles within a few MiB of where it was. A second flood
// settles within the same bound as the first (nothing accumulates), and
// another client is served throughout.
TEST(TransportLimitsE2eTest, MemoryOfStreamsResetAtOnceGoesBack) {
  if (kSanitizerBuild) GTEST_SKIP() << "needs glibc's malloc and its trim";
  std::unique_ptr<PooldProcess> poold = StartPoold({});
  ASSERT_NE(poold, nullptr);
  PoolTestClient client(poold->NewChannel());
  const uint64_t rss_before = SettledRss(*poold);
  std::vector<uint64_t> settled;
  for (int round = 0; round < 2; ++round) {
    absl::StatusOr<ProcessResult> flood =
        RunProcess(AttackArgv({"rapid-reset", poold->tcp_target(), "50000"}),
                   poold->temp_dir(), absl::Seconds(120));
    ASSERT_TRUE(flood.ok()) << flood.status();
    EXPECT_EQ(flood->exit_code, 0) << flood->output;
    EXPECT_THAT(flood->output, StartsWith("reset ")) << flood->output;
    const uint64_t peak = poold->RssBytes().value_or(0);
    v1::GetStatsResponse stats;
    ASSERT_TRUE(client.GetStats(false, &stats, absl::Seconds(10)).ok());
    // gRPC frees the calls some seconds later; then the worker trims.
    RssWhenAtMost(*poold, rss_before + 8 * kMiB, absl::Seconds(90));
    settled.push_back(SettledRss(*poold));
    std::fprintf(stderr,
                 "rapid reset, round %d: %s  RSS %s before, %s right after, "
                 "%s settled\n",
                 round + 1, flood->output.c_str(),
                 FormatBytes(rss_before).c_str(), FormatBytes(peak).c_str(),
                 FormatBytes(settled.back()).c_str());
  }
  // Up to a GiB goes back after the first flood and after the second; what
  // stays (1.7 to 2.7 MiB over 16 floods: gRPC's threads and caches) does
  // not add up. (Before the idle trim followed malloc's free memory by the
  // MiB rather than by 16 MiB, one flood in seven left 10 to 25 MiB.)
  for (uint64_t after : settled) EXPECT_LE(after, rss_before + 8 * kMiB);
  EXPECT_EQ(poold->Stop().value_or(-1), 0) << poold->Log();
}

// F: a header block over --max_metadata_bytes is refused; one under it is
// served.
TEST(TransportLimitsE2eTest, AHeaderBlockOverTheLimitIsRefused) {
  std::unique_ptr<PooldProcess> poold =
      StartPoold({"--max_metadata_bytes=16384"});
  ASSERT_NE(poold, nullptr);
  absl::StatusOr<ProcessResult> small = RunProcess(
      AttackArgv({"big-headers", poold->tcp_target(), "8192", "ack"}),
      poold->temp_dir(), absl::Seconds(60));
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_THAT(small->output, StartsWith("grpc-status 0")) << small->output;

  absl::StatusOr<ProcessResult> big =
      RunProcess(AttackArgv({"big-headers", poold->tcp_target(),
                             std::to_string(1 << 20), "ack"}),
                 poold->temp_dir(), absl::Seconds(60));
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_THAT(big->output, Not(HasSubstr("grpc-status 0"))) << big->output;
  std::fprintf(stderr, "1 MiB of metadata: %s", big->output.c_str());
  EXPECT_TRUE(poold->Running());
  PoolTestClient client(poold->NewChannel());
  v1::GetStatsResponse stats;
  EXPECT_TRUE(client.GetStats(false, &stats).ok());
  EXPECT_EQ(poold->Stop().value_or(-1), 0) << poold->Log();
}

// Connects `count` sockets of `address`'s family to it and keeps them open
// (they never speak HTTP/2); stops at the first connect that fails.
std::vector<int> HoldConnections(const sockaddr* address, socklen_t length,
                                 int count) {
  std::vector<int> sockets;
  for (int i = 0; i < count; ++i) {
    const int fd = socket(address->sa_family, SOCK_STREAM, 0);
    if (fd < 0) break;
    if (connect(fd, address, length) != 0) {
      close(fd);
      break;
    }
    sockets.push_back(fd);
  }
  return sockets;
}

std::vector<int> HoldTcpConnections(int port, int count) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return HoldConnections(reinterpret_cast<const sockaddr*>(&address),
                         sizeof(address), count);
}

// C: a burst of connections past the open-files limit stopped gRPC 1.51's TCP
// listener for good ("Failed accept4: Too many open files"). poold accepts
// TCP connections itself: those beyond --max_connections (lowered to fit
// the open-files limit) are closed at once and counted, clients over the
// unix socket are served meanwhile, and once the flood leaves TCP clients
// are served again. poold neither stops nor logs gRPC's failed accept.
TEST(TransportLimitsE2eTest, AConnectionFloodIsRefusedAndTheListenerLives) {
  PooldProcess::Options options;
  options.unix_socket = true;
  options.command_prefix = {"/usr/bin/prlimit", "--nofile=128:128"};
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  ASSERT_TRUE(poold.ok()) << poold.status();
  PoolTestClient local((*poold)->NewChannel((*poold)->unix_target()));
  // The start-up check's TCP connection gone: every place is free.
  v1::GetStatsResponse stats =
      StatsWhen(local, [](const v1::GetStatsResponse& s) {
        return s.transport().connections_open() == 0;
      });
  const uint64_t accepted_before = stats.transport().connections_accepted();
  const uint64_t limit = stats.transport().max_connections();
  EXPECT_EQ(limit, 64u);  // 128 descriptors, half kept for poold's own
  EXPECT_THAT((*poold)->Log(),
              HasSubstr("--max_connections=1024 lowered to 64"));

  std::vector<int> flood = HoldTcpConnections((*poold)->tcp_port(), 300);
  EXPECT_EQ(flood.size(), 300u);
  stats = StatsWhen(local, [&](const v1::GetStatsResponse& s) {
    return s.transport().connections_accepted() - accepted_before +
               s.transport().connections_refused() >=
           300;
  });
  EXPECT_EQ(stats.transport().connections_accepted() - accepted_before, limit);
  EXPECT_EQ(stats.transport().connections_refused(), 300 - limit);
  EXPECT_EQ(stats.transport().connections_refused_max_connections(),
            300 - limit);
  EXPECT_EQ(stats.transport().connections_open(), limit);
  // While the flood holds every place, a TCP client is turned away.
  {
    PoolTestClient tcp((*poold)->NewChannel((*poold)->tcp_target()));
    v1::GetStatsResponse ignored;
    EXPECT_EQ(tcp.GetStats(false, &ignored).error_code(),
              grpc::StatusCode::UNAVAILABLE);
  }
  for (int fd : flood) close(fd);
  // Once it leaves (gRPC closes its ends; the acceptor counts them again
  // every second), TCP clients are served.
  stats = StatsWhen(local, [](const v1::GetStatsResponse& s) {
    return s.transport().connections_open() == 0;
  });
  EXPECT_EQ(stats.transport().connections_open(), 0u);
  PoolTestClient tcp((*poold)->NewChannel((*poold)->tcp_target()));
  v1::GetStatsResponse after;
  const grpc::Status status = tcp.GetStats(false, &after);
  EXPECT_TRUE(status.ok()) << status.error_message() << "\n" << (*poold)->Log();
  EXPECT_THAT((*poold)->Log(), HasSubstr("refused: "));
  EXPECT_FALSE((*poold)->WaitForExit(absl::ZeroDuration()).ok());
}

// The same on the unix socket at `path`.
std::vector<int> HoldUnixConnections(const std::string& path, int count) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.size() >= sizeof(address.sun_path)) return {};
  path.copy(address.sun_path, path.size());
  return HoldConnections(reinterpret_cast<const sockaddr*>(&address),
                         sizeof(address), count);
}

// C, the part gRPC 1.51 cannot do: poold runs out of file descriptors (a
// flood on the unix socket, whose listener is still gRPC's, takes them all
// and stops that listener). TCP clients arriving meanwhile are closed at
// once, with a spare descriptor, and once descriptors are free again the TCP
// listener serves as before. (gRPC's own TCP listener stopped for good here.)
TEST(TransportLimitsE2eTest, TheTcpListenerOutlivesRunningOutOfDescriptors) {
  PooldProcess::Options options;
  options.unix_socket = true;
  options.command_prefix = {"/usr/bin/prlimit", "--nofile=64:64"};
  options.extra_flags = {"--listener_check_interval=0"};
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  ASSERT_TRUE(poold.ok()) << poold.status();
  std::vector<int> unix_flood =
      HoldUnixConnections((*poold)->unix_socket_path(), 100);
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!absl::StrContains((*poold)->Log(), "Too many open files") &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_THAT((*poold)->Log(), HasSubstr("Too many open files"));

  // No descriptor left: each TCP client is closed at once.
  std::vector<int> tcp = HoldTcpConnections((*poold)->tcp_port(), 5);
  ASSERT_EQ(tcp.size(), 5u);
  for (int fd : tcp) {
    timeval timeout{.tv_sec = 30, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    char byte;
    const ssize_t n = recv(fd, &byte, 1, 0);
    EXPECT_TRUE(n == 0 || (n < 0 && errno == ECONNRESET))
        << "recv: " << n << " " << errno;
    close(fd);
  }
  EXPECT_THAT((*poold)->Log(), HasSubstr("(the open-files limit)"));

  for (int fd : unix_flood) close(fd);
  // Descriptors free again: gRPC closes the flood's ends as it notices.
  // (Wait for it before calling: without a descriptor, UBSan's vptr check
  // cannot open the pipe it probes memory with and reports every new dynamic
  // type as invalid, which stops a sanitized poold.)
  const absl::Time freed_by = absl::Now() + absl::Seconds(30);
  absl::StatusOr<int> open_descriptors = (*poold)->OpenDescriptors();
  while (open_descriptors.ok() && *open_descriptors > 56 &&
         absl::Now() < freed_by) {
    absl::SleepFor(absl::Milliseconds(20));
    open_descriptors = (*poold)->OpenDescriptors();
  }
  ASSERT_TRUE(open_descriptors.ok()) << open_descriptors.status();
  ASSERT_LE(*open_descriptors, 56) << (*poold)->Log();
  // TCP serves.
  grpc::Status status;
  v1::GetStatsResponse stats;
  const absl::Time served_by = absl::Now() + absl::Seconds(30);
  do {
    PoolTestClient client((*poold)->NewChannel((*poold)->tcp_target()));
    stats.Clear();
    status = client.GetStats(false, &stats);
    if (!status.ok()) absl::SleepFor(absl::Milliseconds(100));
  } while (!status.ok() && absl::Now() < served_by);
  ASSERT_TRUE(status.ok()) << status.error_message() << "\n" << (*poold)->Log();
  EXPECT_GE(stats.transport().connections_refused(), 5u);
  EXPECT_GE(stats.transport().connections_refused_open_files(), 5u);
}

// gRPC's own listener, the unix socket's, still stops for good on EMFILE.
// poold's checks find it after three failed ones (each waits out its 5 s
// deadline): health goes NOT_SERVING and poold exits 1, so that Kubernetes
// restarts it, instead of living on as a zombie that still answers over TCP.
TEST(TransportLimitsE2eTest, ADeadListenerMakesPooldExitNonZero) {
  PooldProcess::Options options;
  options.unix_socket = true;
  options.command_prefix = {"/usr/bin/prlimit", "--nofile=64:64"};
  options.extra_flags = {"--listener_check_interval=1s"};
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  ASSERT_TRUE(poold.ok()) << poold.status();
  // More connections than descriptors: accept() fails with EMFILE.
  std::vector<int> sockets =
      HoldUnixConnections((*poold)->unix_socket_path(), 100);
  // Until poold has tried to accept them and failed.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (!absl::StrContains((*poold)->Log(), "Too many open files") &&
         absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  for (int fd : sockets) close(fd);
  absl::StatusOr<int> code = (*poold)->WaitForExit(absl::Seconds(60));
  ASSERT_TRUE(code.ok()) << code.status() << "\n" << (*poold)->Log();
  EXPECT_EQ(*code, 1) << (*poold)->Log();
  EXPECT_THAT((*poold)->Log(), HasSubstr("Too many open files"));
  EXPECT_THAT((*poold)->Log(),
              HasSubstr(absl::StrCat("poold no longer accepts connections on ",
                                     (*poold)->unix_target())));
}

}  // namespace
}  // namespace poold::testing
