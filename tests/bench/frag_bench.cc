// frag_bench: one RAMCloud fragmentation workload (Rumble et al., FAST 2014,
// as PMDK's obj_fragmentation2 scales them) against one allocator, reporting
// resident memory from the OS against live bytes.
//
//   frag_bench --workload=W3 --allocator=engine   poold's engine, then a
//                                                 full defragmentation
//   frag_bench --workload=W3 --allocator=malloc   whatever malloc the process
//                                                 has: glibc, or jemalloc via
//                                                 LD_PRELOAD (detected)
//
// Phase 1 allocates objects of the "before" sizes (uniform in the range),
// writing every byte, and frees random live objects whenever live data
// exceeds the live target, until --allocated_mib have been allocated; then a
// fraction of the live objects is deleted; phase 2 does the same with the
// "after" sizes. Prints one JSON object per run (see run_fragmentation.py).
#include <dlfcn.h>
#include <malloc.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "worker/pools/os_memory.h"
#include "worker/pools/pool_set.h"

ABSL_FLAG(std::string, workload, "W1", "W1 .. W8");
ABSL_FLAG(std::string, allocator, "engine", "engine or malloc");
ABSL_FLAG(int64_t, allocated_mib, 2048, "MiB allocated per phase");
ABSL_FLAG(int64_t, live_mib, 400, "live data target in MiB");
ABSL_FLAG(uint64_t, seed, 1, "random seed (same sequence for every allocator)");

namespace poold::pools {
namespace {

struct Workload {
  const char* name;
  uint64_t before_lo, before_hi;
  double delete_fraction;  // < 0: single phase
  uint64_t after_lo, after_hi;
};

constexpr Workload kWorkloads[] = {
    {"W1", 100, 100, -1, 0, 0},          {"W2", 100, 100, 0.0, 130, 130},
    {"W3", 100, 100, 0.9, 130, 130},     {"W4", 100, 150, 0.0, 200, 250},
    {"W5", 100, 150, 0.9, 200, 250},     {"W6", 100, 200, 0.5, 1000, 2000},
    {"W7", 1000, 2000, 0.9, 1500, 2500}, {"W8", 50, 150, 0.9, 5000, 15000},
};

struct Object {
  uint64_t ref;  // pointer or handle
  uint64_t size;
};

// The allocator under test: poold's engine or the process's malloc.
class Allocator {
 public:
  explicit Allocator(bool engine) {
    if (engine) {
      PoolSetOptions options;
      // Like the server: no decay ticks run here, so caches stay bounded
      // by the retained amounts.
      pools_ = *PoolSet::Create(options);
    }
  }
  uint64_t Allocate(uint64_t size, const char* data) {
    if (pools_ != nullptr) {
      auto block = pools_->Allocate(size, absl::string_view(data, size));
      if (!block.ok()) {
        std::fprintf(stderr, "allocate: %s\n",
                     block.status().ToString().c_str());
        std::exit(1);
      }
      return block->handle;
    }
    char* p = static_cast<char*>(std::malloc(size));
    std::memcpy(p, data, size);  // every byte written, as the engine does
    return reinterpret_cast<uint64_t>(p);
  }
  void Free(uint64_t ref) {
    if (pools_ != nullptr) {
      if (!pools_->Free(ref).ok()) std::abort();
    } else {
      std::free(reinterpret_cast<void*>(ref));
    }
  }
  PoolSet* pools() { return pools_.get(); }

 private:
  std::unique_ptr<PoolSet> pools_;
};

std::string MallocName() {
  // jemalloc exports mallctl; glibc does not.
  return dlsym(RTLD_DEFAULT, "mallctl") != nullptr ? "jemalloc" : "glibc";
}

int Main() {
  const std::string name = absl::GetFlag(FLAGS_workload);
  const Workload* w = nullptr;
  for (const Workload& candidate : kWorkloads) {
    if (name == candidate.name) w = &candidate;
  }
  if (w == nullptr) {
    std::fprintf(stderr, "unknown workload %s\n", name.c_str());
    return 1;
  }
  const bool engine = absl::GetFlag(FLAGS_allocator) == "engine";
  const uint64_t allocated_per_phase =
      static_cast<uint64_t>(absl::GetFlag(FLAGS_allocated_mib)) << 20;
  const uint64_t live_target =
      static_cast<uint64_t>(absl::GetFlag(FLAGS_live_mib)) << 20;
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));

