// OsMemory on Linux: sysconf, /proc/self/statm and mincore.
#include "worker/pools/os_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <vector>

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
