// PoolKind: the three pools of poold and the block sizes each one holds.
#ifndef POOLD_WORKER_POOLS_POOL_KIND_H_
#define POOLD_WORKER_POOLS_POOL_KIND_H_

#include <array>
#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"

namespace poold::pools {

// Which pool holds a block follows from its size alone.
enum class PoolKind : uint8_t {
  kSmall = 0,   // 1 B .. 1023 B
  kMedium = 1,  // 1 KiB .. 64 KiB - 1
  kLarge = 2,   // 64 KiB .. the configured maximum
};

inline constexpr size_t kPoolCount = 3;
inline constexpr std::array<PoolKind, kPoolCount> kAllPools = {
    PoolKind::kSmall, PoolKind::kMedium, PoolKind::kLarge};

// Smallest block size of the medium and of the large pool.
inline constexpr uint64_t kMediumMinBytes = 1024;
inline constexpr uint64_t kLargeMinBytes = 64 * 1024;

// The pool that holds blocks of `size` bytes. REQUIRES: size > 0.
constexpr PoolKind PoolForSize(uint64_t size) {
  if (size < kMediumMinBytes) return PoolKind::kSmall;
  if (size < kLargeMinBytes) return PoolKind::kMedium;
  return PoolKind::kLarge;
}

// "small", "medium" or "large".
constexpr absl::string_view PoolName(PoolKind pool) {
  switch (pool) {
    case PoolKind::kSmall:
      return "small";
    case PoolKind::kMedium:
      return "medium";
    case PoolKind::kLarge:
      return "large";
  }
  return "unknown";
}

constexpr size_t PoolIndex(PoolKind pool) { return static_cast<size_t>(pool); }

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_POOL_KIND_H_
