// Tests of ListenerWatchdog's TLS check: a TLS listener that requires client
// certificates passes (the watchdog has none), and a listener that accepts
// no connection fails. (The plaintext check is tested end to end, in
// transport_limits_e2e_test.)
#include "server/listener_watchdog.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/poold_server.h"

namespace poold {
namespace {

using ::testing::HasSubstr;

std::string CertDir() {
  static const std::string* dir = [] {
    char pattern[] = "/tmp/poold-watchdog-certs-XXXXXX";
    CHECK(mkdtemp(pattern) != nullptr);
    CHECK_EQ(
        std::system(absl::StrCat(POOLD_MAKE_TEST_CERTS, " ", pattern).c_str()),
        0);
    return new std::string(pattern);
  }();
  return *dir;
}

TEST(ListenerWatchdogTest, AMutualTlsListenerPassesTheHandshakeCheck) {
  PooldServer::Options options;
  options.listen = "127.0.0.1:0";
  options.metrics_listen = "";
  options.listener_check_interval = absl::ZeroDuration();  // ours below
  options.tls.cert_file = CertDir() + "/server.pem";
  options.tls.key_file = CertDir() + "/server.key";
  options.tls.client_ca_file = CertDir() + "/ca.pem";
  options.tls.require_client_cert = true;
  absl::StatusOr<std::unique_ptr<PooldServer>> server =
      PooldServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();

  absl::Notification dead;
  std::string why;
  ListenerWatchdog watchdog({{(*server)->targets()[0], /*tls=*/true}},
                            absl::Milliseconds(10), 1,
                            [&](const std::string&, const std::string& error) {
                              why = error;
                              dead.Notify();
                            });
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (watchdog.checks_passed() < 3 && !dead.HasBeenNotified() &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));  // polling, bounded above
  }
  EXPECT_FALSE(dead.HasBeenNotified()) << why;
  EXPECT_GE(watchdog.checks_passed(), 3u);
}

TEST(ListenerWatchdogTest, AListenerThatNeverAnswersFailsTheHandshakeCheck) {
  // Listens, but never accepts: the kernel completes connections into the
  // backlog and nobody answers, like gRPC's listener after EMFILE.
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)),
            0);
  ASSERT_EQ(listen(fd, 16), 0);
  socklen_t length = sizeof(address);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length), 0);
  const std::string target =
      absl::StrCat("127.0.0.1:", ntohs(address.sin_port));

  absl::Notification dead;
  std::string why;
  {
    ListenerWatchdog watchdog({{target, /*tls=*/true}}, absl::Milliseconds(10),
                              1, [&](const std::string&, const std::string& e) {
                                why = e;
                                dead.Notify();
                              });
    ASSERT_TRUE(dead.WaitForNotificationWithTimeout(
        ListenerWatchdog::kCheckTimeout + absl::Seconds(30)));
    EXPECT_EQ(watchdog.checks_passed(), 0u);
  }
  EXPECT_THAT(why, HasSubstr("TLS handshake"));
  close(fd);
}

}  // namespace
}  // namespace poold
