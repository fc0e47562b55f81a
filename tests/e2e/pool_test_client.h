// PoolTestClient: the C++ generated stub of poold.v1.PoolService wrapped for
// end-to-end tests: one-line blocking calls with a deadline, and bulk
// allocate / free / verify runs that keep many asynchronous calls in flight
// (one RPC per block is the only way in, so setup speed comes from
// concurrency). Blocks get deterministic contents derived from a seed, so a
// test can check any block byte for byte without keeping a copy.
#ifndef POOLD_TESTS_E2E_POOL_TEST_CLIENT_H_
#define POOLD_TESTS_E2E_POOL_TEST_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "poold/v1/pool_service.grpc.pb.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define POOLD_E2E_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define POOLD_E2E_SANITIZED 1
#endif

namespace poold::testing {

// True when this test (and so poold, built with the same flags) runs under
// AddressSanitizer or ThreadSanitizer: several times slower, and with an
// allocator that moves the resident set size by itself.
#ifdef POOLD_E2E_SANITIZED
inline constexpr bool kSanitizerBuild = true;
#else
inline constexpr bool kSanitizerBuild = false;
#endif

// For tests: asserts that an absl::Status is OK and prints it when not.
#define POOLD_ASSERT_OK(expr)                         \
  do {                                                \
    const ::absl::Status poold_status_ = (expr);      \
    ASSERT_TRUE(poold_status_.ok()) << poold_status_; \
  } while (false)

// `size` bytes that depend only on `seed` (a SplitMix64 stream).
std::string BlockContents(uint64_t seed, uint64_t size);

// A block a test allocated: what it asked for and what poold answered.
struct TestBlock {
  uint64_t seed = 0;
  uint64_t size = 0;
  uint64_t handle = 0;
  v1::Pool pool = v1::POOL_UNSPECIFIED;
};

// "12.3 MiB": byte counts for test logs.
std::string FormatBytes(uint64_t bytes);

class PoolTestClient {
 public:
  static constexpr absl::Duration kTimeout = absl::Seconds(30);

  explicit PoolTestClient(std::shared_ptr<grpc::Channel> channel)
      : stub_(v1::PoolService::NewStub(std::move(channel))) {}

  v1::PoolService::Stub* stub() { return stub_.get(); }

  // Blocking calls with a deadline `timeout` from now.
  grpc::Status Allocate(uint64_t size, const std::string& data,
                        v1::AllocateResponse* response,
                        absl::Duration timeout = kTimeout);
  grpc::Status Write(uint64_t handle, uint64_t offset, const std::string& data,
                     absl::Duration timeout = kTimeout);
  grpc::Status Read(uint64_t handle, uint64_t offset, uint64_t length,
                    std::string* data, absl::Duration timeout = kTimeout);
  grpc::Status Free(uint64_t handle, absl::Duration timeout = kTimeout);
  // Consistent statistics (taken on the worker, after this client's own
  // calls), so tests can compare them exactly.
  grpc::Status GetStats(bool include_classes, v1::GetStatsResponse* response,
                        absl::Duration timeout = kTimeout);
  grpc::Status Analyze(const std::vector<v1::Pool>& pools,
                       v1::FragmentationReport* response,
                       absl::Duration timeout = kTimeout);
  grpc::Status Defragment(const std::vector<v1::Pool>& pools,
                          v1::DefragReport* response,
                          absl::Duration timeout = kTimeout);

  // Allocates every block of `blocks` (seed and size set) with its
  // contents, at most `window` calls in flight, and fills in handle and
  // pool. Returns the first error; then no more calls start, the calls in
  // flight finish, and blocks not allocated keep handle 0.
  absl::Status AllocateAll(std::vector<TestBlock>& blocks, int window);

  // Frees every handle, at most `window` calls in flight.
  absl::Status FreeAll(const std::vector<uint64_t>& handles, int window);

  // Reads every block whole and compares it with its contents. Fails with
  // the first RPC error, or names the blocks that differ.
  absl::Status VerifyAll(const std::vector<TestBlock>& blocks, int window);

 private:
  std::unique_ptr<v1::PoolService::Stub> stub_;
};

}  // namespace poold::testing

#endif  // POOLD_TESTS_E2E_POOL_TEST_CLIENT_H_