  // Everything the harness itself needs is allocated and touched before the
  // baseline reading, so the RSS difference is the allocator's alone.
  const uint64_t min_size =
      std::min(w->before_lo, w->after_lo == 0 ? w->before_lo : w->after_lo);
  std::vector<Object> live;
  live.resize(live_target / min_size + 16);
  live.clear();
  std::vector<char> data(w->after_hi > w->before_hi ? w->after_hi
                                                    : w->before_hi);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31);
  Allocator allocator(engine);
  const uint64_t baseline = OsMemory::ProcessRssBytes();

  uint64_t live_bytes = 0;
  auto free_random = [&]() {
    std::uniform_int_distribution<size_t> pick(0, live.size() - 1);
    const size_t i = pick(rng);
    allocator.Free(live[i].ref);
    live_bytes -= live[i].size;
    live[i] = live.back();
    live.pop_back();
  };
  auto phase = [&](uint64_t lo, uint64_t hi) {
    std::uniform_int_distribution<uint64_t> size_of(lo, hi);
    for (uint64_t allocated = 0; allocated < allocated_per_phase;) {
      const uint64_t size = size_of(rng);
      live.push_back({allocator.Allocate(size, data.data()), size});
      live_bytes += size;
      allocated += size;
      while (live_bytes > live_target) free_random();
    }
  };

  const absl::Time start = absl::Now();
  phase(w->before_lo, w->before_hi);
  if (w->delete_fraction >= 0) {
    const size_t to_delete = static_cast<size_t>(
        w->delete_fraction * static_cast<double>(live.size()));
    for (size_t i = 0; i < to_delete; ++i) free_random();
    phase(w->after_lo, w->after_hi);
  }
  const absl::Duration workload_time = absl::Now() - start;
  const uint64_t rss = OsMemory::ProcessRssBytes() - baseline;

  std::string extra;
  std::string allocator_name = engine ? "poold" : MallocName();
  if (engine) {
    PoolSet& pools = *allocator.pools();
    const PoolSetStats stats = pools.Stats(false);
    if (!pools.BeginDefrag({}).ok()) return 1;
    while (!pools.DefragStep(absl::Milliseconds(1)).done) {
    }
    const DefragReport report = pools.EndDefrag(DefragStopReason::kFinished);
    const uint64_t rss_after = OsMemory::ProcessRssBytes() - baseline;
    const PoolSetStats after = pools.Stats(false);
    std::string per_pool;
    for (const PoolStats& p : after.pools) {
      absl::StrAppendFormat(
          &per_pool,
          ", \"%s\": {\"live\": %d, \"resident\": %d, "
          "\"metadata\": %d, \"allocated\": %d, \"free\": %d}",
          PoolName(p.pool), p.stats.live_bytes, p.stats.resident_bytes,
          p.stats.metadata_bytes, p.stats.allocated_bytes, p.stats.free_bytes);
    }
    extra = absl::StrFormat(
        ", \"counted_resident\": %d, \"rss_after_defrag\": %d, "
        "\"counted_resident_after\": %d, \"defrag_ms\": %.1f, "
        "\"bytes_moved\": %d, \"blocks_moved\": %d, \"slices\": %d, "
        "\"max_slice_ms\": %.3f",
        stats.total.resident_bytes, rss_after,
        pools.Stats(false).total.resident_bytes,
        absl::ToDoubleMilliseconds(report.duration), report.bytes_moved,
        report.blocks_moved, report.slices,
        absl::ToDoubleMilliseconds(report.max_slice));
    extra += per_pool;
  } else if (allocator_name == "glibc") {
    malloc_trim(0);
    extra = absl::StrFormat(", \"rss_after_trim\": %d",
                            OsMemory::ProcessRssBytes() - baseline);
  }
  absl::PrintF(
      "{\"workload\": \"%s\", \"allocator\": \"%s\", \"live_bytes\": %d, "
      "\"rss\": %d, \"objects\": %d, \"workload_s\": %.2f%s}\n",
      w->name, allocator_name.c_str(), live_bytes, rss, live.size(),
      absl::ToDoubleSeconds(workload_time), extra.c_str());
  return 0;
}

}  // namespace
}  // namespace poold::pools

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return poold::pools::Main();
}
