// ProcessMemory: the memory of the whole poold process as the OS and the C
// library see it (beyond the pools: gRPC's and protobuf's heap, code, stacks),
// and handing the heap's free pages back to the OS.
#ifndef POOLD_WORKER_PROCESS_MEMORY_H_
#define POOLD_WORKER_PROCESS_MEMORY_H_

#include <cstdint>

namespace poold {

// Field meanings match poold.v1.ProcessStats.
struct ProcessMemoryStats {
  // From /proc/self/status: VmRSS, RssAnon, RssFile (0 when unreadable).
  uint64_t rss_bytes = 0;
  uint64_t rss_anon_bytes = 0;
  uint64_t rss_file_bytes = 0;
  // From glibc's mallinfo2(): bytes the heap has handed out (in arenas and
  // in chunks mmapped one by one) and free bytes it keeps in its arenas.
  // Both 0 under another malloc.
  uint64_t heap_in_use_bytes = 0;
  uint64_t heap_free_bytes = 0;
  // From glibc's malloc_info(): the heap's arenas (the main one and one per
  // group of threads that allocate at once; see SetArenaLimit), counted at
  // most once a second (arenas are never destroyed). 0 under another malloc.
  uint64_t heap_arenas = 0;
};

class ProcessMemory {
 public:
  ProcessMemory() = delete;

  // Reads the counters above. Takes each malloc arena's lock briefly; call
  // it for statistics, not on a hot path.
  static ProcessMemoryStats Read();

  // Free bytes malloc keeps in its arenas (mallinfo2's fordblks; 0 under
  // another malloc). Takes each arena's lock briefly.
  static uint64_t HeapFreeBytes();

  // Makes glibc's malloc serve every allocation of at least `bytes` with its
  // own mapping, returned to the OS when freed, and keeps the threshold
  // fixed (glibc otherwise raises it after large frees, so later large
  // messages stay in the heap). Returns false when the C library refused.
  static bool SetMmapThreshold(uint64_t bytes);

  // Makes glibc's malloc keep at most `arenas` arenas (threads share them
  // beyond that). glibc's default is eight per core: each thread that
  // allocates gets an arena of its own, and the free memory left in each
  // after a burst of traffic adds up. Applies to threads that have not
  // allocated yet: call it before starting any. Returns false when the C
  // library refused.
  static bool SetArenaLimit(uint32_t arenas);

  // Returns the free pages of every malloc arena to the OS (malloc_trim) and
  // returns the drop in RSS it caused (0 if none, or if RSS grew meanwhile).
  static uint64_t TrimHeap();
};

}  // namespace poold

#endif  // POOLD_WORKER_PROCESS_MEMORY_H_
