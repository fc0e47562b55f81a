// MixedWorkload: what a sidecar's store goes through, as one deterministic
// sequence of allocations and frees that every backend of mixed_bench runs
// (poold over gRPC, glibc malloc, jemalloc, Redis).
//
// Block sizes, by count: 80 % small (16 B .. 1 KiB), 19 % medium (1 KiB ..
// 64 KiB), 1 % large (64 KiB .. 1 MiB), each log-uniform in its range; by
// bytes that is about 3 %, 44 % and 53 %. Blocks are allocated one after the
// other; 85 % of them are freed, each at a random point within the next
// eighth of the sequence, so frees interleave with allocations and the
// survivors (15 %) are scattered over everything that was allocated.
#ifndef POOLD_TESTS_BENCH_MIXED_WORKLOAD_H_
#define POOLD_TESTS_BENCH_MIXED_WORKLOAD_H_

#include <cstdint>
#include <vector>

namespace poold::bench {

class MixedWorkload {
 public:
  // One step: allocate block `block` (with its contents), or free it.
  struct Event {
    uint32_t block;
    bool allocate;
  };

  // A sequence whose survivors hold at least `live_bytes` (a few blocks
  // more). The same seed gives the same sequence.
  static MixedWorkload Make(uint64_t live_bytes, uint64_t seed);

  const std::vector<uint32_t>& sizes() const { return sizes_; }
  const std::vector<Event>& events() const { return events_; }
  // Bytes of the blocks never freed, and of all blocks allocated.
  uint64_t live_bytes() const { return live_bytes_; }
  uint64_t allocated_bytes() const { return allocated_bytes_; }
  // Blocks never freed, and blocks in all.
  uint64_t live_blocks() const { return live_blocks_; }
  uint64_t blocks() const { return sizes_.size(); }
  // Bytes of each pool's range among the survivors: small, medium, large.
  const uint64_t* live_by_pool() const { return live_by_pool_; }

  // The contents of block `block`: `size` bytes that depend on the block.
  static void Fill(uint32_t block, uint64_t size, char* out);

 private:
  std::vector<uint32_t> sizes_;
  std::vector<Event> events_;
  uint64_t live_bytes_ = 0;
  uint64_t allocated_bytes_ = 0;
  uint64_t live_blocks_ = 0;
  uint64_t live_by_pool_[3] = {0, 0, 0};
};

}  // namespace poold::bench

#endif  // POOLD_TESTS_BENCH_MIXED_WORKLOAD_H_
