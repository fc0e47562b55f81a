// Tests of ProcessMemory: the process's RSS and heap as the OS and glibc see
// them, trimming the heap, and the fixed mmap threshold. The heap parts need
// glibc's own malloc, so they are skipped under sanitizers (which replace it).
#include "worker/process_memory.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace poold {
namespace {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kGlibcMalloc = false;
#else
constexpr bool kGlibcMalloc = true;
#endif

constexpr uint64_t kMiB = 1 << 20;

TEST(ProcessMemoryTest, ReadsRssAndItsParts) {
  const ProcessMemoryStats stats = ProcessMemory::Read();
  EXPECT_GT(stats.rss_bytes, 0u);
  EXPECT_GT(stats.rss_anon_bytes, 0u);
  EXPECT_GT(stats.rss_file_bytes, 0u);  // the test's own code, at least
  // RssAnon + RssFile + RssShmem = VmRSS.
  EXPECT_LE(stats.rss_anon_bytes + stats.rss_file_bytes, stats.rss_bytes);
}

TEST(ProcessMemoryTest, HeapCountersFollowAllocations) {
  if (!kGlibcMalloc) GTEST_SKIP() << "needs glibc's malloc";
  const uint64_t before = ProcessMemory::Read().heap_in_use_bytes;
  std::vector<char*> blocks;
  for (int i = 0; i < 1024; ++i) {
    blocks.push_back(static_cast<char*>(std::malloc(4096)));
    std::memset(blocks.back(), 1, 4096);
  }
  EXPECT_GE(ProcessMemory::Read().heap_in_use_bytes, before + 4 * kMiB);
  for (char* block : blocks) std::free(block);
}

TEST(ProcessMemoryTest, TrimReturnsTheFreePagesInsideTheHeap) {
  if (!kGlibcMalloc) GTEST_SKIP() << "needs glibc's malloc";
  // 64 MiB of small chunks, freed but for the last one, which keeps the
  // heap's top in place: only a trim returns the pages below it.
  std::vector<char*> blocks;
  for (int i = 0; i < 16384; ++i) {
    blocks.push_back(static_cast<char*>(std::malloc(4000)));
    std::memset(blocks.back(), 1, 4000);
  }
  for (size_t i = 0; i + 1 < blocks.size(); ++i) std::free(blocks[i]);
  EXPECT_GE(ProcessMemory::Read().heap_free_bytes, 48 * kMiB);
  const uint64_t rss = ProcessMemory::Read().rss_bytes;
  const uint64_t released = ProcessMemory::TrimHeap();
  EXPECT_GE(released, 48 * kMiB);
  EXPECT_LE(ProcessMemory::Read().rss_bytes + 48 * kMiB, rss);
  std::free(blocks.back());
}

TEST(ProcessMemoryTest, BlocksAboveTheThresholdLeaveWhenFreed) {
  if (!kGlibcMalloc) GTEST_SKIP() << "needs glibc's malloc";
  ASSERT_TRUE(ProcessMemory::SetMmapThreshold(64 << 10));
  // glibc raises an adaptive threshold after freeing a mapped chunk; a fixed
  // one keeps every later 1 MiB chunk in a mapping of its own.
  for (int round = 0; round < 2; ++round) {
    std::vector<char*> blocks;
    for (int i = 0; i < 32; ++i) {
      blocks.push_back(static_cast<char*>(std::malloc(kMiB)));
      std::memset(blocks.back(), 1, kMiB);
    }
    const uint64_t rss_full = ProcessMemory::Read().rss_bytes;
    for (char* block : blocks) std::free(block);
    EXPECT_LE(ProcessMemory::Read().rss_bytes + 30 * kMiB, rss_full)
        << "round " << round;
  }
}

}  // namespace
}  // namespace poold
