// Shared by the defragmentation end-to-end tests: fragmented data sets built
// through PoolTestClient, and a fixture that runs one poold per test.
#ifndef POOLD_TESTS_E2E_DEFRAG_TEST_SUPPORT_H_
#define POOLD_TESTS_E2E_DEFRAG_TEST_SUPPORT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "gtest/gtest.h"
#include "tests/e2e/pool_test_client.h"
#include "tests/e2e/poold_process.h"

namespace poold::testing {

// Calls in flight while building and checking the data.
inline constexpr int kWindow = 64;

// Block sizes of the fragmented data sets. poold takes one RPC per block, at
// some 10 000 - 20 000 per second on two cores, so 300 MiB of 100-200 B
// blocks (two million allocations and 1.6 million frees) would take minutes
// to set up. Blocks from the top half of the small pool and the lower
// quarter of the medium pool build the same kind of fragmentation (random
// holes in spans of equal slots, in many size classes of both slab pools)
// with ten times fewer calls.
inline constexpr uint64_t kSmallMin = 512;
inline constexpr uint64_t kSmallMax = 1023;
inline constexpr uint64_t kMediumMin = 1024;
inline constexpr uint64_t kMediumMax = 16383;

// Sanitizer builds run several times slower: half the data. (Less would
// make the defragmentations too short to test anything.)
inline constexpr uint64_t kDataScale = kSanitizerBuild ? 2 : 1;
// The large data set: 336 MiB allocated, 80% freed, leaves over 256 MiB to
// reclaim (in a plain build). Most of it in medium blocks, which take fewer
// calls per MiB; its defragmentation takes 80-100 ms on an idle machine.
inline constexpr uint64_t kLargeSetSmallBytes =
    (uint64_t{64} << 20) / kDataScale;
inline constexpr uint64_t kLargeSetMediumBytes =
    (uint64_t{272} << 20) / kDataScale;

// A fragmented data set and what building it took.
struct FragmentedData {
  std::vector<TestBlock> survivors;
  uint64_t allocated_bytes = 0;
  size_t allocated_blocks = 0;
  absl::Duration setup_time;
};

// Allocates `small_bytes` of small-pool blocks and `medium_bytes` of
// medium-pool blocks (their calls interleaved, contents known), then frees
// `freed_percent` of them at random.
absl::Status BuildFragmented(PoolTestClient& client, uint64_t small_bytes,
                             uint64_t medium_bytes, int freed_percent,
                             FragmentedData* data);

absl::Duration DurationFromProto(const google::protobuf::Duration& duration);

// One poold per test, started by Start() with extra flags; TearDown stops it
// (unless the test did) and expects exit code 0.
class DefragE2eTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags);
  void TearDown() override;

  std::unique_ptr<PooldProcess> poold_;
  std::unique_ptr<PoolTestClient> client_;
};

}  // namespace poold::testing

#endif  // POOLD_TESTS_E2E_DEFRAG_TEST_SUPPORT_H_
