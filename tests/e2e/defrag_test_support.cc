// Fragmented data sets and the one-poold-per-test fixture.
#include "tests/e2e/defrag_test_support.h"

#include <algorithm>
#include <random>
#include <utility>

#include "absl/time/clock.h"

namespace poold::testing {

absl::Status BuildFragmented(PoolTestClient& client, uint64_t small_bytes,
                             uint64_t medium_bytes, int freed_percent,
                             FragmentedData* data) {
  const absl::Time start = absl::Now();
  std::mt19937_64 rng(77);
  std::vector<TestBlock> blocks;
  auto add = [&](uint64_t bytes, uint64_t min_size, uint64_t max_size) {
    std::uniform_int_distribution<uint64_t> size(min_size, max_size);
    for (uint64_t sum = 0; sum < bytes;) {
      blocks.push_back({.seed = blocks.size() * 104729 + 5, .size = size(rng)});
      sum += blocks.back().size;
    }
  };
  add(small_bytes, kSmallMin, kSmallMax);
  add(medium_bytes, kMediumMin, kMediumMax);
  // Interleave the pools' calls, as an application would.
  std::shuffle(blocks.begin(), blocks.end(), rng);
  if (absl::Status s = client.AllocateAll(blocks, kWindow); !s.ok()) return s;
  data->allocated_blocks = blocks.size();
  data->allocated_bytes = 0;
  for (const TestBlock& block : blocks) data->allocated_bytes += block.size;

  std::shuffle(blocks.begin(), blocks.end(), rng);
  const size_t freed = blocks.size() * freed_percent / 100;
  std::vector<uint64_t> handles;
  handles.reserve(freed);
  for (size_t i = 0; i < freed; ++i) handles.push_back(blocks[i].handle);
  if (absl::Status s = client.FreeAll(handles, kWindow); !s.ok()) return s;
  data->survivors.assign(blocks.begin() + freed, blocks.end());
  data->setup_time = absl::Now() - start;
  return absl::OkStatus();
}

absl::Duration DurationFromProto(const google::protobuf::Duration& duration) {
  return absl::Seconds(duration.seconds()) +
         absl::Nanoseconds(duration.nanos());
}

void DefragE2eTest::Start(std::vector<std::string> flags) {
  PooldProcess::Options options;
  options.extra_flags = std::move(flags);
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  ASSERT_TRUE(poold.ok()) << poold.status();
  poold_ = *std::move(poold);
  client_ = std::make_unique<PoolTestClient>(poold_->NewChannel());
}

void DefragE2eTest::TearDown() {
  client_.reset();
  if (poold_ != nullptr && poold_->Running()) {
    absl::StatusOr<int> code = poold_->Stop();
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 0) << poold_->Log();
  }
}

}  // namespace poold::testing
