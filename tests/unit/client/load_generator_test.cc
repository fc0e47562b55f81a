// Tests of LoadGenerator against an in-process test service: it allocates
// the count with sizes from the distribution, frees the fraction, keeps the
// right handles, reports progress, and stops at the first error.
#include "client/load_generator.h"

#include <map>
#include <set>
#include <string>

#include "client/pool_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/client/test_pool_service.h"

namespace poold::client {
namespace {

using ::testing::HasSubstr;
using testing::TestServer;

class LoadGeneratorTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(server_.ok()); }

  absl::StatusOr<LoadGenerator> Make(LoadOptions options) {
    absl::StatusOr<PoolClient> client = PoolClient::Create(server_.target());
    if (!client.ok()) return client.status();
    return LoadGenerator::Create(client->channel(), std::move(options));
  }

  TestServer server_;
};

TEST_F(LoadGeneratorTest, RejectsBadOptions) {
  LoadOptions options;
  options.concurrency = 0;
  EXPECT_EQ(Make(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = LoadOptions();
  options.free_fraction = 1.5;
  EXPECT_EQ(Make(options).status().code(), absl::StatusCode::kInvalidArgument);
  options.free_fraction = -0.1;
  EXPECT_EQ(Make(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = LoadOptions();
  options.sizes = SizeDistribution::Parse("1:200MiB").value();
  const absl::Status too_big = Make(options).status();
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_big.message(), HasSubstr("do not fit in one message"));
}

TEST_F(LoadGeneratorTest, AllocatesFillsAndFreesTheFraction) {
  LoadOptions options;
  options.count = 2000;
  options.sizes = SizeDistribution::Parse("100:150").value();
  options.free_fraction = 0.9;
  options.concurrency = 16;
  absl::StatusOr<LoadGenerator> generator = Make(options);
  ASSERT_TRUE(generator.ok()) << generator.status();
  uint64_t reports = 0;
  bool saw_free_finished = false;
  generator->set_progress_callback(
      [&](const LoadProgress& progress) {
        ++reports;
        EXPECT_LE(progress.done, progress.total);
        if (progress.finished && std::string(progress.phase) == "free") {
          saw_free_finished = true;
          EXPECT_EQ(progress.done, 1800u);
        }
      },
      absl::ZeroDuration());
  LoadSummary summary;
  ASSERT_TRUE(generator->Run(&summary).ok());

  EXPECT_EQ(summary.blocks_allocated, 2000u);
  EXPECT_EQ(summary.blocks_freed, 1800u);
  EXPECT_EQ(summary.kept_handles.size(), 200u);
  EXPECT_EQ(summary.blocks_by_pool[v1::POOL_SMALL], 2000u);
  EXPECT_EQ(summary.bytes_allocated, summary.bytes_freed + summary.bytes_kept);
  EXPECT_GE(summary.bytes_allocated, 2000u * 100);
  EXPECT_LE(summary.bytes_allocated, 2000u * 150);
  EXPECT_GT(reports, 0u);
  EXPECT_TRUE(saw_free_finished);

  // The server holds exactly the kept blocks, each full of the pattern.
  const std::map<uint64_t, std::string> blocks = server_.service().Blocks();
  ASSERT_EQ(blocks.size(), 200u);
  uint64_t kept_bytes = 0;
  for (uint64_t handle : summary.kept_handles) {
    auto it = blocks.find(handle);
    ASSERT_NE(it, blocks.end()) << handle;
    const std::string& data = it->second;
    kept_bytes += data.size();
    EXPECT_GE(data.size(), 100u);
    EXPECT_LE(data.size(), 150u);
    for (size_t i = 1; i < data.size(); ++i) {
      ASSERT_EQ(static_cast<unsigned char>(data[i]),
                (static_cast<unsigned char>(data[i - 1]) + 1) % 251);
    }
  }
  EXPECT_EQ(kept_bytes, summary.bytes_kept);
}

TEST_F(LoadGeneratorTest, SameSeedSameWorkload) {
  LoadOptions options;
  options.count = 300;
  options.sizes = SizeDistribution::Parse("1:5000").value();
  options.free_fraction = 0.5;
  options.seed = 99;
  LoadSummary first, second;
  ASSERT_TRUE(Make(options)->Run(&first).ok());
  ASSERT_TRUE(Make(options)->Run(&second).ok());
  EXPECT_EQ(first.bytes_allocated, second.bytes_allocated);
  EXPECT_EQ(first.bytes_kept, second.bytes_kept);
}

TEST_F(LoadGeneratorTest, NoFreesAndAllFrees) {
  LoadOptions options;
  options.count = 100;
  options.free_fraction = 0;
  LoadSummary summary;
  ASSERT_TRUE(Make(options)->Run(&summary).ok());
  EXPECT_EQ(summary.blocks_freed, 0u);
  EXPECT_EQ(summary.kept_handles.size(), 100u);
  options.free_fraction = 1;
  ASSERT_TRUE(Make(options)->Run(&summary).ok());
  EXPECT_EQ(summary.blocks_freed, 100u);
  EXPECT_TRUE(summary.kept_handles.empty());
}

TEST_F(LoadGeneratorTest, AllocationErrorStopsTheRun) {
  server_.service().FailWith(
      grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "memory limit"));
  LoadOptions options;
  options.count = 500;
  LoadSummary summary;
  const absl::Status status = Make(options)->Run(&summary);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("memory limit (allocate call"));
  EXPECT_EQ(summary.blocks_allocated, 0u);
  EXPECT_EQ(summary.blocks_freed, 0u);
  EXPECT_TRUE(summary.kept_handles.empty());
}

TEST_F(LoadGeneratorTest, AllocationsABatchWasRefusedAreMadeAlone) {
  // As under poold's memory limit: batch allocations refused, Allocate
  // calls served (they wait for a defragmentation to make room).
  server_.service().RefuseBatchAllocationsAfter(300);
  LoadOptions options;
  options.count = 500;
  options.sizes = SizeDistribution::Parse("100:150").value();
  options.batch = 64;
  options.free_fraction = 0.5;
  LoadSummary summary;
  const absl::Status status = Make(options)->Run(&summary);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(summary.blocks_allocated, 500u);
  EXPECT_EQ(summary.blocks_refused_in_batches, 200u);
  EXPECT_EQ(summary.blocks_allocated_alone, 200u);
  EXPECT_EQ(summary.blocks_freed, 250u);
  EXPECT_EQ(server_.service().allocations(), 500u);
  // Every kept block is on the server, whole, and nothing else is.
  const std::map<uint64_t, std::string> blocks = server_.service().Blocks();
  ASSERT_EQ(blocks.size(), 250u);
  for (uint64_t handle : summary.kept_handles) {
    ASSERT_TRUE(blocks.contains(handle)) << handle;
    const std::string& data = blocks.at(handle);
    EXPECT_GE(data.size(), 100u);
    // The pattern: each byte one more than the last, modulo 251.
    for (size_t i = 1; i < data.size(); ++i) {
      ASSERT_EQ(static_cast<unsigned char>(data[i]),
                (static_cast<unsigned char>(data[i - 1]) + 1) % 251)
          << handle;
    }
  }
}

TEST_F(LoadGeneratorTest, RetriedAllocationsThatFailStopTheRun) {
  server_.service().RefuseBatchAllocationsAfter(100);
  server_.service().FailAllocationsAfter(150);
  LoadOptions options;
  options.count = 500;
  options.concurrency = 1;
  LoadSummary summary;
  const absl::Status status = Make(options)->Run(&summary);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("retrying alone"));
  EXPECT_EQ(summary.blocks_allocated, 150u);
  EXPECT_EQ(summary.blocks_refused_in_batches, 400u);
  EXPECT_EQ(summary.blocks_allocated_alone, 50u);
  EXPECT_EQ(summary.kept_handles.size(), 150u);
}

