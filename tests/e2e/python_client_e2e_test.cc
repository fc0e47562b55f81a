// End-to-end test through an external client: Debian's python3-grpcio
// (tests/e2e/health_check.py) checks poold's health over TCP and over the
// unix socket.
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/e2e/poold_process.h"
#include "tests/support/subprocess.h"

namespace poold::testing {
namespace {

using ::testing::HasSubstr;

absl::StatusOr<ProcessResult> PythonHealthCheck(const PooldProcess& poold,
                                                const std::string& target,
                                                const std::string& service) {
  std::vector<std::string> argv = {POOLD_PYTHON3, POOLD_HEALTH_CHECK_PY,
                                   target};
  if (!service.empty()) argv.push_back(service);
  return RunProcess(argv, poold.temp_dir(), absl::Seconds(60),
                    {std::string("PYTHONPATH=") + POOLD_PYTHONPATH});
}

TEST(PythonClientTest, HealthCheckOverTcpAndUnixSocket) {
  PooldProcess::Options options;
  options.unix_socket = true;
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  ASSERT_TRUE(poold.ok()) << poold.status();

  for (const std::string& target :
       {(*poold)->tcp_target(), (*poold)->unix_target()}) {
    absl::StatusOr<ProcessResult> all = PythonHealthCheck(**poold, target, "");
    ASSERT_TRUE(all.ok()) << all.status();
    EXPECT_EQ(all->exit_code, 0) << all->output;
    EXPECT_THAT(all->output, HasSubstr("SERVING"));

    absl::StatusOr<ProcessResult> service =
        PythonHealthCheck(**poold, target, "poold.v1.PoolService");
    ASSERT_TRUE(service.ok()) << service.status();
    EXPECT_EQ(service->exit_code, 0) << service->output;
    EXPECT_THAT(service->output, HasSubstr("SERVING"));

    absl::StatusOr<ProcessResult> unknown =
        PythonHealthCheck(**poold, target, "no.such.Service");
    ASSERT_TRUE(unknown.ok()) << unknown.status();
    EXPECT_EQ(unknown->exit_code, 1) << unknown->output;
    EXPECT_THAT(unknown->output, HasSubstr("NOT_FOUND"));
  }
  EXPECT_EQ((*poold)->Stop().value_or(-1), 0) << (*poold)->Log();
}

}  // namespace
}  // namespace poold::testing
