// Tests of listen-address parsing and unix socket path handling.
#include "server/endpoints.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

using ::testing::HasSubstr;

TEST(ParseListenAddressTest, AcceptsHostPortForms) {
  absl::StatusOr<HostPort> v4 = ParseListenAddress("127.0.0.1:50051");
  ASSERT_TRUE(v4.ok());
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 50051);

  absl::StatusOr<HostPort> v6 = ParseListenAddress("[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 0);

  absl::StatusOr<HostPort> name = ParseListenAddress("localhost:8080");
  ASSERT_TRUE(name.ok());
  EXPECT_EQ(name->host, "localhost");

  absl::StatusOr<HostPort> any = ParseListenAddress(":9");
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->host, "");
  EXPECT_EQ(any->port, 9);
}

TEST(ParseListenAddressTest, RejectsMalformedAddresses) {
  for (const char* bad :
       {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:65536",
        "127.0.0.1:-1", "::1:80", "[::1:80", "host:80x"}) {
    EXPECT_EQ(ParseListenAddress(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(FormatHostPortTest, BracketsIpv6) {
  EXPECT_EQ(FormatHostPort("127.0.0.1", 1), "127.0.0.1:1");
  EXPECT_EQ(FormatHostPort("::1", 2), "[::1]:2");
  EXPECT_EQ(FormatHostPort("", 3), ":3");
}

TEST(UnixSocketPathTest, LengthLimit) {
  EXPECT_TRUE(ValidateUnixSocketPath("/tmp/x.sock").ok());
  EXPECT_EQ(ValidateUnixSocketPath("").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateUnixSocketPath("/" + std::string(200, 'a')).code(),
            absl::StatusCode::kInvalidArgument);
}

class UnixSocketFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = absl::StrCat(::testing::TempDir(), "poold-endpoints-", getpid(),
                         ".sock");
    unlink(path_.c_str());
  }
  void TearDown() override {
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
  }

  // Binds a unix socket at path_, listening or not.
  void BindSocket(bool listen_on_it) {
    fd_ = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd_, 0);
    sockaddr_un addr = {};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path_.data(), path_.size());
    ASSERT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
        << std::strerror(errno);
    if (listen_on_it) {
      ASSERT_EQ(listen(fd_, 4), 0);
    }
  }

  bool Exists() const {
    struct stat st;
    return lstat(path_.c_str(), &st) == 0;
  }

  std::string path_;
  int fd_ = -1;
};

TEST_F(UnixSocketFileTest, NothingThereIsFree) {
  EXPECT_TRUE(ClaimUnixSocketPath(path_).ok());
}

TEST_F(UnixSocketFileTest, StaleSocketIsRemoved) {
  BindSocket(/*listen_on_it=*/false);
  close(fd_);
  fd_ = -1;
  ASSERT_TRUE(Exists());
  EXPECT_TRUE(ClaimUnixSocketPath(path_).ok());
  EXPECT_FALSE(Exists());
}

TEST_F(UnixSocketFileTest, LiveSocketIsRefusedAndKept) {
  BindSocket(/*listen_on_it=*/true);
  absl::Status status = ClaimUnixSocketPath(path_);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(status.message(), HasSubstr("in use"));
  EXPECT_TRUE(Exists());
}

// A listener that never accepts, its backlog full: a blocking connect would
// wait forever; the check answers at once that the socket is in use.
TEST_F(UnixSocketFileTest, AListenerWithAFullBacklogIsInUseAndDoesNotHang) {
  BindSocket(/*listen_on_it=*/true);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.data(), path_.size());
  std::vector<int> clients;
  // Fill the backlog with connections nobody accepts.
  while (clients.size() < 64) {
    const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    clients.push_back(fd);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      ASSERT_EQ(errno, EAGAIN) << std::strerror(errno);
      break;
    }
  }
  ASSERT_LT(clients.size(), 64u) << "the backlog never filled";
  const absl::Status status = ClaimUnixSocketPath(path_);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(status.message(), HasSubstr("does not accept"));
  EXPECT_TRUE(Exists());
  for (int fd : clients) close(fd);
}

TEST_F(UnixSocketFileTest, RegularFileIsRefusedAndKept) {
  std::ofstream(path_) << "not a socket";
  absl::Status status = ClaimUnixSocketPath(path_);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("not a socket"));
  EXPECT_TRUE(Exists());
  EXPECT_FALSE(UnixSocketFileId(path_).ok());
  RemoveUnixSocketFile(path_, FileId{});  // not a socket: left alone
  EXPECT_TRUE(Exists());
}

TEST_F(UnixSocketFileTest, RemoveDeletesItsOwnSocketFile) {
  BindSocket(/*listen_on_it=*/false);
  absl::StatusOr<FileId> id = UnixSocketFileId(path_);
  ASSERT_TRUE(id.ok()) << id.status();
  RemoveUnixSocketFile(path_, *id);
  EXPECT_FALSE(Exists());
  RemoveUnixSocketFile(path_, *id);  // nothing there: fine
}

// A socket that replaced ours at the same path (a newer poold's) stays.
TEST_F(UnixSocketFileTest, RemoveLeavesAReplacementAlone) {
  BindSocket(/*listen_on_it=*/false);
  absl::StatusOr<FileId> ours = UnixSocketFileId(path_);
  ASSERT_TRUE(ours.ok()) << ours.status();
  const std::string moved = path_ + ".old";
  ASSERT_EQ(rename(path_.c_str(), moved.c_str()), 0);
  close(fd_);
  fd_ = -1;
  BindSocket(/*listen_on_it=*/false);
  RemoveUnixSocketFile(path_, *ours);
  EXPECT_TRUE(Exists());
  unlink(moved.c_str());
}

TEST(ProbeTcpBindTest, ReportsAPortInUse) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(listen(fd, 4), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);

  absl::Status in_use = ProbeTcpBind({"127.0.0.1", port});
  EXPECT_EQ(in_use.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(in_use.message(), HasSubstr("in use"));
  close(fd);

  EXPECT_TRUE(ProbeTcpBind({"127.0.0.1", 0}).ok());
  EXPECT_EQ(ProbeTcpBind({"no-such-host.invalid", 0}).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace poold
