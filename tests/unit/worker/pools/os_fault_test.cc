// Tests of each pool when the OS refuses a call: an allocation whose pages
// cannot be committed fails and changes nothing; a purge refused during a
// defragmentation fails that pool only, leaves every block in place and
// every counter exact, and is not counted as returned.
// Each pool is given a FaultInjectingOs; the other pools use the real OS.
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/pools/fault_injecting_os.h"
#include "worker/pools/pool_set.h"

namespace poold::pools {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

struct Block {
  uint64_t handle;
  std::string data;
};

// A block size of each pool, and another in a different size class.
uint64_t SizeIn(PoolKind pool, bool other_class) {
  switch (pool) {
    case PoolKind::kSmall:
      return other_class ? 500 : 100;
    case PoolKind::kMedium:
      return other_class ? 20000 : 4000;
    case PoolKind::kLarge:
      return other_class ? 300 << 10 : 100 << 10;
  }
  return 0;
}

class OsFaultTest : public ::testing::TestWithParam<PoolKind> {
 protected:
  void SetUp() override {
    PoolSetOptions options;
    options.handle_key = 77;
    options.os[PoolIndex(GetParam())] = &os_;
    absl::StatusOr<std::unique_ptr<PoolSet>> pools = PoolSet::Create(options);
    ASSERT_TRUE(pools.ok()) << pools.status();
    pools_ = *std::move(pools);
  }

  // Allocates `count` blocks of `size` with distinct contents.
  void Fill(uint64_t size, int count) {
    for (int i = 0; i < count; ++i) {
      std::string data(size, static_cast<char>('a' + i % 26));
      data.replace(0, std::to_string(i).size(), std::to_string(i));
      absl::StatusOr<BlockInfo> block = pools_->Allocate(size, data);
      ASSERT_TRUE(block.ok()) << block.status();
      blocks_.push_back({block->handle, std::move(data)});
    }
  }

  // Frees four blocks of every five, so most spans are left sparse.
  void FreeMost() {
    std::vector<Block> kept;
    for (size_t i = 0; i < blocks_.size(); ++i) {
      if (i % 5 == 0) {
        kept.push_back(std::move(blocks_[i]));
      } else {
        ASSERT_TRUE(pools_->Free(blocks_[i].handle).ok());
      }
    }
    blocks_ = std::move(kept);
  }

  void ExpectEveryBlockIntact() {
    for (const Block& block : blocks_) {
      absl::StatusOr<absl::string_view> read = pools_->Read(block.handle, 0, 0);
      ASSERT_TRUE(read.ok()) << read.status();
      ASSERT_EQ(*read, block.data);
    }
    EXPECT_TRUE(pools_->CheckInvariants().ok()) << pools_->CheckInvariants();
    EXPECT_TRUE(pools_->CheckResidency().ok()) << pools_->CheckResidency();
  }

  DefragReport DefragmentAll() {
    EXPECT_TRUE(pools_->BeginDefrag({}).ok());
    while (!pools_->DefragStep(absl::Milliseconds(1)).done) {
    }
    return pools_->EndDefrag(DefragStopReason::kFinished);
  }

  const FragmentationStats& StatsOf(const PoolSetStats& stats) {
    return stats.pools[PoolIndex(GetParam())].stats;
  }

  FaultInjectingOs os_;
  std::unique_ptr<PoolSet> pools_;
  std::vector<Block> blocks_;
};

// The first block of a new size class needs a span's first pages (a large
// block, fresh pages of its chunk): when the OS refuses them, the allocation
// fails and the pool is as it was. Once the OS gives memory again, the same
// allocation succeeds.
TEST_P(OsFaultTest, ARefusedCommitFailsANewClassesFirstBlock) {
  ASSERT_NO_FATAL_FAILURE(Fill(SizeIn(GetParam(), false), 20));
  const PoolSetStats before = pools_->Stats(false);
  os_.FailAt(OsCall::kCommit, 1, ENOMEM, /*repeat=*/true);
  const absl::StatusOr<BlockInfo> refused =
      pools_->Allocate(SizeIn(GetParam(), true), "x");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(),
              AllOf(HasSubstr("madvise(MADV_POPULATE_WRITE)"),
                    HasSubstr(std::strerror(ENOMEM))));
  EXPECT_GE(os_.failures(), 1u);
  const PoolSetStats after = pools_->Stats(false);
  EXPECT_EQ(StatsOf(after).live_bytes, StatsOf(before).live_bytes);
  EXPECT_EQ(StatsOf(after).blocks, StatsOf(before).blocks);
  EXPECT_EQ(StatsOf(after).resident_bytes, StatsOf(before).resident_bytes);
  ExpectEveryBlockIntact();

