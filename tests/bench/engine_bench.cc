// Engine benchmarks, each side by side with its baseline in the same run:
//   BM_AllocFree/<mix>      engine Allocate+Free vs glibc malloc+free (and
//                           calloc, since the engine zeroes new blocks) on
//                           the same size sequence
//   BM_Compaction/<bytes>   compaction throughput vs memcpy of the same
//                           bytes in the same block sizes, and the longest
//                           slice against its 1 ms budget
//   BM_BatchReads/<blocks>  batches of reads of random 100-byte blocks, as
//                           the worker runs a Batch: without prefetching,
//                           with PoolSet::Prefetch, and copies from malloc'd
//                           blocks through a vector of pointers
// Run: build/tests/bench/engine_bench [--benchmark_filter=...]
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "worker/pools/pool_set.h"

namespace poold::pools {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::unique_ptr<PoolSet> MakePools() {
  PoolSetOptions options;
  options.handle_key = 42;
  return *PoolSet::Create(options);
}

// Size mixes: 0 = 16..128 B, 1 = 100..1000 B, 2 = 1..16 KiB.
std::vector<uint64_t> Sizes(int mix, size_t n) {
  absl::BitGen gen(std::seed_seq{mix});
  const uint64_t lo[] = {16, 100, 1024};
  const uint64_t hi[] = {128, 1000, 16384};
  std::vector<uint64_t> sizes(n);
  for (uint64_t& s : sizes) s = absl::Uniform<uint64_t>(gen, lo[mix], hi[mix]);
  return sizes;
}

// Sets "<way>_ns", the time per operation of each way, and
// "<first>/<way>", the first way's time over each other's.
void ReportWays(
    benchmark::State& state, double operations,
    std::initializer_list<std::pair<const char*, double>> seconds_by_way) {
  const auto& [first, first_s] = *seconds_by_way.begin();
  bool is_first = true;
  for (const auto& [way, s] : seconds_by_way) {
    state.counters[std::string(way) + "_ns"] = s / operations * 1e9;
    if (!is_first) state.counters[std::string(first) + "/" + way] = first_s / s;
    is_first = false;
  }
}

constexpr size_t kBatch = 4096;

// A batch of allocations, then frees in a shuffled order, repeated: the
// steady state of a cache that replaces its entries.
void BM_AllocFree(benchmark::State& state) {
  const int mix = static_cast<int>(state.range(0));
  const std::vector<uint64_t> sizes = Sizes(mix, kBatch);
  std::vector<size_t> order(kBatch);
  for (size_t i = 0; i < kBatch; ++i) order[i] = (i * 2654435761u) % kBatch;
  auto pools = MakePools();
  std::vector<uint64_t> handles(kBatch);
  std::vector<void*> ptrs(kBatch);

  double engine_s = 0, malloc_s = 0, calloc_s = 0;
  for (auto _ : state) {
    auto t0 = Clock::now();
    for (size_t i = 0; i < kBatch; ++i) {
      handles[i] = pools->Allocate(sizes[i], "")->handle;
    }
    for (size_t i : order) benchmark::DoNotOptimize(pools->Free(handles[i]));
    auto t1 = Clock::now();
    for (size_t i = 0; i < kBatch; ++i) ptrs[i] = std::malloc(sizes[i]);
    benchmark::DoNotOptimize(ptrs.data());
    for (size_t i : order) std::free(ptrs[i]);
    auto t2 = Clock::now();
    for (size_t i = 0; i < kBatch; ++i) ptrs[i] = std::calloc(1, sizes[i]);
    benchmark::DoNotOptimize(ptrs.data());
    for (size_t i : order) std::free(ptrs[i]);
    auto t3 = Clock::now();
    engine_s += Seconds(t1 - t0);
    malloc_s += Seconds(t2 - t1);
    calloc_s += Seconds(t3 - t2);
    state.SetIterationTime(Seconds(t1 - t0));
  }
  ReportWays(
      state, static_cast<double>(state.iterations()) * kBatch,
      {{"engine", engine_s}, {"malloc", malloc_s}, {"calloc", calloc_s}});
}
BENCHMARK(BM_AllocFree)->Arg(0)->Arg(1)->Arg(2)->UseManualTime();

// Reads 100-byte blocks, 256 random handles to a batch. Each way reads its
// own random sample, so that none finds the blocks another left in the
// cache. Arg: blocks stored (2^14 fit the caches; 2^21, 200 MiB, do not).
void BM_BatchReads(benchmark::State& state) {
  const size_t blocks = static_cast<size_t>(state.range(0));
  constexpr uint64_t kBytes = 100;
  constexpr size_t kReadBatch = 256;
  constexpr size_t kReads = kReadBatch * 64;
  auto pools = MakePools();
  const std::string data(kBytes, 'x');
  std::vector<uint64_t> handles(blocks);
  std::vector<char*> ptrs(blocks);
  for (size_t i = 0; i < blocks; ++i) {
    handles[i] = pools->Allocate(kBytes, data)->handle;
    ptrs[i] = static_cast<char*>(std::malloc(kBytes));
    std::memcpy(ptrs[i], data.data(), kBytes);
  }
  // Each way reads its own sample, listed in order as a batch lists its
  // handles (the lists themselves are read sequentially).
  absl::BitGen gen(std::seed_seq{7});
  auto sample = [&]<typename T>(const std::vector<T>& from) {
    std::vector<T> picked(kReads);
    for (T& p : picked) p = from[absl::Uniform<size_t>(gen, 0, blocks)];
    return picked;
  };
  char out[kBytes];
  auto read = [&](uint64_t handle) {
    absl::StatusOr<absl::string_view> bytes = pools->Read(handle, 0, 0);
    std::memcpy(out, bytes->data(), bytes->size());
    benchmark::DoNotOptimize(out);
  };
  using Step = SlabPool::PrefetchStep;
  constexpr size_t kEntriesAhead = PoolSet::kPrefetchEntriesAhead;
  constexpr size_t kBlocksAhead = PoolSet::kPrefetchBlocksAhead;

  double plain_s = 0, prefetch_s = 0, malloc_s = 0;
  for (auto _ : state) {
    state.PauseTiming();
    const std::vector<uint64_t> plain = sample(handles);
    const std::vector<uint64_t> fetched = sample(handles);
    const std::vector<char*> baseline = sample(ptrs);
    state.ResumeTiming();
    auto t0 = Clock::now();
    for (uint64_t handle : plain) read(handle);
    auto t1 = Clock::now();
    for (size_t b = 0; b < kReads; b += kReadBatch) {
      const uint64_t* batch = &fetched[b];
      auto prefetch = [&](size_t k, Step step) {
        if (k < kReadBatch) pools->Prefetch(batch[k], step);
      };
      for (size_t k = 0; k < kEntriesAhead; ++k) prefetch(k, Step::kEntry);
      for (size_t k = 0; k < kBlocksAhead; ++k) prefetch(k, Step::kBlock);
      for (size_t k = 0; k < kReadBatch; ++k) {
        prefetch(k + kEntriesAhead, Step::kEntry);
        prefetch(k + kBlocksAhead, Step::kBlock);
        read(batch[k]);
      }
    }
    auto t2 = Clock::now();
    for (const char* p : baseline) {
      std::memcpy(out, p, kBytes);
      benchmark::DoNotOptimize(out);
    }
    auto t3 = Clock::now();
    plain_s += Seconds(t1 - t0);
    prefetch_s += Seconds(t2 - t1);
    malloc_s += Seconds(t3 - t2);
    state.SetIterationTime(Seconds(t2 - t1));
  }
  for (char* p : ptrs) std::free(p);
  ReportWays(
      state, static_cast<double>(state.iterations()) * kReads,
      {{"prefetch", prefetch_s}, {"plain", plain_s}, {"malloc", malloc_s}});
}
BENCHMARK(BM_BatchReads)->Arg(1 << 14)->Arg(1 << 21)->UseManualTime();

// Fills `live_bytes` with blocks of `size`, frees 3 of every 4 at random:
// most spans become sparse and compaction must move about a quarter of the
// blocks.
void BM_Compaction(benchmark::State& state) {
  const uint64_t size = static_cast<uint64_t>(state.range(0));
  const uint64_t live_bytes = uint64_t{256} << 20;
  const size_t count = live_bytes / size;
  uint64_t moved_total = 0;
  double compact_s = 0, memcpy_s = 0;
  absl::Duration longest;
  for (auto _ : state) {
    state.PauseTiming();
    auto pools = MakePools();
    absl::BitGen gen(std::seed_seq{1});
    std::vector<uint64_t> handles;
    handles.reserve(count);
    const std::string data(size, 'x');
    for (size_t i = 0; i < count; ++i) {
      handles.push_back(pools->Allocate(size, data)->handle);
    }
    for (uint64_t h : handles) {
      if (absl::Bernoulli(gen, 0.75)) benchmark::DoNotOptimize(pools->Free(h));
    }
    const PoolKind pool = PoolForSize(size);
    const uint64_t to_move = pools->Analyze(pool).bytes_to_move;
    // The baseline copies the same bytes in the same block size.
    const uint64_t slot = pools->Allocate(size, "")->slot_bytes;
    const size_t blocks = to_move / slot;
    std::vector<char> from(blocks * slot, 'a');
    std::vector<char> to(blocks * slot, 'b');
    state.ResumeTiming();

    auto t0 = Clock::now();
    if (!pools->BeginDefrag({pool}).ok()) std::abort();
    while (!pools->DefragStep(absl::Milliseconds(1)).done) {
    }
    const DefragReport report = pools->EndDefrag(DefragStopReason::kFinished);
    auto t1 = Clock::now();
    for (size_t b = 0; b < blocks; ++b) {
      std::memcpy(&to[b * slot], &from[b * slot], slot);
    }
    benchmark::ClobberMemory();
    auto t2 = Clock::now();

    compact_s += Seconds(t1 - t0);
    memcpy_s += Seconds(t2 - t1);
    moved_total += report.bytes_moved;
    longest = std::max(longest, report.max_slice);
    state.SetIterationTime(Seconds(t1 - t0));
  }
  state.SetBytesProcessed(static_cast<int64_t>(moved_total));
  state.counters["compact_GBps"] = moved_total / compact_s / 1e9;
  state.counters["memcpy_GBps"] = moved_total / memcpy_s / 1e9;
  state.counters["vs_memcpy"] = memcpy_s / compact_s;
  state.counters["max_slice_ms"] = absl::ToDoubleMilliseconds(longest);
}
BENCHMARK(BM_Compaction)
    ->Arg(128)
    ->Arg(16384)
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);

}  // namespace
}  // namespace poold::pools

BENCHMARK_MAIN();
