// OsInterface: the calls through which a pool changes its memory with the
// operating system (map, unmap, commit, purge). Each pool is given one, so a
// test can make a call fail for one pool; OsInterface::System() is the real
// one. Read-only queries (page size, resident bytes) stay in OsMemory.
#ifndef POOLD_WORKER_POOLS_OS_INTERFACE_H_
#define POOLD_WORKER_POOLS_OS_INTERFACE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace poold::pools {

class OsInterface {
 public:
  virtual ~OsInterface() = default;

  // The process's real OS (mmap, munmap, madvise). Lives for the process.
  static OsInterface& System();

  // Reserves `bytes` of zeroed, readable and writable address space without
  // committing it: no page is resident until it is touched. Transparent huge
  // pages are turned off for the range so residency follows our accounting
  // page by page. REQUIRES: bytes is a positive multiple of the page size.
  // RESOURCE_EXHAUSTED when the OS refuses; the message names the call and
  // the errno text.
  virtual absl::StatusOr<char*> Reserve(uint64_t bytes) = 0;

  // Unmaps a range obtained from Reserve (or a page-aligned part of it).
  // On error the range may still be mapped (and resident).
  virtual absl::Status Unmap(char* base, uint64_t bytes) = 0;

  // Makes every page of the range resident now, so that residency equals
  // what the engine counts. Contents are unchanged. RESOURCE_EXHAUSTED when
  // the OS has no memory for it; on error some pages may be resident.
  virtual absl::Status Commit(char* base, uint64_t bytes) = 0;

  // Returns the pages of the range to the OS; they read as zero afterwards
  // and are no longer resident. The range stays mapped. On error the pages
  // are as they were: resident, contents unchanged.
  virtual absl::Status Purge(char* base, uint64_t bytes) = 0;
};

// The status of a failed OS call of `bytes`: "CALL of N bytes failed:
// <errno text><suffix>", RESOURCE_EXHAUSTED for a lack of memory (ENOMEM,
// EAGAIN) or when `exhausted` (a refused mapping), INTERNAL otherwise.
absl::Status OsCallFailed(absl::string_view call, uint64_t bytes, int error,
                          bool exhausted = false,
                          absl::string_view suffix = "");

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_OS_INTERFACE_H_