  os_.Heal();
  absl::StatusOr<BlockInfo> block =
      pools_->Allocate(SizeIn(GetParam(), true), "x");
  ASSERT_TRUE(block.ok()) << block.status();
  blocks_.push_back({block->handle, "x" + std::string(block->size - 1, '\0')});
  ExpectEveryBlockIntact();
}

// A span grows page by page as its class fills (a large block takes fresh
// pages at once): the block that needs a page the OS refuses fails, and
// nothing changes; earlier blocks are intact.
TEST_P(OsFaultTest, ARefusedCommitFailsTheBlockThatNeedsTheNextPage) {
  const uint64_t size = SizeIn(GetParam(), false);
  ASSERT_NO_FATAL_FAILURE(Fill(size, 1));
  os_.FailAt(OsCall::kCommit, 1, ENOMEM, /*repeat=*/true);
  absl::Status refused;
  for (int i = 0; i < 100000 && refused.ok(); ++i) {
    const PoolSetStats before = pools_->Stats(false);
    std::string data(size, 'z');
    absl::StatusOr<BlockInfo> block = pools_->Allocate(size, data);
    if (block.ok()) {
      blocks_.push_back({block->handle, std::move(data)});
      continue;
    }
    refused = block.status();
    const PoolSetStats after = pools_->Stats(false);
    EXPECT_EQ(StatsOf(after).blocks, StatsOf(before).blocks);
    EXPECT_EQ(StatsOf(after).resident_bytes, StatsOf(before).resident_bytes);
  }
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted) << refused;
  ExpectEveryBlockIntact();
}

// A defragmentation during which the OS refuses every purge of this pool:
// the pool is reported FAILED with the call and what was done, it holds
// what it held (nothing counted as returned that was not), every block reads
// back unchanged, and the other pools are still defragmented. Once the OS
// purges again, the next defragmentation finishes the job.
TEST_P(OsFaultTest, ARefusedPurgeFailsThatPoolOnly) {
  for (PoolKind pool : kAllPools) {
    ASSERT_NO_FATAL_FAILURE(
        Fill(SizeIn(pool, false), pool == PoolKind::kLarge ? 300 : 3000));
  }
  ASSERT_NO_FATAL_FAILURE(FreeMost());
  ASSERT_GT(StatsOf(pools_->Stats(false)).reclaimable_bytes, 0u);
  os_.FailAt(OsCall::kPurge, 1, EIO, /*repeat=*/true);

  const DefragReport report = DefragmentAll();
  EXPECT_EQ(report.pools_failed, 1u);
  ASSERT_EQ(report.pools.size(), kPoolCount);
  for (const PoolDefragReport& pool : report.pools) {
    if (pool.pool == GetParam()) {
      EXPECT_EQ(pool.outcome, DefragOutcome::kFailed);
      EXPECT_THAT(pool.reason, AllOf(HasSubstr("madvise(MADV_DONTNEED)"),
                                     HasSubstr(std::strerror(EIO)),
                                     HasSubstr("stopped after"),
                                     HasSubstr("every block is in place")));
      EXPECT_EQ(pool.bytes_reclaimed,
                pool.before.resident_bytes - pool.after.resident_bytes);
    } else {
      EXPECT_EQ(pool.outcome, DefragOutcome::kCleaned) << pool.reason;
      EXPECT_EQ(pool.after.reclaimable_bytes, 0u);
    }
  }
  EXPECT_GE(os_.failures(), 1u);
  EXPECT_GT(StatsOf(pools_->Stats(false)).reclaimable_bytes, 0u);
  ExpectEveryBlockIntact();

  os_.Heal();
  const DefragReport again = DefragmentAll();
  EXPECT_EQ(again.pools_failed, 0u);
  EXPECT_EQ(StatsOf(pools_->Stats(false)).reclaimable_bytes, 0u);
  ExpectEveryBlockIntact();
}

INSTANTIATE_TEST_SUITE_P(AllPools, OsFaultTest, ::testing::ValuesIn(kAllPools),
                         [](const ::testing::TestParamInfo<PoolKind>& info) {
                           return std::string(PoolName(info.param));
                         });

}  // namespace
}  // namespace poold::pools