TEST_F(LoadGeneratorTest, FreeErrorKeepsTheHandlesOfUnfreedBlocks) {
  server_.service().FailFreesAfter(50);
  LoadOptions options;
  options.count = 400;
  options.free_fraction = 1;
  options.concurrency = 4;
  LoadSummary summary;
  const absl::Status status = Make(options)->Run(&summary);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(summary.blocks_allocated, 400u);
  EXPECT_EQ(summary.blocks_freed, 50u);
  // Every block the server still holds is among the kept handles.
  const std::set<uint64_t> kept(summary.kept_handles.begin(),
                                summary.kept_handles.end());
  EXPECT_EQ(kept.size(), 350u);
  for (const auto& [handle, data] : server_.service().Blocks()) {
    EXPECT_TRUE(kept.contains(handle)) << handle;
  }
}

TEST_F(LoadGeneratorTest, BlocksGoInBatchesOrOneCallEach) {
  LoadOptions options;
  options.count = 1000;
  options.free_fraction = 1;
  options.batch = 100;
  LoadSummary summary;
  ASSERT_TRUE(Make(options)->Run(&summary).ok());
  EXPECT_EQ(summary.blocks_allocated, 1000u);
  EXPECT_EQ(summary.blocks_freed, 1000u);
  EXPECT_EQ(server_.service().allocations(), 1000u);
  EXPECT_EQ(server_.service().batches(), 20u);  // 10 to allocate, 10 to free
  options.batch = 1;
  ASSERT_TRUE(Make(options)->Run(&summary).ok());
  EXPECT_EQ(summary.blocks_freed, 1000u);
  EXPECT_EQ(server_.service().batches(), 20u);
  EXPECT_EQ(server_.service().allocations(), 2000u);
  options.batch = 0;
  EXPECT_EQ(Make(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LoadGeneratorTest, ABatchHoldsNoMoreBytesThanAllowedInFlight) {
  // 1 KiB blocks, at most 10 KiB in flight: batches of 9 or 10, not 64.
  LoadOptions options;
  options.count = 200;
  options.sizes = SizeDistribution::Parse("1KiB").value();
  options.max_in_flight_bytes = 10 << 10;
  options.free_fraction = 0;
  LoadSummary summary;
  ASSERT_TRUE(Make(options)->Run(&summary).ok());
  EXPECT_EQ(summary.blocks_allocated, 200u);
  EXPECT_GE(server_.service().batches(), 20u);
  EXPECT_LE(server_.service().batches(), 23u);
}

TEST_F(LoadGeneratorTest, ABatchCarriesAtMostAMebibyte) {
  // 300 KiB blocks: three a batch; 2 MiB ones: one a batch.
  LoadOptions options;
  options.count = 30;
  options.sizes = SizeDistribution::Parse("300KiB").value();
  options.free_fraction = 0;
  LoadSummary summary;
  ASSERT_TRUE(Make(options)->Run(&summary).ok());
  EXPECT_EQ(server_.service().batches(), 10u);
  options.sizes = SizeDistribution::Parse("2MiB").value();
  options.count = 5;
  ASSERT_TRUE(Make(options)->Run(&summary).ok());
  EXPECT_EQ(summary.blocks_allocated, 5u);
  EXPECT_EQ(server_.service().batches(), 15u);
}

TEST_F(LoadGeneratorTest, LargeBlocksAreCappedInFlight) {
  LoadOptions options;
  options.count = 12;
  options.sizes = SizeDistribution::Parse("4MiB").value();
  options.max_in_flight_bytes = 8 << 20;
  options.free_fraction = 0.5;
  LoadSummary summary;
  ASSERT_TRUE(Make(options)->Run(&summary).ok());
  EXPECT_EQ(summary.blocks_allocated, 12u);
  EXPECT_EQ(summary.blocks_freed, 6u);
}

}  // namespace
}  // namespace poold::client
