// End-to-end tests of poolctl's report subcommands and of `load` against
// the real poold: load fragments the small pool, analyze predicts what
// defrag then does, stats shows the result; tables and JSON, TCP and unix
// socket, and their failures.
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.pb.h"
#include "tests/e2e/poolctl/poolctl_e2e_fixture.h"

namespace poold::testing {
namespace {

using ::testing::ContainsRegex;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;
using ::testing::StartsWith;

const v1::PoolStats* FindPool(const v1::GetStatsResponse& stats,
                              v1::Pool pool) {
  for (const v1::PoolStats& each : stats.pools()) {
    if (each.pool() == pool) return &each;
  }
  return nullptr;
}

std::vector<uint64_t> ReadHandles(const std::string& path) {
  std::ifstream in(path);
  std::vector<uint64_t> handles;
  std::string line;
  while (std::getline(in, line)) {
    uint64_t handle = 0;
    EXPECT_TRUE(absl::SimpleAtoi(line, &handle)) << line;
    handles.push_back(handle);
  }
  return handles;
}

// The bytes `load` fills blocks with: each the previous plus one, mod 251.
bool IsLoadPattern(const std::string& data) {
  for (size_t i = 1; i < data.size(); ++i) {
    if (static_cast<unsigned char>(data[i]) !=
        (static_cast<unsigned char>(data[i - 1]) + 1) % 251) {
      return false;
    }
  }
  return !data.empty();
}

TEST_F(PoolctlTest, StatsOfAFreshServer) {
  PoolctlResult r = Run({"stats"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  for (const char* word :
       {"pool", "blocks", "resident", "frag", "reclaimable", "small", "medium",
        "large", "total", "worker: queue",
        "completed:", "automatic defragmentation: disabled"}) {
    EXPECT_THAT(r.out, HasSubstr(word)) << r.out;
  }
  EXPECT_THAT(r.out, Not(HasSubstr("by size class")));

  r = Run({"stats", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto stats = ParseJson<v1::GetStatsResponse>(r.out);
  ASSERT_THAT(stats.pools(), SizeIs(3));
  EXPECT_EQ(stats.pools(0).pool(), v1::POOL_SMALL);
  EXPECT_EQ(stats.pools(1).pool(), v1::POOL_MEDIUM);
  EXPECT_EQ(stats.pools(2).pool(), v1::POOL_LARGE);
  EXPECT_EQ(stats.total().blocks(), 0u);
  EXPECT_GT(stats.worker().channel_capacity(), 0u);
}

TEST_F(PoolctlTest, WatchRefreshesWithRates) {
  Alloc("a block");
  // 500 ms apart: the worker publishes a snapshot every 100 ms, so each
  // refresh has a newer one than the last.
  PoolctlResult r =
      Run({"watch", "--interval=500ms", "--iterations=3", "--classes"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  // Not a terminal: three frames one after the other, no escape codes.
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos);
  size_t frames = 0;
  for (size_t at = r.out.find("poolctl watch: every 500ms");
       at != std::string::npos;
       at = r.out.find("poolctl watch: every 500ms", at + 1)) {
    ++frames;
  }
  EXPECT_EQ(frames, 3u) << r.out;
  // From the second frame on, the rates since the one before: nothing ran
  // meanwhile (the watch's own GetStats does not reach the worker).
  EXPECT_THAT(r.out, ContainsRegex("\nrates over [0-9.]+ m?s: no requests; "
                                   "reclaimed 0 B/s\n"));
  EXPECT_THAT(r.out, HasSubstr("small pool, by size class:"));
  // A bad interval is a usage error.
  r = Run({"watch", "--interval=0s"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("--interval must be positive"));
}

TEST_F(PoolctlTest, StatsWithClasses) {
  Alloc("a small block");
  PoolctlResult r = Run({"stats", "--classes", "--consistent"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("small pool, by size class:"));

  r = Run({"stats", "--classes", "--consistent", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto stats = ParseJson<v1::GetStatsResponse>(r.out);
  const v1::PoolStats* small = FindPool(stats, v1::POOL_SMALL);
  ASSERT_NE(small, nullptr);
  ASSERT_THAT(small->classes(), SizeIs(1));
  EXPECT_GE(small->classes(0).slot_bytes(), 13u);
  EXPECT_EQ(small->classes(0).stats().blocks(), 1u);
  EXPECT_EQ(stats.total().blocks(), 1u);
  EXPECT_EQ(stats.total().live_bytes(), 13u);
}

// The whole operator story over TCP: fragment, analyze, defragment, check.
TEST_F(PoolctlTest, LoadAnalyzeDefragStatsOverTcp) {
  const std::string kept = absl::StrCat(poold_->temp_dir(), "/kept");
  PoolctlResult r =
      Run({"load", "--count=20000", "--sizes=100:150", "--free_fraction=0.9",
           absl::StrCat("--keep_handles=", kept)});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, ContainsRegex("allocated +20000 "));
  EXPECT_THAT(r.out, ContainsRegex("freed +18000 "));
  EXPECT_THAT(r.out, ContainsRegex("kept +2000 "));
  EXPECT_THAT(r.out, HasSubstr("blocks allocated per pool: small 20000"));
  EXPECT_EQ(r.err, "");  // no progress: stderr is not a terminal
  const std::vector<uint64_t> handles = ReadHandles(kept);
  ASSERT_THAT(handles, SizeIs(2000));

  r = Run({"stats", "--consistent", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto before = ParseJson<v1::GetStatsResponse>(r.out);
  EXPECT_EQ(before.total().blocks(), 2000u);
  const v1::PoolStats* small_before = FindPool(before, v1::POOL_SMALL);
  ASSERT_NE(small_before, nullptr);
  EXPECT_GT(small_before->stats().fragmentation_ratio(), 0.5);

  r = Run({"analyze"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("frag after"));
  EXPECT_THAT(r.out, HasSubstr("A defragmentation now would move"));
  r = Run({"analyze", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto analysis = ParseJson<v1::FragmentationReport>(r.out);
  EXPECT_THAT(analysis.pools(), SizeIs(3));
  EXPECT_GT(analysis.projected_bytes_reclaimed(), 0u);
  EXPECT_GT(analysis.projected_blocks_moved(), 0u);

  r = Run({"defrag", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto report = ParseJson<v1::DefragReport>(r.out);
  EXPECT_TRUE(report.complete());
  ASSERT_THAT(report.pools(), SizeIs(3));
  const v1::PoolDefragReport& small = report.pools(0);
  EXPECT_EQ(small.pool(), v1::POOL_SMALL);
  EXPECT_EQ(small.outcome(), v1::PoolDefragReport::OUTCOME_CLEANED) << r.out;
  EXPECT_GT(small.bytes_reclaimed(), 0u);
  EXPECT_GT(small.blocks_moved(), 0u);
  EXPECT_LT(small.after().fragmentation_ratio(),
            small.before().fragmentation_ratio());
  EXPECT_GE(report.slices(), 1u);

  r = Run({"stats", "--output=json"});
  const auto after = ParseJson<v1::GetStatsResponse>(r.out);
  EXPECT_EQ(after.total().blocks(), 2000u);
  EXPECT_LT(after.total().resident_bytes(), before.total().resident_bytes());
  EXPECT_EQ(after.worker().defragmentations(), 1u);

  // Moved blocks read back unchanged.
  for (size_t i = 0; i < handles.size(); i += 97) {
    r = Run({"read", absl::StrCat(handles[i])});
    ASSERT_EQ(r.exit_code, 0) << Describe(r);
    EXPECT_GE(r.out.size(), 100u);
    EXPECT_LE(r.out.size(), 150u);
    EXPECT_TRUE(IsLoadPattern(r.out)) << handles[i];
  }

  // A second defrag has nothing left to gain in the small pool.
  r = Run({"defrag", "--pools=small"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("frag before -> after"));
  EXPECT_THAT(r.out, HasSubstr("process RSS:"));
  EXPECT_THAT(r.out, HasSubstr("slices:"));
  EXPECT_THAT(r.out, Not(HasSubstr("cleaned  ")));

  // Both runs are in the history, with their origin, oldest first.
  r = Run({"stats", "--history"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("recent defragmentations, oldest first:"));
  const size_t first = r.out.find("rpc     finished  small cleaned");
  ASSERT_NE(first, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rpc     finished  small skipped", first),
            std::string::npos)
      << r.out;
  r = Run({"stats", "--history", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto history = ParseJson<v1::GetStatsResponse>(r.out);
  ASSERT_THAT(history.recent_defragmentations(), SizeIs(2));
  EXPECT_EQ(history.recent_defragmentations(0).origin(),
            v1::DefragReport::ORIGIN_RPC);
  EXPECT_EQ(history.recent_defragmentations(0).bytes_reclaimed(),
            report.bytes_reclaimed());
  EXPECT_EQ(history.recent_defragmentations(1).bytes_reclaimed(), 0u);
  // The fixture's server runs with --auto_defrag=false.
  EXPECT_EQ(history.auto_defrag().state(), v1::AutoDefragStats::STATE_DISABLED);
}

// The same story in tables, over the unix socket.
TEST_F(PoolctlTest, LoadAnalyzeDefragStatsOverUnixSocket) {
  const std::string target = poold_->unix_target();
  PoolctlResult r =
      RunAt(target, {"load", "--count=20000", "--sizes=100:150,200:300",
                     "--free_fraction=0.9", "--progress"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, ContainsRegex("allocated +20000 "));
  EXPECT_THAT(r.err, HasSubstr("allocate"));  // --progress
  EXPECT_THAT(r.err, HasSubstr("free"));

  r = RunAt(target, {"analyze", "--pools=small"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("small"));
  EXPECT_THAT(r.out, Not(HasSubstr("medium")));
  EXPECT_THAT(r.out, HasSubstr("would move"));

  r = RunAt(target, {"defrag"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("cleaned"));
  EXPECT_THAT(r.out, HasSubstr(" -> "));
  EXPECT_THAT(r.out, HasSubstr("pools: 1 cleaned"));
  EXPECT_THAT(r.out, HasSubstr("complete"));

  r = RunAt(target, {"stats"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  EXPECT_THAT(r.out, HasSubstr("defragmentations: 1 requested"));
}

// Under a memory limit, a batched load that needs a defragmentation to fit
// still allocates every block: what its batches were refused is allocated
// again alone, and a lone Allocate waits for the room.
TEST_F(PoolctlTest, LoadUnderAMemoryLimitWaitsForRoom) {
  RestartPoold({"--memory_limit_bytes=25165824"});  // 24 MiB
  // About 13 MiB resident for 1.2 MiB live: sparse small spans.
  PoolctlResult r = Run({"load", "--count=100000", "--sizes=100:150",
                         "--free_fraction=0.9", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  // 14.6 MiB more: they fit only once the small pool is compacted.
  r = Run({"load", "--count=10000", "--sizes=1KiB:2KiB", "--free_fraction=0",
           "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto summary = ParseJson<google::protobuf::Struct>(r.out);
  EXPECT_EQ(summary.fields().at("blocksAllocated").number_value(), 10000);
  const double refused =
      summary.fields().at("blocksRefusedInBatches").number_value();
  EXPECT_GT(refused, 0);
  EXPECT_EQ(summary.fields().at("blocksAllocatedAlone").number_value(),
            refused);
  r = Run({"stats", "--output=json", "--consistent"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto stats = ParseJson<v1::GetStatsResponse>(r.out);
  EXPECT_EQ(stats.total().blocks(), 20000u);
  EXPECT_LE(stats.total().resident_bytes(), 25165824u);
}

// The sidecar's server takes messages of one 4 MiB block: a load of large
// blocks sends them one a call, not several in a batch it would refuse.
TEST_F(PoolctlTest, LoadOfLargeBlocksFitsTheServersMessages) {
  RestartPoold({"--max_block_bytes=4194304", "--max_message_bytes=4198400"});
  const PoolctlResult r = Run({"load", "--count=12", "--sizes=1MiB:4MiB",
                               "--free_fraction=0", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto summary = ParseJson<google::protobuf::Struct>(r.out);
  EXPECT_EQ(summary.fields().at("blocksAllocated").number_value(), 12);
}

TEST_F(PoolctlTest, LoadJsonSummary) {
  const PoolctlResult r =
      Run({"load", "--count=1000", "--sizes=2KiB:4KiB", "--free_fraction=0.25",
           "--concurrency=8", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto summary = ParseJson<google::protobuf::Struct>(r.out);
  EXPECT_EQ(summary.fields().at("blocksAllocated").number_value(), 1000);
  EXPECT_EQ(summary.fields().at("blocksFreed").number_value(), 250);
  EXPECT_EQ(summary.fields().at("blocksKept").number_value(), 750);
  EXPECT_EQ(summary.fields()
                .at("blocksByPool")
                .struct_value()
                .fields()
                .at("medium")
                .number_value(),
            1000);
  const auto stats = ParseJson<v1::GetStatsResponse>(
      Run({"stats", "--consistent", "--output=json"}).out);
  EXPECT_EQ(stats.total().blocks(), 750u);
}

TEST_F(PoolctlTest, AnalyzeAndDefragSelectPools) {
  PoolctlResult r = Run({"analyze", "--pools=small,large", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto analysis = ParseJson<v1::FragmentationReport>(r.out);
  ASSERT_THAT(analysis.pools(), SizeIs(2));
  EXPECT_EQ(analysis.pools(0).pool(), v1::POOL_SMALL);
  EXPECT_EQ(analysis.pools(1).pool(), v1::POOL_LARGE);

  r = Run({"defrag", "--pools=medium", "--output=json"});
  ASSERT_EQ(r.exit_code, 0) << Describe(r);
  const auto report = ParseJson<v1::DefragReport>(r.out);
  ASSERT_THAT(report.pools(), SizeIs(1));
  EXPECT_EQ(report.pools(0).pool(), v1::POOL_MEDIUM);
  // An empty pool has nothing to gain.
  EXPECT_EQ(report.pools(0).outcome(), v1::PoolDefragReport::OUTCOME_SKIPPED);
}

TEST_F(PoolctlTest, ReportUsageErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  for (const Case& c : std::vector<Case>{
           {{"analyze", "--pools=huge"}, "unknown pool \"huge\""},
           {{"defrag", "--pools=small,nope"}, "unknown pool \"nope\""},
           {{"stats", "--pools=small"}, "--pools does not apply to stats"},
           {{"load", "--free_fraction=2"}, "free fraction"},
           {{"load", "--sizes=0"}, "at least 1 byte"},
           {{"load", "--sizes=10:5"}, "minimum exceeds the maximum"},
           {{"load", "--concurrency=0"}, "concurrency"},
           {{"load", "--count=many"}, "count"}}) {
    const PoolctlResult r = Run(c.args);
    EXPECT_EQ(r.exit_code, 1) << Describe(r);
    EXPECT_THAT(r.err, HasSubstr(c.message)) << Describe(r);
  }
}

TEST_F(PoolctlTest, LoadStopsAtTheFirstServerError) {
  RestartPoold({"--max_block_bytes=1048576"});
  // Blocks above --max_block_bytes: every Allocate fails.
  PoolctlResult r = Run({"load", "--count=10", "--sizes=2MiB"});
  EXPECT_EQ(r.exit_code, 3) << Describe(r);
  EXPECT_THAT(r.err, StartsWith("poolctl: INVALID_ARGUMENT: "));
  EXPECT_THAT(r.err, HasSubstr("(allocate call "));
  EXPECT_THAT(r.out, ContainsRegex("allocated +0 "));  // what was done
  // Sizes no message can carry are refused before anything is sent.
  r = Run({"load", "--sizes=1GiB"});
  EXPECT_EQ(r.exit_code, 1) << Describe(r);
  EXPECT_THAT(r.err, HasSubstr("do not fit in one message"));
  const auto stats =
      ParseJson<v1::GetStatsResponse>(Run({"stats", "--output=json"}).out);
  EXPECT_EQ(stats.total().blocks(), 0u);
}

}  // namespace
}  // namespace poold::testing
