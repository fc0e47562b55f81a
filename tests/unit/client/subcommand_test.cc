// Tests of the subcommand table: lookup, flag and argument checks, help.
#include "client/subcommand.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold::client {
namespace {

using ::testing::HasSubstr;

TEST(SubcommandTest, EveryIssueSubcommandExists) {
  for (const char* name : {"stats", "analyze", "defrag", "alloc", "read",
                           "write", "free", "health", "load"}) {
    const Subcommand* subcommand = Subcommand::Find(name);
    ASSERT_NE(subcommand, nullptr) << name;
    EXPECT_NE(subcommand->run, nullptr) << name;
  }
  EXPECT_EQ(Subcommand::Find("nope"), nullptr);
}

TEST(SubcommandTest, FlagsOfOtherSubcommandsAreRefused) {
  const Subcommand& stats = *Subcommand::Find("stats");
  EXPECT_TRUE(stats.CheckFlags({"classes", "target", "output"}).ok());
  absl::Status status = stats.CheckFlags({"size"});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("--size does not apply to stats"));
  // abseil's own flags are not poolctl's business.
  EXPECT_TRUE(stats.CheckFlags({"flagfile"}).ok());
  EXPECT_TRUE(Subcommand::Find("write")->CheckFlags({"offset", "data"}).ok());
  EXPECT_FALSE(Subcommand::Find("write")->CheckFlags({"length"}).ok());
}

TEST(SubcommandTest, ArgumentCounts) {
  const Subcommand& read = *Subcommand::Find("read");
  EXPECT_TRUE(read.CheckArgCount(1).ok());
  EXPECT_THAT(read.CheckArgCount(0).message(), HasSubstr("needs HANDLE"));
  EXPECT_THAT(read.CheckArgCount(2).message(), HasSubstr("takes 1 argument"));
  EXPECT_THAT(Subcommand::Find("stats")->CheckArgCount(1).message(),
              HasSubstr("takes no arguments"));
}

TEST(SubcommandTest, HelpNamesSubcommandsFlagsAndExitCodes) {
  const std::string help = PoolctlHelp();
  for (const Subcommand& subcommand : Subcommand::All()) {
    EXPECT_THAT(help, HasSubstr(std::string(subcommand.name))) << help;
  }
  EXPECT_THAT(help, HasSubstr("--target"));
  EXPECT_THAT(help, HasSubstr("Exit codes"));
  EXPECT_THAT(help, HasSubstr("4  health"));
  EXPECT_THAT(Subcommand::Find("read")->Help(),
              HasSubstr("usage: poolctl read HANDLE"));
}

}  // namespace
}  // namespace poold::client
