// Tests of poolctl's argument parsers.
#include "client/poolctl_args.h"

#include <stdlib.h>
#include <unistd.h>

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

TEST(ParseHandleTest, DecimalAndHex) {
  EXPECT_EQ(ParseHandle("42").value(), 42u);
  EXPECT_EQ(ParseHandle("0x2a").value(), 42u);
  EXPECT_EQ(ParseHandle("0X2A").value(), 42u);
  EXPECT_EQ(ParseHandle("18446744073709551615").value(), ~uint64_t{0});
  EXPECT_EQ(ParseHandle("0xffffffffffffffff").value(), ~uint64_t{0});
  EXPECT_EQ(ParseHandle("0").value(), 0u);
}

TEST(ParseHandleTest, RejectsGarbage) {
  for (const char* bad : {"", "abc", "-1", "+1", "1.5", "0x", "0xg", "12abc",
                          "18446744073709551616", "0x10000000000000000"}) {
    absl::StatusOr<uint64_t> handle = ParseHandle(bad);
    EXPECT_EQ(handle.status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_THAT(ParseHandle("abc").status().message(), HasSubstr("\"abc\""));
}

TEST(ParseByteSizeTest, PlainAndUnits) {
  EXPECT_EQ(ParseByteSize("100").value(), 100u);
  EXPECT_EQ(ParseByteSize("100B").value(), 100u);
  EXPECT_EQ(ParseByteSize("4k").value(), 4096u);
  EXPECT_EQ(ParseByteSize("64KiB").value(), 65536u);
  EXPECT_EQ(ParseByteSize("1 MiB").value(), 1u << 20);
  EXPECT_EQ(ParseByteSize("2g").value(), uint64_t{2} << 30);
  EXPECT_EQ(ParseByteSize("1TiB").value(), uint64_t{1} << 40);
  EXPECT_EQ(ParseByteSize("0").value(), 0u);
}

TEST(ParseByteSizeTest, RejectsBadInput) {
  for (const char* bad : {"", "KiB", "-5", "1.5MiB", "10 XB",
                          "99999999999999999999", "17179869184GiB"}) {
    EXPECT_EQ(ParseByteSize(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

TEST(ParsePoolsTest, NamesInOrderWithoutDuplicates) {
  EXPECT_THAT(ParsePools("small,medium").value(),
              ElementsAre(v1::POOL_SMALL, v1::POOL_MEDIUM));
  EXPECT_THAT(ParsePools(" large , SMALL,large").value(),
              ElementsAre(v1::POOL_LARGE, v1::POOL_SMALL));
}

TEST(ParsePoolsTest, EmptyAndAllMeanEveryPool) {
  EXPECT_THAT(ParsePools("").value(), IsEmpty());
  EXPECT_THAT(ParsePools("all").value(), IsEmpty());
  EXPECT_THAT(ParsePools("small,all").value(), IsEmpty());
}

TEST(ParsePoolsTest, UnknownPool) {
  absl::StatusOr<std::vector<v1::Pool>> pools = ParsePools("small,huge");
  EXPECT_EQ(pools.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pools.status().message(), HasSubstr("huge"));
}

TEST(PoolNameTest, Names) {
  EXPECT_EQ(PoolName(v1::POOL_SMALL), "small");
  EXPECT_EQ(PoolName(v1::POOL_MEDIUM), "medium");
  EXPECT_EQ(PoolName(v1::POOL_LARGE), "large");
  EXPECT_EQ(PoolName(v1::POOL_UNSPECIFIED), "unspecified");
  EXPECT_EQ(PoolName(7), "pool 7");
}

class ResolveDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = ::testing::TempDir() + "/poolctl-args-XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    unlink((dir_ + "/data").c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_;
};

TEST_F(ResolveDataTest, TextIsItself) {
  EXPECT_EQ(ResolveData("hello").value(), "hello");
}

TEST_F(ResolveDataTest, AtFileReadsTheFileExactly) {
  const std::string bytes("a\0b\n\xff", 5);
  std::ofstream(dir_ + "/data", std::ios::binary) << bytes;
  EXPECT_EQ(ResolveData("@" + dir_ + "/data").value(), bytes);
}

TEST_F(ResolveDataTest, MissingFileIsNotFound) {
  absl::StatusOr<std::string> data = ResolveData("@" + dir_ + "/none");
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(data.status().message(), HasSubstr(dir_ + "/none"));
}

TEST_F(ResolveDataTest, DirectoryAndEmptyPathAreErrors) {
  EXPECT_FALSE(ResolveData("@" + dir_).ok());
  EXPECT_EQ(ResolveData("@").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace poold::client
