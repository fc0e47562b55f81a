// End-to-end tests of poold's life: health while serving, graceful shutdown
// on SIGTERM/SIGINT, refusing a port or unix socket in use, stale sockets and
// bad flags.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/e2e/poold_process.h"

namespace poold::testing {
namespace {

using ::grpc::health::v1::Health;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

// Starts poold and waits until it serves; null (and a test failure) if not.
std::unique_ptr<PooldProcess> StartPoold(const PooldProcess::Options& o) {
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold = PooldProcess::Start(o);
  if (!poold.ok()) {
    ADD_FAILURE() << poold.status();
    return nullptr;
  }
  return *std::move(poold);
}

// Spawns a poold that is expected to fail, and returns its exit code.
int ExitCodeOfFailingStart(const PooldProcess::Options& options,
                           std::string* log) {
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Spawn(options);
  EXPECT_TRUE(poold.ok()) << poold.status();
  if (!poold.ok()) return -1;
  absl::StatusOr<int> code = (*poold)->WaitForExit(absl::Seconds(60));
  *log = (*poold)->Log();
  EXPECT_TRUE(code.ok()) << code.status() << "\n" << *log;
  return code.ok() ? *code : -1;
}

grpc::Status CallAllocate(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = v1::PoolService::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::AllocateRequest request;
  request.set_size(64);
  v1::AllocateResponse response;
  return stub->Allocate(&context, request, &response);
}

// With --shutdown_drain=inf the drain stage lasts until a second signal, so
// every step of a graceful stop can be observed without racing it.
TEST(LifecycleTest, HealthServingThenNotServingAndRefusalAfterSigterm) {
  PooldProcess::Options options;
  options.extra_flags = {"--shutdown_drain=inf", "--shutdown_grace=5s"};
  std::unique_ptr<PooldProcess> poold = StartPoold(options);
  ASSERT_NE(poold, nullptr);
  const std::string target = poold->tcp_target();
  std::shared_ptr<grpc::Channel> channel = poold->NewChannel();

  EXPECT_EQ(
      PooldProcess::CheckHealth(target).value_or(HealthCheckResponse::UNKNOWN),
      HealthCheckResponse::SERVING);
  EXPECT_EQ(PooldProcess::CheckHealth(target, "poold.v1.PoolService")
                .value_or(HealthCheckResponse::UNKNOWN),
            HealthCheckResponse::SERVING);
  EXPECT_EQ(
      PooldProcess::CheckHealth(target, "no.such.Service").status().code(),
      absl::StatusCode::kNotFound);
  EXPECT_TRUE(CallAllocate(channel).ok());

  // Watch the health: SERVING now, NOT_SERVING once SIGTERM arrives.
  auto health = Health::NewStub(channel);
  // (The context holds a reference to the channel: owned here so that it
  // can be released before the shutdown below.)
  auto watch_context = std::make_unique<grpc::ClientContext>();
  watch_context->set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  std::unique_ptr<grpc::ClientReader<HealthCheckResponse>> watch =
      health->Watch(watch_context.get(), HealthCheckRequest());
  HealthCheckResponse update;
  ASSERT_TRUE(watch->Read(&update));
  EXPECT_EQ(update.status(), HealthCheckResponse::SERVING);

  ASSERT_TRUE(poold->Signal(SIGTERM).ok());
  ASSERT_TRUE(watch->Read(&update)) << poold->Log();
  EXPECT_EQ(update.status(), HealthCheckResponse::NOT_SERVING);

  // Draining: health says NOT_SERVING, new RPCs are refused with
  // UNAVAILABLE, on the open connection and on a new one.
  EXPECT_EQ(
      PooldProcess::CheckHealth(target).value_or(HealthCheckResponse::UNKNOWN),
      HealthCheckResponse::NOT_SERVING);
  for (const std::shared_ptr<grpc::Channel>& c :
       {channel, poold->NewChannel(target)}) {
    grpc::Status refused = CallAllocate(c);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(refused.error_message(), "server is shutting down");
  }
  EXPECT_TRUE(poold->Running());

  // A second signal ends the drain; poold stops and exits 0. Close our
  // connection first: an idle client notices the server's GOAWAY only at
  // its next poll (up to 5 s), which would slow the shutdown down.
  watch_context->TryCancel();
  watch->Finish();
  watch.reset();
  watch_context.reset();
  health.reset();
  channel.reset();
  ASSERT_TRUE(poold->Signal(SIGTERM).ok());
  absl::StatusOr<int> code = poold->WaitForExit();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << poold->Log();
  EXPECT_THAT(poold->Log(), HasSubstr("poold stopped"));

  // Gone for good.
  EXPECT_EQ(CallAllocate(poold->NewChannel(target)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST(LifecycleTest, SigintAlsoStopsCleanly) {
  std::unique_ptr<PooldProcess> poold = StartPoold({});
  ASSERT_NE(poold, nullptr);
  ASSERT_TRUE(poold->Signal(SIGINT).ok());
  absl::StatusOr<int> code = poold->WaitForExit();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << poold->Log();
  EXPECT_THAT(poold->Log(), HasSubstr("Interrupt"));
  EXPECT_EQ(PooldProcess::CheckHealth(poold->tcp_target()).status().code(),
            absl::StatusCode::kUnavailable);
}

// Without a drain, poold stops right after completing queued commands, and a
// limited drain ends by itself.
TEST(LifecycleTest, DrainEndsByItself) {
  PooldProcess::Options options;
  options.extra_flags = {"--shutdown_drain=300ms"};
  std::unique_ptr<PooldProcess> poold = StartPoold(options);
  ASSERT_NE(poold, nullptr);
  ASSERT_TRUE(poold->Signal(SIGTERM).ok());
  absl::StatusOr<int> code = poold->WaitForExit();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << poold->Log();
  EXPECT_THAT(poold->Log(), HasSubstr("poold draining for 300ms"));
}

TEST(LifecycleTest, LogsAddressesAndFlagsAtStart) {
  PooldProcess::Options options;
  options.extra_flags = {"--channel_capacity=7"};
  std::unique_ptr<PooldProcess> poold = StartPoold(options);
  ASSERT_NE(poold, nullptr);
  const std::string log = poold->Log();
  EXPECT_THAT(log, HasSubstr("poold listening on " + poold->tcp_target()));
  EXPECT_THAT(log, HasSubstr("channel_capacity=7"));
  EXPECT_THAT(log, HasSubstr("max_block_bytes=67108864"));
  EXPECT_EQ(poold->Stop().value_or(-1), 0);
}

TEST(LifecycleTest, SecondPooldOnTheSamePortExitsNonZero) {
  std::unique_ptr<PooldProcess> first = StartPoold({});
  ASSERT_NE(first, nullptr);
  PooldProcess::Options second;
  second.listen = first->tcp_target();
  std::string log;
  EXPECT_NE(ExitCodeOfFailingStart(second, &log), 0);
  EXPECT_THAT(log, HasSubstr("cannot listen on " + first->tcp_target()));
  EXPECT_THAT(log, HasSubstr("Address already in use"));

  // The first one still serves, alone.
  EXPECT_EQ(PooldProcess::CheckHealth(first->tcp_target())
                .value_or(HealthCheckResponse::UNKNOWN),
            HealthCheckResponse::SERVING);
  EXPECT_EQ(first->Stop().value_or(-1), 0);
}

TEST(LifecycleTest, UnixSocketServesAndASecondPooldOnItRefuses) {
  PooldProcess::Options options;
  options.listen = "";
  options.unix_socket = true;
  std::unique_ptr<PooldProcess> first = StartPoold(options);
  ASSERT_NE(first, nullptr);
  EXPECT_TRUE(first->tcp_target().empty());
  EXPECT_EQ(first->unix_target(), "unix:" + first->unix_socket_path());

  struct stat st;
  ASSERT_EQ(lstat(first->unix_socket_path().c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0660u);

  PooldProcess::Options second = options;
  second.unix_socket_path = first->unix_socket_path();
  std::string log;
  EXPECT_NE(ExitCodeOfFailingStart(second, &log), 0);
  EXPECT_THAT(log, HasSubstr("is in use"));

  // The first one keeps its socket and serves.
  EXPECT_EQ(PooldProcess::CheckHealth(first->unix_target())
                .value_or(HealthCheckResponse::UNKNOWN),
            HealthCheckResponse::SERVING);
  EXPECT_EQ(first->Stop().value_or(-1), 0);
  EXPECT_NE(lstat(first->unix_socket_path().c_str(), &st), 0)
      << "the socket file should be removed at shutdown";
}

TEST(LifecycleTest, TcpAndUnixSocketTogether) {
  PooldProcess::Options options;
  options.unix_socket = true;
  std::unique_ptr<PooldProcess> poold = StartPoold(options);
  ASSERT_NE(poold, nullptr);
  EXPECT_FALSE(poold->tcp_target().empty());
  EXPECT_FALSE(poold->unix_target().empty());
  EXPECT_TRUE(CallAllocate(poold->NewChannel(poold->unix_target())).ok());
  EXPECT_EQ(poold->Stop().value_or(-1), 0);
}

class SocketPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = absl::StrCat(
        ::testing::TempDir(), "poold-e2e-", getpid(), "-",
        ::testing::UnitTest::GetInstance()->current_test_info()->name(),
        ".sock");
    unlink(path_.c_str());
  }
  void TearDown() override { unlink(path_.c_str()); }
  std::string path_;
};

TEST_F(SocketPathTest, StaleSocketFileIsReplaced) {
  // A socket file nobody listens on, as a killed poold leaves behind.
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(path_.size(), sizeof(addr.sun_path));
  std::memcpy(addr.sun_path, path_.data(), path_.size());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  close(fd);

  PooldProcess::Options options;
  options.listen = "";
  options.unix_socket = true;
  options.unix_socket_path = path_;
  std::unique_ptr<PooldProcess> poold = StartPoold(options);
  ASSERT_NE(poold, nullptr);
  EXPECT_THAT(poold->Log(), HasSubstr("removed stale unix socket"));
  EXPECT_EQ(poold->Stop().value_or(-1), 0);
}

TEST_F(SocketPathTest, OtherFileAtTheSocketPathIsLeftAlone) {
  std::ofstream(path_) << "precious";
  PooldProcess::Options options;
  options.listen = "";
  options.unix_socket = true;
  options.unix_socket_path = path_;
  std::string log;
  EXPECT_NE(ExitCodeOfFailingStart(options, &log), 0);
  EXPECT_THAT(log, HasSubstr("is not a socket"));
  std::ifstream in(path_);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
}

// A poold whose socket path was taken over by a newer poold (its file
// replaced) leaves the newer one's socket alone when it stops.
TEST_F(SocketPathTest, AStoppingPooldLeavesANewerOnesSocketAlone) {
  PooldProcess::Options options;
  options.listen = "";
  options.unix_socket = true;
  options.unix_socket_path = path_;
  std::unique_ptr<PooldProcess> older = StartPoold(options);
  ASSERT_NE(older, nullptr);
  const std::string moved = path_ + ".older";
  ASSERT_EQ(rename(path_.c_str(), moved.c_str()), 0);
  std::unique_ptr<PooldProcess> newer = StartPoold(options);
  ASSERT_NE(newer, nullptr);

  EXPECT_EQ(older->Stop().value_or(-1), 0);
  EXPECT_THAT(older->Log(), HasSubstr("no longer the socket this poold"));
  struct stat st;
  EXPECT_EQ(lstat(path_.c_str(), &st), 0) << "the newer socket was removed";
  EXPECT_EQ(PooldProcess::CheckHealth("unix:" + path_)
                .value_or(HealthCheckResponse::UNKNOWN),
            HealthCheckResponse::SERVING);
  EXPECT_EQ(newer->Stop().value_or(-1), 0);
  EXPECT_NE(lstat(path_.c_str(), &st), 0) << "its own socket stays behind";
  unlink(moved.c_str());
}

TEST(LifecycleTest, BadFlagsExitNonZero) {
  std::string log;
  PooldProcess::Options zero_capacity;
  zero_capacity.extra_flags = {"--channel_capacity=0"};
  EXPECT_NE(ExitCodeOfFailingStart(zero_capacity, &log), 0);
  EXPECT_THAT(log, HasSubstr("--channel_capacity"));

  PooldProcess::Options unknown_flag;
  unknown_flag.extra_flags = {"--no_such_flag=1"};
  EXPECT_NE(ExitCodeOfFailingStart(unknown_flag, &log), 0);
  EXPECT_THAT(log, HasSubstr("no_such_flag"));

  PooldProcess::Options nothing;
  nothing.listen = "";
  EXPECT_NE(ExitCodeOfFailingStart(nothing, &log), 0);
  EXPECT_THAT(log, HasSubstr("nothing to listen on"));

  PooldProcess::Options small_messages;
  small_messages.extra_flags = {"--max_message_bytes=1000"};
  EXPECT_NE(ExitCodeOfFailingStart(small_messages, &log), 0);
  EXPECT_THAT(log, HasSubstr("--max_message_bytes"));
}

}  // namespace
}  // namespace poold::testing
