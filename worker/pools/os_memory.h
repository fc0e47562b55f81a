// OsMemory: what the engine asks the operating system about memory without
// changing it: the page size, the process's resident set size, and which
// pages of a range are resident. The calls that change memory (map, commit,
// purge, unmap) go through the OsInterface each pool is given.
#ifndef POOLD_WORKER_POOLS_OS_MEMORY_H_
#define POOLD_WORKER_POOLS_OS_MEMORY_H_

#include <cstddef>
#include <cstdint>

namespace poold::pools {

class OsMemory {
 public:
  OsMemory() = delete;

  // The OS page size (4096 on the machines poold targets).
  static size_t PageSize();

  // Rounds `bytes` up to a multiple of the page size.
  static uint64_t RoundUpToPage(uint64_t bytes);

  // Resident set size of this process in bytes, from /proc/self/statm.
  static uint64_t ProcessRssBytes();

  // Resident pages of [base, base+bytes) in bytes, from mincore(2).
  // For tests and checks; REQUIRES: base page-aligned.
  static uint64_t ResidentBytesIn(const char* base, uint64_t bytes);
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_OS_MEMORY_H_
