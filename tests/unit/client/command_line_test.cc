// Tests of CommandLine::Scan with a fixed set of flags.
#include "client/command_line.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using Kind = CommandLine::FlagKind;

Kind Lookup(absl::string_view name) {
  if (name == "classes" || name == "progress") return Kind::kBool;
  if (name == "target" || name == "size" || name == "data") return Kind::kValue;
  return Kind::kUnknown;
}

absl::StatusOr<CommandLine> Scan(std::vector<std::string> args) {
  return CommandLine::Scan(args, &Lookup);
}

TEST(CommandLineTest, SubcommandArgumentsAndFlags) {
  absl::StatusOr<CommandLine> line =
      Scan({"--target=unix:/s", "read", "42", "--size", "100", "-classes"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(line->positional, ElementsAre("read", "42"));
  EXPECT_THAT(line->flags, ElementsAre("target", "size", "classes"));
  EXPECT_FALSE(line->help);
}

TEST(CommandLineTest, NegatedBool) {
  absl::StatusOr<CommandLine> line = Scan({"load", "--noprogress"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(line->flags, ElementsAre("progress"));
}

TEST(CommandLineTest, BoolTakesNoSeparateValue) {
  absl::StatusOr<CommandLine> line = Scan({"stats", "--classes", "extra"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(line->positional, ElementsAre("stats", "extra"));
}

TEST(CommandLineTest, DoubleDashEndsFlags) {
  absl::StatusOr<CommandLine> line = Scan({"write", "--", "--not-a-flag", "-"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(line->positional, ElementsAre("write", "--not-a-flag", "-"));
  EXPECT_THAT(line->flags, IsEmpty());
}

TEST(CommandLineTest, ValueMayStartWithADash) {
  absl::StatusOr<CommandLine> line = Scan({"write", "1", "--data", "-x"});
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_THAT(line->positional, ElementsAre("write", "1"));
}

TEST(CommandLineTest, UnknownFlag) {
  absl::StatusOr<CommandLine> line = Scan({"stats", "--bogus=1"});
  EXPECT_EQ(line.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(line.status().message(), HasSubstr("unknown flag --bogus"));
  // "no" only negates bools.
  EXPECT_FALSE(Scan({"--nosize"}).ok());
  EXPECT_FALSE(Scan({"--noclasses=true"}).ok());
}

TEST(CommandLineTest, ANegativeNumberIsABadArgumentNotAFlag) {
  absl::StatusOr<CommandLine> line = Scan({"read", "-1"});
  EXPECT_EQ(line.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(line.status().message(),
              HasSubstr("bad argument -1: handles, sizes and offsets are not "
                        "negative"));
  EXPECT_THAT(line.status().message(), Not(HasSubstr("flag")));
}

TEST(CommandLineTest, MissingValue) {
  absl::StatusOr<CommandLine> line = Scan({"alloc", "--size"});
  EXPECT_EQ(line.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(line.status().message(), HasSubstr("--size needs a value"));
}

TEST(CommandLineTest, Help) {
  EXPECT_TRUE(Scan({"--help"})->help);
  EXPECT_TRUE(Scan({"-h"})->help);
  EXPECT_TRUE(Scan({"read", "--help"})->help);
  EXPECT_TRUE(Scan({"help", "read"})->help);
  EXPECT_FALSE(Scan({"read", "help"})->help);
}

}  // namespace
}  // namespace poold::client
