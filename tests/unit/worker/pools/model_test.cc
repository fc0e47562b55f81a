// Randomized model test of the engine: long random sequences of allocate /
// write / read / free across all three pools, with defragmentation steps
// interleaved, checked against a plain model (handle -> bytes): every read
// against the model, after every compaction step a sample of blocks (all of
// them every 32nd step) and the counters, and after every defragmentation
// every live block.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "worker/pools/pool_set.h"

namespace poold::pools {
namespace {

class Model {
 public:
  explicit Model(uint64_t seed) : gen_(std::seed_seq{seed}) {
    PoolSetOptions options;
    options.handle_key = seed + 1;
    options.max_block_bytes = 1 << 20;
    // Small retained amounts so the free-span cache and purging are
    // exercised often.
    options.small_retained_bytes = 128 << 10;
    options.medium_retained_bytes = 2 << 20;
    options.large_retained_bytes = 1 << 20;
    pools_ = *PoolSet::Create(options);
  }

  // Most blocks fall in one small and one medium class, so those classes
  // span many spans and compaction has real work; the rest covers every
  // size.
  uint64_t RandomSize() {
    const int kind = absl::Uniform(gen_, 0, 100);
    if (kind < 60) return absl::Uniform<uint64_t>(gen_, 97, 105);
    if (kind < 82) return absl::Uniform<uint64_t>(gen_, 1, 1024);
    if (kind < 95) return absl::Uniform<uint64_t>(gen_, 8193, 8705);
    if (kind < 99) return absl::Uniform<uint64_t>(gen_, 1024, 65536);
    return absl::Uniform<uint64_t>(gen_, 65536, 200 << 10);
  }

  std::string RandomBytes(uint64_t n) {
    std::string s(n, '\0');
    const char base = static_cast<char>(absl::Uniform(gen_, 0, 256));
    for (uint64_t i = 0; i < n; ++i) s[i] = static_cast<char>(base + i * 7);
    return s;
  }

  void Allocate() {
    const uint64_t size = RandomSize();
    const uint64_t filled = absl::Uniform<uint64_t>(gen_, 0, size + 1);
    std::string data = RandomBytes(filled);
    auto block = pools_->Allocate(size, data);
    ASSERT_TRUE(block.ok()) << block.status();
    ASSERT_EQ(block->size, size);
    ASSERT_EQ(block->pool, PoolForSize(size));
    ASSERT_FALSE(blocks_.contains(block->handle));
    data.resize(size, '\0');
    blocks_[block->handle] = std::move(data);
    handles_.push_back(block->handle);
  }

  uint64_t PickLive() {
    const size_t i = absl::Uniform<size_t>(gen_, 0, handles_.size());
    return handles_[i];
  }

  void Free() {
    const size_t i = absl::Uniform<size_t>(gen_, 0, handles_.size());
    const uint64_t handle = handles_[i];
    ASSERT_TRUE(pools_->Free(handle).ok());
    handles_[i] = handles_.back();
    handles_.pop_back();
    blocks_.erase(handle);
    freed_.push_back(handle);
  }

  void Write() {
    const uint64_t handle = PickLive();
    std::string& model = blocks_[handle];
    const uint64_t offset = absl::Uniform<uint64_t>(gen_, 0, model.size() + 1);
    const uint64_t len =
        absl::Uniform<uint64_t>(gen_, 0, model.size() - offset + 1);
    const std::string data = RandomBytes(len);
    ASSERT_TRUE(pools_->Write(handle, offset, data).ok());
    model.replace(offset, len, data);
    // Past the end: rejected, nothing written.
    EXPECT_EQ(pools_->Write(handle, model.size() - len + 1, data + "x").code(),
              absl::StatusCode::kOutOfRange);
  }

  void Read() {
    const uint64_t handle = PickLive();
    const std::string& model = blocks_[handle];
    const uint64_t offset = absl::Uniform<uint64_t>(gen_, 0, model.size() + 1);
    const uint64_t len =
        absl::Uniform<uint64_t>(gen_, 0, model.size() - offset + 1);
    auto data = pools_->Read(handle, offset, len);
    ASSERT_TRUE(data.ok()) << data.status();
    const uint64_t expected_len = len == 0 ? model.size() - offset : len;
    ASSERT_EQ(*data, absl::string_view(model).substr(offset, expected_len));
  }

