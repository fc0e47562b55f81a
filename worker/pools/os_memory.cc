// OsMemory on Linux: mmap, madvise, munmap, /proc/self/statm and mincore.
#include "worker/pools/os_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace poold::pools {
namespace {

size_t ComputePageSize() {
  long size = sysconf(_SC_PAGESIZE);
  return size > 0 ? static_cast<size_t>(size) : 4096;
}

}  // namespace

size_t OsMemory::PageSize() {
  static const size_t page_size = ComputePageSize();
  return page_size;
}

uint64_t OsMemory::RoundUpToPage(uint64_t bytes) {
  const uint64_t page = PageSize();
  return (bytes + page - 1) / page * page;
}

absl::StatusOr<char*> OsMemory::Reserve(uint64_t bytes) {
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "mmap of ", bytes, " bytes failed: ", std::strerror(errno)));
  }
  // Best effort: with THP on "always", a touched byte could make 2 MiB
  // resident and purging part of it would split pages behind our back.
  madvise(base, bytes, MADV_NOHUGEPAGE);
  return static_cast<char*>(base);
}

void OsMemory::Unmap(char* base, uint64_t bytes) {
  if (bytes > 0) munmap(base, bytes);
}

void OsMemory::Commit(char* base, uint64_t bytes) {
  if (bytes == 0) return;
#ifdef MADV_POPULATE_WRITE
  if (madvise(base, bytes, MADV_POPULATE_WRITE) == 0) return;
#endif
  // Older kernels: touch one byte per page. Reading then writing back keeps
  // the contents while forcing a private writable page.
  const size_t page = PageSize();
  for (uint64_t offset = 0; offset < bytes; offset += page) {
    volatile char* p = base + offset;
    *p = *p;
  }
}

void OsMemory::Purge(char* base, uint64_t bytes) {
  if (bytes > 0) madvise(base, bytes, MADV_DONTNEED);
}

uint64_t OsMemory::ProcessRssBytes() {
  FILE* file = std::fopen("/proc/self/statm", "r");
  if (file == nullptr) return 0;
  unsigned long long size_pages = 0;
  unsigned long long resident_pages = 0;
  const int read = std::fscanf(file, "%llu %llu", &size_pages, &resident_pages);
  std::fclose(file);
  if (read != 2) return 0;
  return resident_pages * PageSize();
}

uint64_t OsMemory::ResidentBytesIn(const char* base, uint64_t bytes) {
  const size_t page = PageSize();
  const uint64_t pages = (bytes + page - 1) / page;
  std::vector<unsigned char> vec(pages);
  if (mincore(const_cast<char*>(base), bytes, vec.data()) != 0) return 0;
  uint64_t resident = 0;
  for (unsigned char v : vec) resident += (v & 1) ? page : 0;
  return resident;
}

}  // namespace poold::pools
