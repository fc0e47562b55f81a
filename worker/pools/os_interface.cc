// OsInterface::System(): the pools' calls to Linux (mmap, munmap, madvise),
// each checked, failures returned with the call and its errno text.
#include "worker/pools/os_interface.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "worker/pools/os_memory.h"

namespace poold::pools {
absl::Status OsCallFailed(absl::string_view call, uint64_t bytes, int error,
                          bool exhausted, absl::string_view suffix) {
  std::string message = absl::StrCat(
      call, " of ", bytes, " bytes failed: ", std::strerror(error), suffix);
  if (exhausted || error == ENOMEM || error == EAGAIN) {
    return absl::ResourceExhaustedError(std::move(message));
  }
  return absl::InternalError(std::move(message));
}

namespace {

class SystemOs final : public OsInterface {
 public:
  absl::StatusOr<char*> Reserve(uint64_t bytes) override {
    void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
      // Any refusal of fresh address space is a lack of resources to us.
      return OsCallFailed("mmap", bytes, errno, /*exhausted=*/true);
    }
    // Best effort, and harmless when refused: with THP on "always", a
    // touched byte could make 2 MiB resident and purging part of it would
    // split pages behind our back. Kernels without THP answer EINVAL.
    (void)madvise(base, bytes, MADV_NOHUGEPAGE);
    return static_cast<char*>(base);
  }

  absl::Status Unmap(char* base, uint64_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    if (munmap(base, bytes) != 0) return OsCallFailed("munmap", bytes, errno);
    return absl::OkStatus();
  }

  absl::Status Commit(char* base, uint64_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
#ifdef MADV_POPULATE_WRITE
    if (madvise(base, bytes, MADV_POPULATE_WRITE) == 0) {
      return absl::OkStatus();
    }
    // EINVAL: a kernel older than 5.14. Anything else is a real failure
    // (ENOMEM: no memory for the pages; touching them would OOM-kill us).
    if (errno != EINVAL) {
      return OsCallFailed("madvise(MADV_POPULATE_WRITE)", bytes, errno);
    }
#endif
    // Older kernels: touch one byte per page. Reading then writing back keeps
    // the contents while forcing a private writable page.
    const size_t page = OsMemory::PageSize();
    for (uint64_t offset = 0; offset < bytes; offset += page) {
      volatile char* p = base + offset;
      *p = *p;
    }
    return absl::OkStatus();
  }

  absl::Status Purge(char* base, uint64_t bytes) override {
    if (bytes == 0) return absl::OkStatus();
    if (madvise(base, bytes, MADV_DONTNEED) != 0) {
      return OsCallFailed("madvise(MADV_DONTNEED)", bytes, errno);
    }
    return absl::OkStatus();
  }
};

}  // namespace

OsInterface& OsInterface::System() {
  static SystemOs* const os = new SystemOs();
  return *os;
}

}  // namespace poold::pools
