// IndexSet: a set of small integers in [0, capacity) with O(1) insert and
// erase and a fast lowest-member query, kept as a two-level bitmap in
// reserved memory so its size is counted exactly.
#ifndef POOLD_WORKER_POOLS_INDEX_SET_H_
#define POOLD_WORKER_POOLS_INDEX_SET_H_

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "worker/pools/os_interface.h"
#include "worker/pools/reserved_array.h"

namespace poold::pools {

class IndexSet {
 public:
  IndexSet() = default;

  // Reserves room for `capacity` indices through `os`, which must outlive
  // the set. REQUIRES: called once before use.
  absl::Status Init(size_t capacity, OsInterface& os = OsInterface::System()) {
    capacity_ = capacity;
    const size_t words = (capacity + 63) / 64;
    if (absl::Status s = words_.Init(words, os); !s.ok()) return s;
    return summary_.Init((words + 63) / 64, os);
  }

  // Makes [0, count) storable. Returns false beyond the capacity.
  bool Grow(size_t count) {
    if (count > capacity_) return false;
    const size_t words = (count + 63) / 64;
    return words_.Grow(words) && summary_.Grow((words + 63) / 64);
  }

  // REQUIRES: i < the grown size, for Insert/Erase/Contains.
  void Insert(size_t i) {
    words_[i / 64] |= uint64_t{1} << (i % 64);
    summary_[i / 4096] |= uint64_t{1} << ((i / 64) % 64);
  }
  void Erase(size_t i) {
    uint64_t& word = words_[i / 64];
    word &= ~(uint64_t{1} << (i % 64));
    if (word == 0) summary_[i / 4096] &= ~(uint64_t{1} << ((i / 64) % 64));
  }
  bool Contains(size_t i) const {
    return i / 64 < words_.size() && (words_[i / 64] >> (i % 64)) & uint64_t{1};
  }

  // The smallest member, if any.
  std::optional<size_t> Lowest() const {
    for (size_t s = 0; s < summary_.size(); ++s) {
      if (summary_[s] == 0) continue;
      const size_t w = s * 64 + std::countr_zero(summary_[s]);
      return w * 64 + std::countr_zero(words_[w]);
    }
    return std::nullopt;
  }

  uint64_t resident_bytes() const {
    return words_.resident_bytes() + summary_.resident_bytes();
  }

 private:
  size_t capacity_ = 0;
  ReservedArray<uint64_t> words_;
  ReservedArray<uint64_t> summary_;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_INDEX_SET_H_
