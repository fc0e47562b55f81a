// End-to-end test of the data path through an external client: Debian's
// python3-grpcio and python3-protobuf (tests/e2e/pool_client.py) drive every
// PoolService RPC against the real poold, over TCP and over the unix socket.
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

TEST(PythonPoolClientTest, EveryRpcOverTcpAndUnixSocket) {
  PooldProcess::Options options;
  options.unix_socket = true;
  // pool_client.py checks that the defragmentation reclaims exactly the
  // projection: no cached memory may decay back to the OS in between.
  options.extra_flags = {"--cache_decay=inf"};
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  ASSERT_TRUE(poold.ok()) << poold.status();

  for (const std::string& target :
       {(*poold)->tcp_target(), (*poold)->unix_target()}) {
    SCOPED_TRACE(target);
    absl::StatusOr<ProcessResult> result = RunProcess(
        {POOLD_PYTHON3, POOLD_POOL_CLIENT_PY, target}, (*poold)->temp_dir(),
        absl::Seconds(120), {std::string("PYTHONPATH=") + POOLD_PYTHONPATH});
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->exit_code, 0) << result->output;
    EXPECT_THAT(result->output, HasSubstr("pool_client: all checks passed"));
  }
  EXPECT_EQ((*poold)->Stop().value_or(-1), 0) << (*poold)->Log();
}

}  // namespace
}  // namespace poold::testing
