// ProcessMemory on Linux with glibc: /proc/self/status, mallinfo2,
// malloc_info, mallopt and malloc_trim.
#include "worker/process_memory.h"

#include <malloc.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "worker/pools/os_memory.h"

namespace poold {
namespace {

// Parses "Name:   1234 kB" lines of /proc/self/status.
void ReadStatus(ProcessMemoryStats* stats) {
  FILE* file = std::fopen("/proc/self/status", "r");
  if (file == nullptr) return;
  char line[256];
  while (std::fgets(line, sizeof(line), file) != nullptr) {
    unsigned long long kib = 0;
    if (std::sscanf(line, "VmRSS: %llu kB", &kib) == 1) {
      stats->rss_bytes = kib * 1024;
    } else if (std::sscanf(line, "RssAnon: %llu kB", &kib) == 1) {
      stats->rss_anon_bytes = kib * 1024;
    } else if (std::sscanf(line, "RssFile: %llu kB", &kib) == 1) {
      stats->rss_file_bytes = kib * 1024;
    }
  }
  std::fclose(file);
}

constexpr absl::Duration kArenaCountInterval = absl::Seconds(1);

// The arenas malloc_info() describes: one <heap nr="..."> element each.
uint64_t CountArenas() {
#if defined(__GLIBC__)
  char* text = nullptr;
  size_t size = 0;
  FILE* stream = open_memstream(&text, &size);
  if (stream == nullptr) return 0;
  const bool written = malloc_info(0, stream) == 0;
  std::fclose(stream);
  uint64_t arenas = 0;
  if (written && text != nullptr) {
    for (const char* at = std::strstr(text, "<heap nr="); at != nullptr;
         at = std::strstr(at + 1, "<heap nr=")) {
      ++arenas;
    }
  }
  std::free(text);
  return arenas;
#else
  return 0;
#endif
}

}  // namespace

ProcessMemoryStats ProcessMemory::Read() {
  ProcessMemoryStats stats;
  ReadStatus(&stats);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  const struct mallinfo2 info = mallinfo2();
  stats.heap_in_use_bytes = info.uordblks + info.hblkhd;
  stats.heap_free_bytes = info.fordblks;
#endif
  // malloc_info walks every arena's free chunks under its lock, and glibc
  // never destroys an arena: a count a second old is good enough.
  static std::atomic<int64_t> counted_at_ns{0};
  static std::atomic<uint64_t> arenas{0};
  const int64_t now_ns = absl::GetCurrentTimeNanos();
  if (now_ns - counted_at_ns.load(std::memory_order_relaxed) >=
      absl::ToInt64Nanoseconds(kArenaCountInterval)) {
    arenas.store(CountArenas(), std::memory_order_relaxed);
    counted_at_ns.store(now_ns, std::memory_order_relaxed);
  }
  stats.heap_arenas = arenas.load(std::memory_order_relaxed);
  return stats;
}

bool ProcessMemory::SetArenaLimit(uint32_t arenas) {
#if defined(__GLIBC__)
  return arenas > 0 && arenas <= static_cast<uint32_t>(INT_MAX) &&
         mallopt(M_ARENA_MAX, static_cast<int>(arenas)) == 1;
#else
  (void)arenas;
  return false;
#endif
}

uint64_t ProcessMemory::HeapFreeBytes() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  return mallinfo2().fordblks;
#else
  return 0;
#endif
}

bool ProcessMemory::SetMmapThreshold(uint64_t bytes) {
#if defined(__GLIBC__)
  return mallopt(M_MMAP_THRESHOLD, static_cast<int>(bytes)) == 1;
#else
  (void)bytes;
  return false;
#endif
}

uint64_t ProcessMemory::TrimHeap() {
#if defined(__GLIBC__)
  const uint64_t before = pools::OsMemory::ProcessRssBytes();
  malloc_trim(0);
  const uint64_t after = pools::OsMemory::ProcessRssBytes();
  return before > after ? before - after : 0;
#else
  return 0;
#endif
}

}  // namespace poold
