// FaultInjectingOs: an OsInterface that passes calls to another one, except
// the Nth call of a chosen kind (map, unmap, commit, purge), which fails as
// the OS would, with a chosen errno. For tests, the model test, the fuzzer
// and poold's testing-only fault flag. Not thread-safe, like the pools.
#ifndef POOLD_WORKER_POOLS_FAULT_INJECTING_OS_H_
#define POOLD_WORKER_POOLS_FAULT_INJECTING_OS_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "worker/pools/os_interface.h"
#include "worker/pools/pool_kind.h"

namespace poold::pools {

// The kinds of OsInterface call.
enum class OsCall : uint8_t { kReserve = 0, kUnmap, kCommit, kPurge };
inline constexpr size_t kOsCallCount = 4;

// "mmap", "munmap", "madvise(MADV_POPULATE_WRITE)", "madvise(MADV_DONTNEED)".
absl::string_view OsCallName(OsCall call);

// A fault to inject into one pool, as poold's --testing_os_fault gives it:
// "POOL:CALL:N" or "POOL:CALL:N:always", POOL one of small, medium, large,
// CALL one of map, unmap, commit, purge, N >= 1: that pool's Nth call of
// that kind from start-up fails with EIO (with "always", so does every
// later one).
struct OsFaultSpec {
  PoolKind pool = PoolKind::kSmall;
  OsCall call = OsCall::kPurge;
  uint64_t nth = 1;
  bool repeat = false;
};

// Parses the text above; INVALID_ARGUMENT saying what is wrong.
absl::StatusOr<OsFaultSpec> ParseOsFaultSpec(absl::string_view text);

class FaultInjectingOs final : public OsInterface {
 public:
  // Passes calls to `os`, which must outlive this.
  explicit FaultInjectingOs(OsInterface& os = OsInterface::System());

  // From now on, the `nth` call of kind `call` (1 = the next one) fails with
  // `error` (an errno value) without reaching the OS; with `repeat`, so does
  // every later call of that kind. One fault per kind; a new one replaces it.
  void FailAt(OsCall call, uint64_t nth, int error, bool repeat = false);

  // Clears every fault.
  void Heal();

  // Calls of each kind so far (the failed ones included), and failures
  // injected in all.
  uint64_t calls(OsCall call) const {
    return calls_[static_cast<size_t>(call)];
  }
  uint64_t failures() const { return failures_; }

  absl::StatusOr<char*> Reserve(uint64_t bytes) override;
  absl::Status Unmap(char* base, uint64_t bytes) override;
  absl::Status Commit(char* base, uint64_t bytes) override;
  absl::Status Purge(char* base, uint64_t bytes) override;

 private:
  struct Fault {
    uint64_t at = 0;  // the call count at which it fails; 0 = none
    int error = 0;
    bool repeat = false;
  };

  // Counts a call of kind `call`; an error when it is to fail.
  absl::Status Count(OsCall call, uint64_t bytes);

  OsInterface& os_;
  std::array<uint64_t, kOsCallCount> calls_ = {};
  std::array<Fault, kOsCallCount> faults_ = {};
  uint64_t failures_ = 0;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_FAULT_INJECTING_OS_H_
