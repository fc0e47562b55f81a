// End-to-end tests of poolctl's block subcommands against the real poold:
// alloc, read, write and free, in table and JSON output, over TCP and a
// unix socket, and their failures (unknown handle, out of range, bad
// arguments).
#include <fstream>
#include <iterator>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.pb.h"
#include "tests/e2e/poolctl/poolctl_e2e_fixture.h"

namespace poold::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// The handle in the second line of `alloc`'s table ("handle pool size
// slot" header, then the row).
uint64_t HandleFromTable(const std::string& table) {
  std::vector<std::string> lines = absl::StrSplit(table, '\n');
  uint64_t handle = 0;
  if (lines.size() < 2) return 0;
  std::vector<std::string> cells =
      absl::StrSplit(lines[1], ' ', absl::SkipEmpty());
  if (cells.empty() || !absl::SimpleAtoi(cells[0], &handle)) return 0;
  return handle;
}

TEST_F(PoolctlTest, AllocReadWriteFreeInTables) {
  PoolctlResult r = Run({"alloc", "--data=hello world"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, StartsWith("handle"));
  EXPECT_THAT(r.out, HasSubstr("small"));
  EXPECT_THAT(r.out, HasSubstr("11 B"));
  const uint64_t handle = HandleFromTable(r.out);
  ASSERT_NE(handle, 0u) << r.out;
  const std::string h = absl::StrCat(handle);

  r = Run({"read", h});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "hello world");

  r = Run({"write", h, "--offset=6", "--data=WORLD"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, absl::StrCat("wrote 5 B at offset 6 of block ", h, "\n"));

  r = Run({"read", h});
  EXPECT_EQ(r.out, "hello WORLD");
  // Hexadecimal handles, offset and length.
  r = Run({"read", absl::StrCat("0x", absl::Hex(handle)), "--offset=6",
           "--length=5"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "WORLD");

  r = Run({"free", h});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, absl::StrCat("freed block ", h, "\n"));

  // The handle is gone for good.
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{
           {"free", h}, {"read", h}, {"write", h, "--data=x"}}) {
    r = Run(args);
    EXPECT_EQ(r.exit_code, 3) << Describe(r);
    EXPECT_THAT(r.err, StartsWith(absl::StrCat(
                           "poolctl: NOT_FOUND: no block with handle ", h)))
        << Describe(r);
    EXPECT_EQ(r.out, "");
  }
}

TEST_F(PoolctlTest, AllocJsonPicksThePoolBySize) {
  struct Case {
    std::string size;
    v1::Pool pool;
    uint64_t bytes;
  };
  for (const Case& c :
       {Case{"100", v1::POOL_SMALL, 100}, Case{"2000", v1::POOL_MEDIUM, 2000},
        Case{"100KiB", v1::POOL_LARGE, 100 << 10}}) {
    const PoolctlResult r =
        Run({"alloc", absl::StrCat("--size=", c.size), "--output=json"});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    const auto block = ParseJson<v1::AllocateResponse>(r.out);
    EXPECT_NE(block.handle(), 0u);
    EXPECT_EQ(block.pool(), c.pool) << r.out;
    EXPECT_EQ(block.block_size(), c.bytes);
    EXPECT_GE(block.slot_bytes(), c.bytes);
    // A new block is zeroed.
    const PoolctlResult read =
        Run({"read", absl::StrCat(block.handle()), "--length=16"});
    EXPECT_EQ(read.out, std::string(16, '\0'));
  }
}

TEST_F(PoolctlTest, AllocFromFileAndReadIntoFile) {
  std::string bytes;
  for (int i = 0; i < 3000; ++i) bytes.push_back(static_cast<char>(i * 7));
  const std::string in = WriteScratchFile("in.bin", bytes);
  PoolctlResult r = Run(
      {"alloc", "--size=4KiB", absl::StrCat("--data=@", in), "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto block = ParseJson<v1::AllocateResponse>(r.out);
  EXPECT_EQ(block.block_size(), 4096u);
  EXPECT_EQ(block.pool(), v1::POOL_MEDIUM);

  const std::string out = absl::StrCat(poold_->temp_dir(), "/out.bin");
  r = Run({"read", absl::StrCat(block.handle()), "--length=3000",
           absl::StrCat("--out=", out)});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(r.out, "");
  std::ifstream file(out, std::ios::binary);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(file)),
                        std::istreambuf_iterator<char>()),
            bytes);
}

