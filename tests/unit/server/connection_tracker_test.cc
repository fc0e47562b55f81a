// Tests of ConnectionTracker: the limits, and finding connections whose
// descriptors were closed or reused.
#include "server/connection_tracker.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vector>

#include "glog/logging.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

using ::testing::HasSubstr;

// A connected socket (one end of a pair; the other end is closed).
int Socket() {
  int ends[2];
  CHECK_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, ends), 0);
  close(ends[1]);
  return ends[0];
}

// A clock for the tracker, past kFullPruneInterval at every call.
absl::Time Later() {
  static absl::Time now = absl::UnixEpoch();
  now += ConnectionTracker::kFullPruneInterval;
  return now;
}

TEST(ConnectionTrackerTest, RefusesBeyondTheLimitUntilOneCloses) {
  ConnectionTracker tracker({.max_connections = 3});
  std::vector<int> fds;
  for (int i = 0; i < 3; ++i) {
    fds.push_back(Socket());
    ASSERT_TRUE(tracker.Admit(fds.back(), "ipv4:10.0.0.1", Later()).ok());
  }
  const int fourth = Socket();
  const absl::Status refused = tracker.Admit(fourth, "ipv4:10.0.0.2", Later());
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("--max_connections"));
  EXPECT_EQ(tracker.open(), 3u);

  // gRPC closes one: the next admission finds out.
  close(fds[1]);
  EXPECT_TRUE(tracker.Admit(fourth, "ipv4:10.0.0.2", Later()).ok());
  EXPECT_EQ(tracker.open(), 3u);
  EXPECT_EQ(tracker.open_from("ipv4:10.0.0.1"), 2u);
  close(fds[0]);
  close(fds[2]);
  close(fourth);
  EXPECT_EQ(tracker.Prune(Later()), 0u);
  EXPECT_EQ(tracker.open_from("ipv4:10.0.0.1"), 0u);
}

TEST(ConnectionTrackerTest, LimitsEachAddressOnItsOwn) {
  ConnectionTracker tracker({.max_connections = 0, .max_per_address = 2});
  std::vector<int> fds;
  for (int i = 0; i < 2; ++i) {
    fds.push_back(Socket());
    ASSERT_TRUE(tracker.Admit(fds.back(), "ipv4:10.0.0.1", Later()).ok());
  }
  fds.push_back(Socket());
  const absl::Status refused =
      tracker.Admit(fds.back(), "ipv4:10.0.0.1", Later());
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("ipv4:10.0.0.1"));
  EXPECT_THAT(refused.message(), HasSubstr("--max_connections_per_address"));
  // Another address is not held back by the first.
  EXPECT_TRUE(tracker.Admit(fds.back(), "ipv6:2001:db8::/64", Later()).ok());
  EXPECT_EQ(tracker.open(), 3u);
  for (int fd : fds) close(fd);
}

TEST(ConnectionTrackerTest, ADescriptorNumberReusedForAnotherFileIsClosed) {
  ConnectionTracker tracker({.max_connections = 10});
  const int fd = Socket();
  ASSERT_TRUE(tracker.Admit(fd, "ipv4:10.0.0.1", Later()).ok());
  // gRPC closed it, and the number now names another file.
  close(fd);
  const int other = open("/dev/null", O_RDONLY);
  ASSERT_EQ(other, fd);  // the lowest free number
  EXPECT_EQ(tracker.Prune(Later()), 0u);
  close(other);
}

// A full tracker looks for ended connections at most once per
// kFullPruneInterval: a flood of refusals does not pay a look each.
TEST(ConnectionTrackerTest, AFullTrackerLooksAgainOnlyAfterTheInterval) {
  ConnectionTracker tracker({.max_connections = 1});
  const absl::Time start = absl::UnixEpoch();
  const int first = Socket();
  ASSERT_TRUE(tracker.Admit(first, "ipv4:10.0.0.1", start).ok());
  const int second = Socket();
  EXPECT_FALSE(tracker.Admit(second, "ipv4:10.0.0.1", start).ok());
  close(first);
  // Within the interval of the last look: still counted as open.
  EXPECT_FALSE(
      tracker.Admit(second, "ipv4:10.0.0.1", start + absl::Milliseconds(50))
          .ok());
  EXPECT_TRUE(tracker
                  .Admit(second, "ipv4:10.0.0.1",
                         start + ConnectionTracker::kFullPruneInterval)
                  .ok());
  close(second);
}

TEST(ConnectionTrackerTest, ANumberAdmittedAgainCountsOnce) {
  ConnectionTracker tracker({.max_connections = 10});
  const int fd = Socket();
  ASSERT_TRUE(tracker.Admit(fd, "ipv4:10.0.0.1", Later()).ok());
  close(fd);
  const int again = Socket();
  ASSERT_EQ(again, fd);
  ASSERT_TRUE(tracker.Admit(again, "ipv4:10.0.0.2", Later()).ok());
  EXPECT_EQ(tracker.open(), 1u);
  EXPECT_EQ(tracker.open_from("ipv4:10.0.0.1"), 0u);
  EXPECT_EQ(tracker.open_from("ipv4:10.0.0.2"), 1u);
  close(again);
}

TEST(ConnectionTrackerTest, AClosedDescriptorIsNotAdmitted) {
  ConnectionTracker tracker({.max_connections = 10});
  const int fd = Socket();
  close(fd);
  EXPECT_EQ(tracker.Admit(fd, "ipv4:10.0.0.1", Later()).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(tracker.open(), 0u);
}

}  // namespace
}  // namespace poold
