// PoolctlTest: starting poold, running poolctl.
#include "tests/e2e/poolctl/poolctl_e2e_fixture.h"

#include <fstream>

#include "absl/strings/str_cat.h"
#include "poold/v1/pool_service.pb.h"

namespace poold::testing {

std::string Describe(const PoolctlResult& result) {
  return absl::StrCat("exit code ", result.exit_code, "\n--- stdout:\n",
                      result.out, "--- stderr:\n", result.err);
}

void PoolctlTest::SetUp() { RestartPoold({}); }

void PoolctlTest::RestartPoold(const std::vector<std::string>& extra_flags) {
  if (poold_ != nullptr) {
    StopPoold();
    runner_.reset();
    poold_.reset();
  }
  PooldProcess::Options options;
  options.unix_socket = true;
  options.extra_flags = extra_flags;
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  ASSERT_TRUE(poold.ok()) << poold.status();
  poold_ = *std::move(poold);
  runner_.emplace(poold_->temp_dir());
}

void PoolctlTest::TearDown() { StopPoold(); }

void PoolctlTest::StopPoold() {
  if (poold_ == nullptr) return;
  absl::StatusOr<int> code = poold_->Stop();
  EXPECT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(code.value_or(-1), 0) << poold_->Log();
}

PoolctlResult PoolctlTest::RunRaw(const std::vector<std::string>& args) {
  absl::StatusOr<PoolctlResult> result = runner_->Run(args);
  EXPECT_TRUE(result.ok()) << result.status();
  return result.value_or(PoolctlResult());
}

PoolctlResult PoolctlTest::RunAt(const std::string& target,
                                 const std::vector<std::string>& args) {
  std::vector<std::string> all = {absl::StrCat("--target=", target)};
  all.insert(all.end(), args.begin(), args.end());
  return RunRaw(all);
}

PoolctlResult PoolctlTest::Run(const std::vector<std::string>& args) {
  return RunAt(poold_->tcp_target(), args);
}

uint64_t PoolctlTest::Alloc(const std::string& data) {
  const PoolctlResult result =
      Run({"alloc", absl::StrCat("--data=", data), "--output=json"});
  EXPECT_EQ(result.exit_code, 0) << Describe(result);
  return ParseJson<v1::AllocateResponse>(result.out).handle();
}

std::string PoolctlTest::WriteScratchFile(const std::string& name,
                                          const std::string& bytes) {
  const std::string path = absl::StrCat(poold_->temp_dir(), "/", name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string PoolctlTest::DeadTarget() const {
  return absl::StrCat("unix:", poold_->temp_dir(), "/nobody-listens.sock");
}

}  // namespace poold::testing
