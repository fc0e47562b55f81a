// End-to-end tests of poolctl's command line and of `health`: help, usage
// errors (exit 1), a server that is down (exit 2) or draining (health 4,
// other RPCs 3), and health over TCP and a unix socket.
#include <signal.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.pb.h"
#include "gtest/gtest.h"
#include "tests/e2e/poolctl/poolctl_e2e_fixture.h"

namespace poold::testing {
namespace {

using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

// One valid invocation of every subcommand (each talks to the server).
const std::vector<std::vector<std::string>>& EverySubcommand() {
  static const auto* const kAll =
      new std::vector<std::vector<std::string>>{{"stats"},
                                                {"analyze"},
                                                {"defrag"},
                                                {"alloc", "--size=10"},
                                                {"read", "1"},
                                                {"write", "1", "--data=x"},
                                                {"free", "1"},
                                                {"health"},
                                                {"load", "--count=10"},
                                                {"watch", "--iterations=1"}};
  return *kAll;
}

TEST_F(PoolctlTest, HelpListsSubcommandsFlagsAndExitCodes) {
  PoolctlResult r = RunRaw({"--help"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  for (const char* word :
       {"stats", "analyze", "defrag", "alloc", "read", "write", "free",
        "health", "load", "watch", "--target", "--timeout", "--output",
        "Exit codes", "2  cannot connect"}) {
    EXPECT_THAT(r.out, HasSubstr(word));
  }
  r = RunRaw({"help", "load"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, StartsWith("usage: poolctl load"));
  EXPECT_THAT(r.out, HasSubstr("--free_fraction"));
  r = RunRaw({"read", "--help"});
  EXPECT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, StartsWith("usage: poolctl read HANDLE"));
}

TEST_F(PoolctlTest, UsageErrorsExitOne) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{}, "no subcommand given"},
           {{"frobnicate"}, "unknown subcommand \"frobnicate\""},
           {{"stats", "--bogus"}, "unknown flag --bogus"},
           {{"--bogus=1", "stats"}, "unknown flag --bogus"},
           {{"stats", "--size=1"}, "--size does not apply to stats"},
           {{"stats", "extra"}, "stats takes no arguments"},
           {{"stats", "--output=xml"}, "unknown output format"},
           {{"stats", "--timeout=0s"}, "--timeout must be positive"},
           {{"stats", "--timeout=soon"}, "timeout"},
           {{"stats", "--target="}, "bad --target: empty target"},
           {{"health", "--connect_timeout=0s"}, "--connect_timeout"}}) {
    const PoolctlResult r = RunRaw(c.args);
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_THAT(r.err, HasSubstr(c.message)) << Describe(r);
    EXPECT_EQ(r.out, "");
  }
}

TEST_F(PoolctlTest, AnUnreadableTlsFileIsNamedWithoutTheUsageLine) {
  const PoolctlResult r =
      RunRaw({"stats", "--tls_ca_file=/nonexistent/ca.pem"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_THAT(r.err, StartsWith("poolctl: cannot set up TLS: "
                                "--tls_ca_file=/nonexistent/ca.pem"))
      << Describe(r);
  EXPECT_THAT(r.err, Not(HasSubstr("usage:"))) << Describe(r);
  EXPECT_EQ(r.out, "");
}

TEST_F(PoolctlTest, EverySubcommandExitsTwoWhenNothingListens) {
  for (const std::vector<std::string>& args : EverySubcommand()) {
    const PoolctlResult r = RunAt(DeadTarget(), args);
    EXPECT_EQ(r.exit_code, 2) << args[0] << ": " << Describe(r);
    EXPECT_THAT(r.err, StartsWith("poolctl: UNAVAILABLE: cannot connect to "))
        << Describe(r);
    EXPECT_EQ(r.out, "");
  }
}

TEST_F(PoolctlTest, StoppedServerOnTcpExitsTwo) {
  const std::string target = poold_->tcp_target();
  absl::StatusOr<int> code = poold_->Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  const PoolctlResult r = RunAt(target, {"stats"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("cannot connect to " + target));
}

TEST_F(PoolctlTest, ConnectTimeoutExitsTwo) {
  // A TEST-NET-1 address (RFC 5737): never answers, or is unreachable.
  const PoolctlResult r =
      RunAt("192.0.2.1:9", {"stats", "--connect_timeout=300ms"});
  EXPECT_EQ(r.exit_code, 2) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("cannot connect to 192.0.2.1:9"));
}

TEST_F(PoolctlTest, HealthOverTcpAndUnixSocket) {
  for (const std::string& target :
       {poold_->tcp_target(), poold_->unix_target()}) {
    PoolctlResult r = RunAt(target, {"health"});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.out, "SERVING\n");
    r = RunAt(target, {"health", "--output=json"});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(ParseJson<HealthCheckResponse>(r.out).status(),
              HealthCheckResponse::SERVING);
    r = RunAt(target, {"health", "--service=poold.v1.PoolService"});
    EXPECT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_EQ(r.out, "SERVING\n");
  }
}

TEST_F(PoolctlTest, HealthOfAnUnknownServiceExitsThree) {
  const PoolctlResult r = Run({"health", "--service=no.such.Service"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, StartsWith("poolctl: NOT_FOUND: "));
}

// A poold that drains until its second signal: health says NOT_SERVING and
// every PoolService RPC answers UNAVAILABLE, while it still listens.
class DrainingPoolctlTest : public PoolctlTest {
 protected:
  void SetUp() override {
    RestartPoold({"--shutdown_drain=inf"});
    ASSERT_NE(poold_, nullptr);
    ASSERT_TRUE(poold_->Signal(SIGTERM).ok());
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (true) {
      absl::StatusOr<HealthCheckResponse::ServingStatus> health =
          PooldProcess::CheckHealth(poold_->tcp_target());
      if (health.ok() && *health == HealthCheckResponse::NOT_SERVING) break;
      ASSERT_LT(absl::Now(), deadline) << "poold did not start draining";
      absl::SleepFor(absl::Milliseconds(10));
    }
  }
  // The second signal ends the drain.
  void TearDown() override {
    if (poold_ != nullptr) {
      EXPECT_TRUE(poold_->Signal(SIGTERM).ok());
    }
    PoolctlTest::TearDown();
  }
};

TEST_F(DrainingPoolctlTest, HealthExitsFourWhenNotServing) {
  for (const std::string& target :
       {poold_->tcp_target(), poold_->unix_target()}) {
    PoolctlResult r = RunAt(target, {"health"});
    EXPECT_EQ(r.exit_code, 4) << Describe(r);
    EXPECT_EQ(r.out, "NOT_SERVING\n");
    r = RunAt(target, {"health", "--output=json"});
    EXPECT_EQ(r.exit_code, 4) << Describe(r);
    EXPECT_EQ(ParseJson<HealthCheckResponse>(r.out).status(),
              HealthCheckResponse::NOT_SERVING);
  }
}

TEST_F(DrainingPoolctlTest, RpcsAnsweredUnavailableExitThreeNotTwo) {
  for (const std::vector<std::string>& args : EverySubcommand()) {
    if (args[0] == "health") continue;
    const PoolctlResult r = Run(args);
    EXPECT_EQ(r.exit_code, 3) << args[0] << ": " << Describe(r);
    EXPECT_THAT(r.err, StartsWith("poolctl: UNAVAILABLE: "));
    EXPECT_THAT(r.err, HasSubstr("shutting down"));
  }
}

}  // namespace
}  // namespace poold::testing