TEST_F(PoolctlTest, WriteFromStdin) {
  const uint64_t handle = Alloc("..........");
  const std::string in = WriteScratchFile("stdin.txt", "abc");
  absl::StatusOr<PoolctlResult> r =
      runner_->Run({absl::StrCat("--target=", poold_->tcp_target()), "write",
                    absl::StrCat(handle), "--offset=2", "--data=@-"},
                   absl::Seconds(60), in);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->exit_code, 0) << Describe(*r);
  EXPECT_EQ(Run({"read", absl::StrCat(handle)}).out, "..abc.....");
}

TEST_F(PoolctlTest, ReadWriteFreeJson) {
  const uint64_t handle = Alloc("json bytes");
  const std::string h = absl::StrCat(handle);
  PoolctlResult r = Run({"read", h, "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_EQ(ParseJson<v1::ReadResponse>(r.out).data(), "json bytes");
  EXPECT_THAT(r.out, HasSubstr("\"anNvbiBieXRlcw==\""));  // base64

  r = Run({"write", h, "--data=JSON", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  ParseJson<v1::WriteResponse>(r.out);

  r = Run({"free", h, "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  ParseJson<v1::FreeResponse>(r.out);
}

TEST_F(PoolctlTest, BlocksOverTheUnixSocket) {
  const std::string target = poold_->unix_target();
  PoolctlResult r =
      RunAt(target, {"alloc", "--data=over unix", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const std::string h =
      absl::StrCat(ParseJson<v1::AllocateResponse>(r.out).handle());
  EXPECT_EQ(RunAt(target, {"read", h}).out, "over unix");
  EXPECT_EQ(RunAt(target, {"write", h, "--data=OVER"}).exit_code, 0);
  EXPECT_EQ(RunAt(target, {"read", h, "--length=4"}).out, "OVER");
  EXPECT_EQ(RunAt(target, {"free", h}).exit_code, 0);
  r = RunAt(target, {"free", h});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

TEST_F(PoolctlTest, OutOfRangeReadsAndWrites) {
  const std::string h = absl::StrCat(Alloc("eleven byte"));
  PoolctlResult r = Run({"read", h, "--offset=12"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, StartsWith("poolctl: OUT_OF_RANGE: "));
  r = Run({"read", h, "--offset=5", "--length=7"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("OUT_OF_RANGE"));
  r = Run({"write", h, "--offset=10", "--data=xy"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, StartsWith("poolctl: OUT_OF_RANGE: "));
  // The block is intact.
  EXPECT_EQ(Run({"read", h}).out, "eleven byte");
}

TEST_F(PoolctlTest, UnknownHandles) {
  for (const char* sub : {"read", "free"}) {
    const PoolctlResult r = Run({sub, "42"});
    EXPECT_EQ(r.exit_code, 3) << Describe(r);
    EXPECT_EQ(r.err, "poolctl: NOT_FOUND: no block with handle 42\n")
        << Describe(r);
  }
  PoolctlResult r = Run({"write", "42", "--data=x"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
  // Handle 0 never names a block.
  r = Run({"read", "0"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("NOT_FOUND"));
}

TEST_F(PoolctlTest, AllocErrorsFromTheServer) {
  PoolctlResult r = Run({"alloc", "--size=0"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, StartsWith("poolctl: INVALID_ARGUMENT: "));
  r = Run({"alloc", "--size=1GiB"});  // above --max_block_bytes (64 MiB)
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, StartsWith("poolctl: INVALID_ARGUMENT: "));
}

TEST_F(PoolctlTest, BlockUsageErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::string missing = absl::StrCat(poold_->temp_dir(), "/missing");
  for (const Case& c : std::vector<Case>{
           {{"alloc"}, "alloc needs --size, --data or both"},
           {{"alloc", "--size=ten"}, "bad size"},
           {{"alloc", "--size=4", "--data=too long"}, "more than --size=4"},
           {{"alloc", absl::StrCat("--data=@", missing)}, "cannot read"},
           {{"read"}, "read needs HANDLE"},
           {{"read", "xyz"}, "bad handle \"xyz\""},
           {{"read", "1", "2"}, "takes 1 argument"},
           {{"read", "1", "--data=x"}, "--data does not apply to read"},
           {{"write", "1"}, "write needs --data"},
           {{"free"}, "free needs HANDLE"},
           {{"free", "-1"},
            "bad argument -1: handles, sizes and offsets are not"},
           {{"read", "1", "--offset=-1"}, "offset"}}) {
    const PoolctlResult r = Run(c.args);
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_THAT(r.err, HasSubstr(c.message)) << Describe(r);
    EXPECT_EQ(r.out, "");
  }
}

}  // namespace
}  // namespace poold::testing
