// PoolctlTest: the fixture of poolctl's end-to-end tests. Each test gets a
// fresh poold serving on a loopback port and a unix socket, and runs the
// real poolctl against it.
#ifndef POOLD_TESTS_E2E_POOLCTL_POOLCTL_E2E_FIXTURE_H_
#define POOLD_TESTS_E2E_POOLCTL_POOLCTL_E2E_FIXTURE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/e2e/poolctl/poolctl_runner.h"
#include "tests/e2e/poold_process.h"

namespace poold::testing {

class PoolctlTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Stops poold (if it runs) and expects a clean exit.
  void StopPoold();

  // Stops poold and starts a new one with `extra_flags`.
  void RestartPoold(const std::vector<std::string>& extra_flags);

  // poolctl --target=<poold's TCP target> args...
  PoolctlResult Run(const std::vector<std::string>& args);
  // poolctl --target=<target> args...
  PoolctlResult RunAt(const std::string& target,
                      const std::vector<std::string>& args);
  // poolctl args... exactly as given.
  PoolctlResult RunRaw(const std::vector<std::string>& args);

  // Allocates a block with `data` (poolctl alloc --output=json) and returns
  // its handle, or 0 after a test failure.
  uint64_t Alloc(const std::string& data);

  // A file in poold's scratch folder holding `bytes`; returns its path.
  std::string WriteScratchFile(const std::string& name,
                               const std::string& bytes);

  // A target where nothing listens: a socket path that does not exist.
  std::string DeadTarget() const;

  std::unique_ptr<PooldProcess> poold_;
  std::optional<PoolctlRunner> runner_;
};

// `json` parsed into a Message; a test failure (with the JSON) if it does
// not parse.
template <typename Message>
Message ParseJson(const std::string& json) {
  Message message;
  const auto status =
      google::protobuf::util::JsonStringToMessage(json, &message);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\nin:\n" << json;
  return message;
}

// For failure messages: the whole run.
std::string Describe(const PoolctlResult& result);

}  // namespace poold::testing

#endif  // POOLD_TESTS_E2E_POOLCTL_POOLCTL_E2E_FIXTURE_H_
