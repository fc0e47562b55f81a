// ReservedArray: a fixed-capacity array of trivially copyable records in
// reserved address space, committed page by page as it grows, so that the
// engine's metadata is counted exactly (resident_bytes) and never moves.
#ifndef POOLD_WORKER_POOLS_RESERVED_ARRAY_H_
#define POOLD_WORKER_POOLS_RESERVED_ARRAY_H_

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "absl/status/status.h"
#include "glog/logging.h"
#include "worker/pools/os_interface.h"
#include "worker/pools/os_memory.h"

namespace poold::pools {

template <typename T>
class ReservedArray {
  static_assert(std::is_trivially_copyable_v<T>);
  static_assert(std::is_trivially_destructible_v<T>);

 public:
  ReservedArray() = default;
  ReservedArray(const ReservedArray&) = delete;
  ReservedArray& operator=(const ReservedArray&) = delete;
  ~ReservedArray() {
    if (data_ == nullptr || bytes_ == 0) return;
    if (absl::Status s = os_->Unmap(reinterpret_cast<char*>(data_), bytes_);
        !s.ok()) {
      LOG(WARNING) << "an array's address space stays mapped: " << s;
    }
  }

  // Reserves room for `capacity` elements through `os`, which must outlive
  // the array. New elements read as all-zero bytes, so T must treat zero
  // bytes as its initial state. REQUIRES: called once, before any other use.
  absl::Status Init(size_t capacity, OsInterface& os = OsInterface::System()) {
    CHECK(data_ == nullptr);
    os_ = &os;
    bytes_ = OsMemory::RoundUpToPage(capacity * sizeof(T));
    if (bytes_ == 0) return absl::OkStatus();
    auto base = os_->Reserve(bytes_);
    if (!base.ok()) return base.status();
    data_ = reinterpret_cast<T*>(*base);
    capacity_ = capacity;
    return absl::OkStatus();
  }

  // Makes elements [0, count) usable (committing pages as needed).
  // Returns false, changing nothing, when count exceeds the capacity or the
  // OS refuses the pages (logged). Never shrinks.
  bool Grow(size_t count) {
    if (count > capacity_) return false;
    if (count <= size_) return true;
    const uint64_t needed = OsMemory::RoundUpToPage(count * sizeof(T));
    if (needed > committed_) {
      char* const start = reinterpret_cast<char*>(data_) + committed_;
      if (absl::Status s = os_->Commit(start, needed - committed_); !s.ok()) {
        LOG_EVERY_N(WARNING, 100) << "metadata cannot grow: " << s;
        // What the failed call made resident goes back, to keep the count.
        if (absl::Status undo = os_->Purge(start, needed - committed_);
            !undo.ok()) {
          LOG_EVERY_N(WARNING, 100)
              << "pages of a failed commit stay resident: " << undo;
        }
        return false;
      }
      committed_ = needed;
    }
    size_ = count;
    return true;
  }

  // Empties the array and returns its pages to the OS (the address space
  // stays reserved, and new elements read as zero again).
  // When the OS refuses the purge, the elements are cleared but their pages
  // stay committed (and counted), and the OS's error is returned.
  absl::Status Clear() {
    if (absl::Status s = os_->Purge(reinterpret_cast<char*>(data_), committed_);
        !s.ok()) {
      std::memset(static_cast<void*>(data_), 0, committed_);
      size_ = 0;
      return s;
    }
    size_ = 0;
    committed_ = 0;
    return absl::OkStatus();
  }

  // Bytes the next Grow(count) would commit.
  uint64_t GrowthBytes(size_t count) const {
    const uint64_t needed = OsMemory::RoundUpToPage(count * sizeof(T));
    return needed > committed_ ? needed - committed_ : 0;
  }

  T& operator[](size_t i) {
    DCHECK_LT(i, size_);
    return data_[i];
  }
  const T& operator[](size_t i) const {
    DCHECK_LT(i, size_);
    return data_[i];
  }
  T* data() { return data_; }
  const T* data() const { return data_; }

  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  // Bytes committed (resident) for this array.
  uint64_t resident_bytes() const { return committed_; }

 private:
  OsInterface* os_ = nullptr;
  T* data_ = nullptr;
  uint64_t bytes_ = 0;
  size_t capacity_ = 0;
  size_t size_ = 0;
  uint64_t committed_ = 0;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_RESERVED_ARRAY_H_