  void UseFreedHandle() {
    if (freed_.empty()) return;
    const uint64_t handle =
        freed_[absl::Uniform<size_t>(gen_, 0, freed_.size())];
    ASSERT_EQ(pools_->Read(handle, 0, 0).status().code(),
              absl::StatusCode::kNotFound);
    ASSERT_EQ(pools_->Free(handle).code(), absl::StatusCode::kNotFound);
  }

  void CheckBlock(uint64_t handle, const std::string& model) {
    auto data = pools_->Read(handle, 0, 0);
    ASSERT_TRUE(data.ok()) << data.status();
    ASSERT_EQ(data->size(), model.size());
    ASSERT_TRUE(*data == model) << "block " << handle << " changed";
  }

  void CheckAll() {
    for (const auto& [handle, model] : blocks_) {
      CheckBlock(handle, model);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

  // Every live block after every 32nd slice and after every whole
  // defragmentation; in between, 256 random ones (moves are per span, so a
  // broken move shows up in many blocks at once).
  void CheckAfterSlice(int slice) {
    if (slice % 32 == 0 || handles_.size() <= 256) {
      CheckAll();
      return;
    }
    for (int i = 0; i < 256; ++i) {
      const uint64_t handle = PickLive();
      CheckBlock(handle, blocks_[handle]);
      if (::testing::Test::HasFatalFailure()) return;
    }
  }

  void CheckCounters() {
    const PoolSetStats stats = pools_->Stats(false);
    uint64_t live = 0;
    for (const auto& [handle, model] : blocks_) live += model.size();
    ASSERT_EQ(stats.total.live_bytes, live);
    ASSERT_EQ(stats.total.blocks, blocks_.size());
    ASSERT_EQ(stats.total.resident_bytes, pools_->resident_bytes());
    ASSERT_GE(stats.total.resident_bytes,
              stats.total.allocated_bytes + stats.total.free_bytes);
    ASSERT_GE(stats.total.allocated_bytes, stats.total.live_bytes);
    ASSERT_LE(stats.total.reclaimable_bytes, stats.total.resident_bytes);
  }

  // What the pools count as resident is what the OS has resident, and the
  // span records agree with the bitmaps and counters.
  void CheckResidency() {
    const absl::Status status = pools_->CheckResidency();
    ASSERT_TRUE(status.ok()) << status;
    const absl::Status invariants = pools_->CheckInvariants();
    ASSERT_TRUE(invariants.ok()) << invariants;
  }

  // The size classes that a compaction could still shrink, for messages.
  std::string ClassesWithRoom(PoolKind pool) {
    std::string out;
    const PoolSetStats stats = pools_->Stats(true);
    for (const ClassStats& c : stats.pools[PoolIndex(pool)].classes) {
      if (c.stats.reclaimable_bytes == 0) continue;
      absl::StrAppend(&out, "class ", c.slot_bytes, ": ", c.stats.blocks,
                      " blocks in ", c.stats.spans, " spans, ",
                      c.stats.reclaimable_bytes, " reclaimable; ");
    }
    return out;
  }

  // One defragmentation with tiny slices, and random operations between
  // them; every slice is followed by a check (CheckAfterSlice) and the
  // whole run by a full one.
  void Defragment(int ops_between_slices) {
    std::vector<PoolKind> which;
    for (PoolKind p : kAllPools) {
      if (absl::Bernoulli(gen_, 0.7)) which.push_back(p);
    }
    const bool stop_early = absl::Bernoulli(gen_, 0.1);
    // With nothing happening between slices the projection must be exact.
    const bool quiet = ops_between_slices == 0 && !stop_early;
    std::vector<PoolAnalysis> projected;
    for (PoolKind p : kAllPools) projected.push_back(pools_->Analyze(p));
    ASSERT_TRUE(pools_->BeginDefrag(which).ok());
    int slices = 0;
    uint64_t moved_by_slices = 0;
    while (true) {
      const DefragProgress progress =
          pools_->DefragStep(absl::Microseconds(absl::Uniform(gen_, 0, 200)));
      const bool done = progress.done;
      moved_by_slices += progress.bytes_moved;
      ++slices;
      CheckAfterSlice(slices);
      CheckCounters();
      const absl::Status invariants = pools_->CheckInvariants();
      ASSERT_TRUE(invariants.ok()) << invariants << " after slice " << slices;
      if (::testing::Test::HasFatalFailure()) return;
      if (done || (stop_early && slices > 3)) break;
      for (int i = 0; i < ops_between_slices; ++i) {
        RandomOp(/*allow_defrag=*/false);
        if (::testing::Test::HasFatalFailure()) return;
      }
    }
    const DefragReport report = pools_->EndDefrag(DefragStopReason::kDeadline);
    // What the slices said they moved is what the report says was moved.
    ASSERT_EQ(moved_by_slices, report.bytes_moved);
    CheckAll();
    CheckCounters();
    CheckResidency();
    if (::testing::Test::HasFatalFailure()) return;
    EXPECT_EQ(report.slices, static_cast<uint64_t>(slices));
    const size_t expected_pools = which.empty() ? kPoolCount : which.size();
    EXPECT_EQ(report.pools.size(), expected_pools);
    if (quiet) {
      EXPECT_TRUE(report.complete);
      for (const PoolDefragReport& r : report.pools) {
        const PoolAnalysis& p = projected[PoolIndex(r.pool)];
        EXPECT_EQ(r.bytes_reclaimed, p.bytes_to_reclaim) << PoolName(r.pool);
        EXPECT_EQ(r.blocks_moved, p.blocks_to_move) << PoolName(r.pool);
        EXPECT_EQ(r.bytes_moved, p.bytes_to_move) << PoolName(r.pool);
        EXPECT_EQ(r.after.reclaimable_bytes, 0u)
            << PoolName(r.pool) << ": " << r.reason << "; "
            << ClassesWithRoom(r.pool);
        EXPECT_EQ(r.outcome, p.bytes_to_reclaim == 0 ? DefragOutcome::kSkipped
                                                     : DefragOutcome::kCleaned);
      }
    }
    blocks_moved_ += report.blocks_moved;
    ++defrags_;
    max_sparse_handles_ =
        std::max(max_sparse_handles_, pools_->sparse_handles());
  }

  void RandomOp(bool allow_defrag) {
    const int op = absl::Uniform(gen_, 0, 1000);
    // Growing phases allocate more than they free, shrinking phases the
    // reverse: the shrinking ones leave sparse spans behind.
    if (handles_.empty() || op < (phase_grow_ ? 450 : 150)) {
      Allocate();
    } else if (op < 600) {
      Free();
    } else if (op < 750) {
      Write();
    } else if (op < 990) {
      Read();
    } else if (op < 999) {
      UseFreedHandle();
    } else if (allow_defrag) {
      Defragment(absl::Bernoulli(gen_, 0.3) ? 0 : absl::Uniform(gen_, 1, 20));
    }
  }

  void Run(int ops) {
    for (int i = 0; i < ops; ++i) {
      if (i % 20000 == 0) phase_grow_ = !phase_grow_;
      RandomOp(/*allow_defrag=*/true);
      if (i % 5000 == 0) CheckResidency();
      if (::testing::Test::HasFatalFailure()) return;
    }
    Defragment(0);
    CheckAll();
  }

  int defrags() const { return defrags_; }
  uint64_t max_sparse_handles() const { return max_sparse_handles_; }
  uint64_t blocks_moved() const { return blocks_moved_; }

 private:
  absl::BitGen gen_;
  std::unique_ptr<PoolSet> pools_;
  absl::flat_hash_map<uint64_t, std::string> blocks_;
  std::vector<uint64_t> handles_;
  std::vector<uint64_t> freed_;
  bool phase_grow_ = false;
  int defrags_ = 0;
  uint64_t blocks_moved_ = 0;
  uint64_t max_sparse_handles_ = 0;
};

class ModelTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(ModelTest, RandomOperationsMatchTheModel) {
  Model model(GetParam());
  model.Run(500000);
  EXPECT_GT(model.defrags(), 100);
  EXPECT_GT(model.blocks_moved(), 10000u);
  // Defragmentations moved survivors' handles into the sparse stores (and
  // every check above ran with them there).
  EXPECT_GT(model.max_sparse_handles(), 100u);
}

INSTANTIATE_TEST_SUITE_P(Seeds, ModelTest, ::testing::Values(1, 2, 3, 4));

}  // namespace
}  // namespace poold::pools
