// OsMemory: the engine's only contact with the operating system's memory:
// reserving address space, committing and purging pages, unmapping, and
// reading the process's resident set size.
#ifndef POOLD_WORKER_POOLS_OS_MEMORY_H_
#define POOLD_WORKER_POOLS_OS_MEMORY_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/statusor.h"

namespace poold::pools {

class OsMemory {
 public:
  OsMemory() = delete;

  // The OS page size (4096 on the machines poold targets).
  static size_t PageSize();

  // Rounds `bytes` up to a multiple of the page size.
  static uint64_t RoundUpToPage(uint64_t bytes);

  // Reserves `bytes` of zeroed, readable and writable address space without
  // committing it: no page is resident until it is touched. Transparent huge
  // pages are turned off for the range so residency follows our accounting
  // page by page. REQUIRES: bytes is a multiple of PageSize().
  // Fails with RESOURCE_EXHAUSTED when the OS refuses.
  static absl::StatusOr<char*> Reserve(uint64_t bytes);

  // Unmaps a range obtained from Reserve (or a page-aligned part of it).
  static void Unmap(char* base, uint64_t bytes);

  // Makes every page of the range resident now (prefaults it for writing),
  // so that residency equals what the engine counts. Contents are unchanged.
  static void Commit(char* base, uint64_t bytes);

  // Returns the pages of the range to the OS; they read as zero afterwards
  // and are no longer resident. The range stays mapped.
  static void Purge(char* base, uint64_t bytes);

  // Resident set size of this process in bytes, from /proc/self/statm.
  static uint64_t ProcessRssBytes();

  // Resident pages of [base, base+bytes) in bytes, from mincore(2).
  // For tests and checks; REQUIRES: base page-aligned.
  static uint64_t ResidentBytesIn(const char* base, uint64_t bytes);
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_OS_MEMORY_H_
