// Size class tables and the size -> class mapping of the slab pools.
#include "worker/pools/size_classes.h"

#include <bit>

#include "glog/logging.h"
#include "worker/pools/os_memory.h"

namespace poold::pools {
namespace {

// Small slots: 8 bytes, then every 4 bytes up to 1024. Blocks are opaque
// bytes reached through Read/Write, so slots need no alignment, and a 4-byte
// step wastes 1.5 bytes per block on average instead of 3.5.
constexpr uint64_t kSmallFirst = 8;
constexpr uint64_t kSmallStep = 4;
constexpr int kMediumStepsPerDoubling = 32;
constexpr int kMediumFirstLog2 = 10;  // 1024
constexpr int kMediumLastLog2 = 16;   // 65536 is the largest slot

uint32_t WordsFor(uint64_t slots) { return (slots + 63) / 64; }

// Fills the slot count and header of a class for a span of `span_bytes`.
SizeClass MakeClass(uint64_t slot_bytes, uint64_t span_bytes,
                    bool bitmap_in_span) {
  SizeClass c;
  c.slot_bytes = static_cast<uint32_t>(slot_bytes);
  uint64_t slots = span_bytes / slot_bytes;
  if (bitmap_in_span) {
    while (slots > 0 && slots * slot_bytes + WordsFor(slots) * 8 > span_bytes) {
      --slots;
    }
    c.header_bytes = WordsFor(slots) * 8;
  }
  CHECK_GT(slots, 0u) << "span too small for slot " << slot_bytes;
  c.slots = static_cast<uint32_t>(slots);
  c.bitmap_words = WordsFor(slots);
  c.committed_bytes = static_cast<uint32_t>(
      OsMemory::RoundUpToPage(c.header_bytes + slots * slot_bytes));
  // ceil(2^32 * 8 / slots): exact for live * 8 < 2^32 / slots * slots.
  c.bucket_multiplier = ((uint64_t{8} << 32) + slots - 1) / slots;
  return c;
}

}  // namespace

SizeClasses::SizeClasses(PoolKind pool, uint64_t span_bytes,
                         bool bitmap_in_span)
    : pool_(pool) {
  CHECK(pool != PoolKind::kLarge);
  if (pool == PoolKind::kSmall) {
    for (uint64_t slot = kSmallFirst; slot <= kMediumMinBytes;
         slot += kSmallStep) {
      classes_.push_back(MakeClass(slot, span_bytes, bitmap_in_span));
    }
  } else {
    classes_.push_back(MakeClass(kMediumMinBytes, span_bytes, bitmap_in_span));
    for (int log2 = kMediumFirstLog2; log2 < kMediumLastLog2; ++log2) {
      const uint64_t base = uint64_t{1} << log2;
      const uint64_t step = base / kMediumStepsPerDoubling;
      for (int j = 1; j <= kMediumStepsPerDoubling; ++j) {
        classes_.push_back(
            MakeClass(base + j * step, span_bytes, bitmap_in_span));
      }
    }
  }
  // The smallest block of each class is one byte above the slot before it
  // (1 byte, or kMediumMinBytes, for the first class).
  uint64_t smallest = pool == PoolKind::kSmall ? 1 : kMediumMinBytes;
  for (const SizeClass& c : classes_) {
    max_slots_ = std::max(max_slots_, c.slots);
    max_bitmap_words_ = std::max(max_bitmap_words_, c.bitmap_words);
    max_delta_ = std::max<uint32_t>(max_delta_, c.slot_bytes - smallest);
    smallest = c.slot_bytes + uint64_t{1};
  }
}

uint32_t SizeClasses::ClassFor(uint64_t size) const {
  DCHECK_GT(size, 0u);
  if (pool_ == PoolKind::kSmall) {
    DCHECK_LT(size, kMediumMinBytes);
    if (size <= kSmallFirst) return 0;
    return static_cast<uint32_t>((size - kSmallFirst + kSmallStep - 1) /
                                 kSmallStep);
  }
  DCHECK_GE(size, kMediumMinBytes);
  DCHECK_LT(size, kLargeMinBytes);
  if (size <= kMediumMinBytes) return 0;
  // size in (2^k, 2^(k+1)]: k = floor(log2(size - 1)).
  const int log2 = std::bit_width(size - 1) - 1;
  const uint64_t base = uint64_t{1} << log2;
  const uint64_t step = base / kMediumStepsPerDoubling;
  const uint64_t j = (size - base + step - 1) / step;  // 1..32
  return static_cast<uint32_t>(
      1 + (log2 - kMediumFirstLog2) * kMediumStepsPerDoubling + (j - 1));
}

}  // namespace poold::pools
