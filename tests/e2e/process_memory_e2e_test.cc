// End-to-end tests of the whole process's memory against the real poold:
// after large messages (blocks of hundreds of KiB written and read whole),
// what gRPC and protobuf freed goes back to the OS at the end of a
// defragmentation and, without one, once the server is idle; GetStats and
// the DefragReport show the process's RSS next to the pools' resident bytes.
// The RSS checks need glibc's malloc, so sanitizer builds skip them.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/e2e/pool_test_client.h"
#include "tests/e2e/poold_process.h"

namespace poold::testing {
namespace {

constexpr uint64_t kMiB = 1 << 20;
// With glibc's adaptive mmap threshold and no trim, these messages left 23
// to 110 MiB in the heap (measured on this build); poold gives all but a
// few MiB back.
constexpr uint64_t kAllowedAboveIdle = 8 * kMiB;

class ProcessMemoryE2eTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags) {
    PooldProcess::Options options;
    // Nothing stays cached in the pools: what remains is outside them.
    flags.push_back("--cache_decay=0");
    options.extra_flags = std::move(flags);
    absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
        PooldProcess::Start(options);
    ASSERT_TRUE(poold.ok()) << poold.status();
    poold_ = *std::move(poold);
    client_ = std::make_unique<PoolTestClient>(poold_->NewChannel());
  }

  void TearDown() override {
    client_.reset();
    if (poold_ != nullptr) {
      absl::StatusOr<int> code = poold_->Stop();
      ASSERT_TRUE(code.ok()) << code.status();
      EXPECT_EQ(*code, 0) << poold_->Log();
    }
  }

  v1::GetStatsResponse Stats() {
    v1::GetStatsResponse stats;
    const grpc::Status status = client_->GetStats(false, &stats);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return stats;
  }

  // About 100 MiB in blocks of 300 KiB to 3 MiB, each written with its
  // contents, read back whole and freed.
  void LargeMessages() {
    std::vector<TestBlock> blocks;
    const uint64_t sizes[] = {300 << 10, kMiB, 3 * kMiB};
    for (uint64_t i = 0; i < 60; ++i) {
      blocks.push_back(TestBlock{.seed = i, .size = sizes[i % 3]});
    }
    POOLD_ASSERT_OK(client_->AllocateAll(blocks, 8));
    POOLD_ASSERT_OK(client_->VerifyAll(blocks, 8));
    std::vector<uint64_t> handles;
    for (const TestBlock& block : blocks) handles.push_back(block.handle);
    POOLD_ASSERT_OK(client_->FreeAll(handles, 8));
  }

  std::unique_ptr<PooldProcess> poold_;
  std::unique_ptr<PoolTestClient> client_;
};

TEST_F(ProcessMemoryE2eTest, StatsAndReportShowTheProcessBesideThePools) {
  ASSERT_NO_FATAL_FAILURE(Start({}));
  TestBlock block{.seed = 1, .size = 5000};
  std::vector<TestBlock> blocks = {block};
  POOLD_ASSERT_OK(client_->AllocateAll(blocks, 1));
  const v1::GetStatsResponse stats = Stats();
  const v1::ProcessStats& process = stats.process();
  EXPECT_GT(process.rss_bytes(), 0u);
  EXPECT_GT(process.rss_file_bytes(), 0u);
  EXPECT_EQ(process.pools_resident_bytes(), stats.total().resident_bytes());
  EXPECT_EQ(process.outside_pools_bytes(),
            process.rss_bytes() - process.pools_resident_bytes());

  v1::DefragReport report;
  ASSERT_TRUE(client_->Defragment({}, &report).ok());
  EXPECT_GT(report.rss_after_bytes(), 0u);
  EXPECT_GE(report.pools_resident_before_bytes(),
            report.pools_resident_after_bytes());
  EXPECT_EQ(report.pools_resident_before_bytes() - report.bytes_reclaimed(),
            report.pools_resident_after_bytes());
  EXPECT_EQ(Stats().worker().heap_trims(), 1u);
}

TEST_F(ProcessMemoryE2eTest, LargeMessagesLeaveNothingAfterADefragmentation) {
  if (kSanitizerBuild) GTEST_SKIP() << "needs glibc's malloc";
  ASSERT_NO_FATAL_FAILURE(Start({}));
  const uint64_t idle = Stats().process().rss_bytes();
  LargeMessages();
  v1::DefragReport report;
  ASSERT_TRUE(client_->Defragment({}, &report).ok());
  EXPECT_LE(report.rss_after_bytes(), idle + kAllowedAboveIdle)
      << "idle " << FormatBytes(idle) << ", after "
      << FormatBytes(report.rss_after_bytes()) << ", pools "
      << FormatBytes(report.pools_resident_after_bytes());
}

// --heap_arenas (2 by default): gRPC's threads, busy with eight calls at
// once, allocate from two heaps instead of an arena each (glibc's default
// gave each thread its own, 16 here, and the free memory left in each added
// up).
TEST_F(ProcessMemoryE2eTest, ThreadsShareTwoHeapArenas) {
  if (kSanitizerBuild) GTEST_SKIP() << "needs glibc's malloc";
  ASSERT_NO_FATAL_FAILURE(Start({}));
  LargeMessages();
  const absl::Time loaded = absl::Now();
  // The count is at most a second old: wait for a snapshot taken past that.
  v1::GetStatsResponse stats;
  do {
    stats = Stats();
    absl::SleepFor(absl::Milliseconds(20));
  } while (absl::FromUnixSeconds(stats.taken_at().seconds()) +
                   absl::Nanoseconds(stats.taken_at().nanos()) <
               loaded + absl::Milliseconds(1300) &&
           absl::Now() < loaded + absl::Seconds(30));
  EXPECT_LE(stats.process().heap_arenas(), 2u);
  EXPECT_GE(stats.process().heap_arenas(), 1u);
}

TEST_F(ProcessMemoryE2eTest, IdleServerTrimsTheHeapWithoutADefragmentation) {
  if (kSanitizerBuild) GTEST_SKIP() << "needs glibc's malloc";
  // glibc's adaptive threshold keeps the buffers in the heap: only the trim
  // when the server goes idle returns them.
  ASSERT_NO_FATAL_FAILURE(Start({"--heap_mmap_threshold_bytes=0"}));
  const uint64_t idle = Stats().process().rss_bytes();
  const uint64_t trims_before = Stats().worker().heap_trims();
  LargeMessages();
  // Each GetStats is activity too; a trim follows the first idle 100 ms.
  // The deadline only bounds a broken build.
  const absl::Time give_up = absl::Now() + absl::Seconds(60);
  v1::GetStatsResponse stats = Stats();
  while (stats.worker().heap_trims() == trims_before && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(300));
    stats = Stats();
  }
  ASSERT_GT(stats.worker().heap_trims(), trims_before);
  EXPECT_GT(stats.worker().heap_bytes_released(), 0u);
  EXPECT_LE(stats.process().rss_bytes(), idle + 3 * kAllowedAboveIdle)
      << "idle " << FormatBytes(idle) << ", now "
      << FormatBytes(stats.process().rss_bytes());
  EXPECT_EQ(stats.worker().defragmentations(), 0u);
}

}  // namespace
}  // namespace poold::testing
