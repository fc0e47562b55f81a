// PoolSet: routing, validation, the memory limit and defragmentation runs.
#include "worker/pools/pool_set.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "worker/pools/handle_table.h"

namespace poold::pools {

// State of one defragmentation across its pools.
struct PoolSet::DefragRun {
  std::vector<PoolKind> pools;
  size_t current = 0;
  bool pool_started = false;
  std::optional<SlabCompactor> compactor;
  PoolDefragReport pool_report;
  absl::Time pool_start;
  absl::Time start;
  DefragReport report;

  // Block bytes copied so far, the pool in progress included.
  uint64_t bytes_moved() const;
};

PoolSet::PoolSet(const PoolSetOptions& options) : options_(options) {}

PoolSet::~PoolSet() = default;

absl::StatusOr<std::unique_ptr<PoolSet>> PoolSet::Create(
    const PoolSetOptions& options) {
  std::unique_ptr<PoolSet> set(new PoolSet(options));
  SipKey key{options.handle_key, ~options.handle_key};
  if (options.handle_key == 0) {
    absl::BitGen gen;  // seeded from the OS's entropy
    key = SipKey{absl::Uniform<uint64_t>(gen), absl::Uniform<uint64_t>(gen)};
  }
  SlabPoolOptions small;
  small.pool = PoolKind::kSmall;
  small.span_bytes = 64 << 10;
  small.spans_per_chunk = 256;  // 16 MiB chunks
  small.max_spans = 1u << 20;
  small.retained_bytes = options.small_retained_bytes;
  small.bitmap_in_span = true;
  small.max_handles = 1u << 30;
  small.handle_key = key;
  small.os = options.os[static_cast<size_t>(PoolKind::kSmall)];
  if (absl::Status s = set->small_.Init(small); !s.ok()) return s;

  SlabPoolOptions medium;
  medium.pool = PoolKind::kMedium;
  // Small spans keep the partly used span of each class small; a span
  // commits only the pages its class uses, so big slots that divide
  // 256 KiB badly waste address space, not memory.
  medium.span_bytes = 256 << 10;
  medium.spans_per_chunk = 64;  // 16 MiB chunks
  medium.max_spans = 1u << 20;
  medium.retained_bytes = options.medium_retained_bytes;
  // 64 KiB slots in 256 KiB spans: an in-span bitmap would cost a slot.
  medium.bitmap_in_span = false;
  medium.max_handles = 1u << 26;
  medium.handle_key = key;
  medium.os = options.os[static_cast<size_t>(PoolKind::kMedium)];
  if (absl::Status s = set->medium_.Init(medium); !s.ok()) return s;

  ExtentPoolOptions large;
  large.retained_bytes = options.large_retained_bytes;
  large.handle_key = key;
  large.os = options.os[static_cast<size_t>(PoolKind::kLarge)];
  if (absl::Status s = set->large_.Init(large); !s.ok()) return s;
  return set;
}

uint64_t PoolSet::resident_bytes() const {
  return small_.resident_bytes() + medium_.resident_bytes() +
         large_.resident_bytes();
}

uint64_t PoolSet::Headroom() const {
  if (options_.memory_limit_bytes == 0) return UINT64_MAX;
  const uint64_t resident = resident_bytes();
  return resident >= options_.memory_limit_bytes
             ? 0
             : options_.memory_limit_bytes - resident;
}

absl::StatusOr<BlockInfo> PoolSet::AllocateIn(PoolKind pool, uint64_t size,
                                              absl::string_view data,
                                              uint64_t written_next) {
  switch (pool) {
    case PoolKind::kSmall:
      return small_.Allocate(size, data, Headroom());
    case PoolKind::kMedium:
      return medium_.Allocate(size, data, Headroom());
    case PoolKind::kLarge:
      return large_.Allocate(size, data, Headroom(), written_next);
  }
  return absl::InternalError("unknown pool");
}

absl::StatusOr<BlockInfo> PoolSet::Allocate(uint64_t size,
                                            absl::string_view data,
                                            uint64_t written_next) {
  if (size == 0) size = data.size();
  if (size == 0) {
    return absl::InvalidArgumentError(
        "size must be at least 1 byte (or data must not be empty)");
  }
  if (data.size() > size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data is ", data.size(), " bytes, longer than the size ", size));
  }
  if (written_next > size - data.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(written_next, " bytes to be written after ", data.size(),
                     " bytes of data pass the end of ", size, " bytes"));
  }
  if (size > options_.max_block_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("size ", size, " exceeds the largest block size ",
                     options_.max_block_bytes));
  }
  absl::StatusOr<BlockInfo> block =
      AllocateIn(PoolForSize(size), size, data, written_next);
  if (block.ok()) return block;
  const std::optional<uint64_t> growth = MemoryLimitGrowth(block.status());
  if (!growth.has_value()) return block;
  return MemoryLimitError(
      absl::StrCat("memory limit of ", options_.memory_limit_bytes,
                   " bytes reached (resident ", resident_bytes(),
                   " bytes): ", block.status().message()),
      *growth);
}

uint64_t PoolSet::headroom_bytes() const { return Headroom(); }

absl::Status PoolSet::CheckInvariants() const {
  if (absl::Status s = small_.CheckInvariants(); !s.ok()) {
    return absl::InternalError(absl::StrCat("small pool: ", s.message()));
  }
  if (absl::Status s = medium_.CheckInvariants(); !s.ok()) {
    return absl::InternalError(absl::StrCat("medium pool: ", s.message()));
  }
  return absl::OkStatus();
}

uint64_t PoolSet::sparse_handles() const {
  return small_.handles().sparse_entries() +
         medium_.handles().sparse_entries() + large_.handles().sparse_entries();
}

absl::Status PoolSet::CheckResidency() const {
  const struct {
    const char* name;
    uint64_t counted;
    uint64_t os;
  } pools[] = {
      {"small", small_.span_bytes(), small_.SpanBytesResidentPerOs()},
      {"medium", medium_.span_bytes(), medium_.SpanBytesResidentPerOs()},
      {"large", large_.chunk_bytes(), large_.ChunkBytesResidentPerOs()},
  };
  for (const auto& pool : pools) {
    if (pool.counted != pool.os) {
      return absl::InternalError(absl::StrCat(
          "the ", pool.name, " pool counts ", pool.counted,
          " resident bytes of blocks and spans; the OS has ", pool.os));
    }
  }
  return absl::OkStatus();
}

uint64_t PoolSet::reclaimable_bytes() const {
  uint64_t reclaimable = 0;
  for (PoolKind pool : kAllPools) {
    reclaimable += StatsOf(pool, false).stats.reclaimable_bytes;
  }
  return reclaimable;
}

std::optional<uint64_t> PoolSet::LiveHandleAt(uint64_t handle) const {
  std::optional<PoolKind> pool = HandleTable::PoolOf(handle);
  if (!pool.has_value()) return std::nullopt;
  switch (*pool) {
    case PoolKind::kSmall:
      return small_.handles().LiveHandleAt(handle);
    case PoolKind::kMedium:
      return medium_.handles().LiveHandleAt(handle);
    case PoolKind::kLarge:
      return large_.handles().LiveHandleAt(handle);
  }
  return std::nullopt;
}

absl::StatusOr<BlockRef> PoolSet::Lookup(uint64_t handle) {
  std::optional<PoolKind> pool = HandleTable::PoolOf(handle);
  if (!pool.has_value()) {
    return absl::NotFoundError(absl::StrCat("no block with handle ", handle));
  }
  switch (*pool) {
    case PoolKind::kSmall:
      return small_.Lookup(handle);
    case PoolKind::kMedium:
      return medium_.Lookup(handle);
    case PoolKind::kLarge:
      return large_.Lookup(handle);
  }
  return absl::InternalError("unknown pool");
}

absl::Status PoolSet::Write(uint64_t handle, uint64_t offset,
                            absl::string_view data) {
  absl::StatusOr<BlockRef> block = Lookup(handle);
  if (!block.ok()) return block.status();
  if (offset > block->size || data.size() > block->size - offset) {
    return absl::OutOfRangeError(
        absl::StrCat("writing ", data.size(), " bytes at offset ", offset,
                     " passes the end of the block (", block->size, " bytes)"));
  }
  if (!data.empty())
    std::memcpy(block->data + offset, data.data(), data.size());
  return absl::OkStatus();
}

absl::StatusOr<absl::string_view> PoolSet::Read(uint64_t handle,
                                                uint64_t offset,
                                                uint64_t length) {
  absl::StatusOr<BlockRef> block = Lookup(handle);
  if (!block.ok()) return block.status();
  if (offset > block->size) {
    return absl::OutOfRangeError(absl::StrCat("offset ", offset,
                                              " is past the end of the block (",
                                              block->size, " bytes)"));
  }
  if (length == 0) length = block->size - offset;
  if (length > block->size - offset) {
    return absl::OutOfRangeError(
        absl::StrCat("reading ", length, " bytes at offset ", offset,
                     " passes the end of the block (", block->size, " bytes)"));
  }
  return absl::string_view(block->data + offset, length);
}

void PoolSet::Prefetch(uint64_t handle, SlabPool::PrefetchStep step) const {
  const std::optional<PoolKind> pool = HandleTable::PoolOf(handle);
  if (pool == PoolKind::kSmall) {
    small_.Prefetch(handle, step);
  } else if (pool == PoolKind::kMedium) {
    medium_.Prefetch(handle, step);
  }
}

absl::Status PoolSet::CommitBytes(uint64_t handle, uint64_t offset,
                                  uint64_t length) {
  if (HandleTable::PoolOf(handle) == PoolKind::kLarge) {
    return large_.Commit(handle, offset, length);
  }
  absl::StatusOr<BlockRef> block = Lookup(handle);
  if (!block.ok()) return block.status();
  if (offset > block->size || length > block->size - offset) {
    return absl::OutOfRangeError(
        absl::StrCat("committing ", length, " bytes at offset ", offset,
                     " passes the end of the block (", block->size, " bytes)"));
  }
  return absl::OkStatus();
}

absl::Status PoolSet::Free(uint64_t handle) {
  std::optional<PoolKind> pool = HandleTable::PoolOf(handle);
  if (!pool.has_value()) {
    return absl::NotFoundError(absl::StrCat("no block with handle ", handle));
  }
  switch (*pool) {
    case PoolKind::kSmall:
      return small_.Free(handle);
    case PoolKind::kMedium:
      return medium_.Free(handle);
    case PoolKind::kLarge:
      return large_.Free(handle);
  }
  return absl::InternalError("unknown pool");
}

absl::Status PoolSet::FreeUnfinished(uint64_t handle, uint64_t written) {
  if (HandleTable::PoolOf(handle) == PoolKind::kLarge) {
    return large_.FreeUnfinished(handle, written);
  }
  return Free(handle);
}

PoolStats PoolSet::StatsOf(PoolKind pool, bool include_classes) const {
  switch (pool) {
    case PoolKind::kSmall:
      return small_.Stats(include_classes);
    case PoolKind::kMedium:
      return medium_.Stats(include_classes);
    case PoolKind::kLarge:
      return large_.Stats();
  }
  return PoolStats{};
}

PoolSetStats PoolSet::Stats(bool include_classes) const {
  PoolSetStats stats;
  for (PoolKind pool : kAllPools) {
    stats.pools[PoolIndex(pool)] = StatsOf(pool, include_classes);
    stats.total.Add(stats.pools[PoolIndex(pool)].stats);
  }
  return stats;
}

PoolAnalysis PoolSet::Analyze(PoolKind pool) const {
  switch (pool) {
    case PoolKind::kSmall:
      return small_.Analyze();
    case PoolKind::kMedium:
      return medium_.Analyze();
    case PoolKind::kLarge:
      return large_.Analyze();
  }
  return PoolAnalysis{};
}

uint64_t PoolSet::ReleaseStaleCaches(absl::Time now, absl::Time deadline) {
  const absl::Duration age = options_.cache_decay;
  return small_.PurgeStaleCachedSpans(now, age) +
         medium_.PurgeStaleCachedSpans(now, age) +
         large_.PurgeStale(now, age, deadline);
}

uint64_t PoolSet::TrimCaches() {
  return small_.TrimCache() + medium_.TrimCache();
}

absl::Status PoolSet::BeginDefrag(const std::vector<PoolKind>& pools) {
  if (run_ != nullptr) {
    return absl::FailedPreconditionError("a defragmentation is running");
  }
  run_ = std::make_unique<DefragRun>();
  for (PoolKind pool : kAllPools) {
    if (pools.empty() ||
        std::find(pools.begin(), pools.end(), pool) != pools.end()) {
      run_->pools.push_back(pool);
    }
  }
  run_->start = absl::Now();
  run_->report.pools_resident_before_bytes = resident_bytes();
  return absl::OkStatus();
}

bool PoolSet::StepPool(absl::Time deadline) {
  DefragRun& run = *run_;
  const PoolKind pool = run.pools[run.current];
  if (!run.pool_started) {
    run.pool_started = true;
    run.pool_start = absl::Now();
    run.pool_report = PoolDefragReport{};
    run.pool_report.pool = pool;
    run.pool_report.before = StatsOf(pool, false).stats;
    if (run.pool_report.before.reclaimable_bytes == 0) {
      FinishPool(DefragOutcome::kSkipped, "nothing to reclaim");
      return true;
    }
    if (pool == PoolKind::kSmall) run.compactor.emplace(small_);
    if (pool == PoolKind::kMedium) run.compactor.emplace(medium_);
    if (pool == PoolKind::kLarge) large_.StartPurge();
  }
  if (pool == PoolKind::kLarge) {
    const PurgeProgress progress = large_.PurgeStep(deadline);
    run.pool_report.spans_released += progress.chunks_unmapped;
    if (!progress.failure.ok()) {
      FailPool(progress.failure);
      return true;
    }
    if (!progress.done) return false;
  } else if (!run.compactor->Step(deadline)) {
    return false;
  } else if (!run.compactor->failure().ok()) {
    FailPool(run.compactor->failure());
    return true;
  }
  FinishPool(DefragOutcome::kCleaned, "");
  return true;
}

void PoolSet::FailPool(const absl::Status& failure) {
  DefragRun& run = *run_;
  const PoolKind pool = run.pools[run.current];
  const uint64_t resident = StatsOf(pool, false).stats.resident_bytes;
  const uint64_t before = run.pool_report.before.resident_bytes;
  const std::string done =
      run.compactor.has_value()
          ? absl::StrCat("moving ", run.compactor->blocks_moved(), " blocks (",
                         run.compactor->bytes_moved(), " bytes) and releasing ",
                         run.compactor->spans_released(), " spans")
          : absl::StrCat("unmapping ", run.pool_report.spans_released,
                         " chunks");
  const std::string reason =
      absl::StrCat(failure.message(), "; stopped after ", done, ", ",
                   before > resident ? before - resident : 0,
                   " bytes returned; every block is in place and readable");
  LOG(WARNING) << "defragmentation of the " << PoolName(pool)
               << " pool failed: " << reason;
  FinishPool(DefragOutcome::kFailed, reason);
}

void PoolSet::FinishPool(DefragOutcome outcome, absl::string_view reason) {
  DefragRun& run = *run_;
  PoolDefragReport& r = run.pool_report;
  r.outcome = outcome;
  r.reason = std::string(reason);
  if (run.compactor.has_value()) {
    // At the deadline, the spans it emptied wait in the cache: purging them
    // can take longer than the time left (10 ms for 80 MiB), and the caller
    // trims them after answering (TrimCaches).
    if (!run.compactor->done()) {
      run.compactor->Stop(run.report.stop_reason !=
                          DefragStopReason::kDeadline);
    }
    r.blocks_moved = run.compactor->blocks_moved();
    r.bytes_moved = run.compactor->bytes_moved();
    r.spans_released = run.compactor->spans_released();
    if (run.compactor->spans_abandoned() > 0 && r.reason.empty()) {
      r.reason = absl::StrCat(run.compactor->spans_abandoned(),
                              " spans kept: allocations during the "
                              "defragmentation used the room they needed");
    }
    run.compactor.reset();
  }
  r.after = StatsOf(r.pool, false).stats;
  r.bytes_reclaimed = r.before.resident_bytes > r.after.resident_bytes
                          ? r.before.resident_bytes - r.after.resident_bytes
                          : 0;
  r.duration = absl::Now() - run.pool_start;
  DefragReport& total = run.report;
  total.bytes_reclaimed += r.bytes_reclaimed;
  total.bytes_moved += r.bytes_moved;
  total.blocks_moved += r.blocks_moved;
  total.spans_released += r.spans_released;
  switch (outcome) {
    case DefragOutcome::kCleaned:
      ++total.pools_cleaned;
      break;
    case DefragOutcome::kSkipped:
      ++total.pools_skipped;
      break;
    case DefragOutcome::kPartial:
      ++total.pools_partial;
      break;
    case DefragOutcome::kFailed:
      ++total.pools_failed;
      break;
  }
  total.pools.push_back(std::move(r));
  run.pool_started = false;
  ++run.current;
}

uint64_t PoolSet::DefragRun::bytes_moved() const {
  return report.bytes_moved +
         (compactor.has_value() ? compactor->bytes_moved() : 0);
}

DefragProgress PoolSet::DefragStep(absl::Duration budget) {
  CHECK(run_ != nullptr);
  DefragRun& run = *run_;
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + budget;
  const uint64_t moved_before = run.bytes_moved();
  const uint64_t resident_before = resident_bytes();
  while (run.current < run.pools.size()) {
    if (!StepPool(deadline)) break;
    if (absl::Now() >= deadline) break;
  }
  const absl::Duration slice = absl::Now() - start;
  ++run.report.slices;
  run.report.max_slice = std::max(run.report.max_slice, slice);
  DefragProgress progress;
  progress.done = run.current >= run.pools.size();
  if (progress.done) run.report.complete = true;
  progress.bytes_moved = run.bytes_moved() - moved_before;
  const uint64_t resident_after = resident_bytes();
  if (resident_before > resident_after) {
    progress.bytes_reclaimed = resident_before - resident_after;
  } else {
    progress.bytes_committed = resident_after - resident_before;
  }
  return progress;
}

DefragReport PoolSet::EndDefrag(DefragStopReason stop_reason) {
  CHECK(run_ != nullptr);
  DefragRun& run = *run_;
  // A defragmentation that finished says so, whatever the caller's reason;
  // one stopped early never says it finished.
  run.report.stop_reason = DefragStopReason::kFinished;
  if (run.current < run.pools.size()) {
    run.report.stop_reason = stop_reason == DefragStopReason::kFinished
                                 ? DefragStopReason::kDeadline
                                 : stop_reason;
    const absl::string_view reason =
        DefragStopReasonText(run.report.stop_reason);
    if (run.pool_started) FinishPool(DefragOutcome::kPartial, reason);
    while (run.current < run.pools.size()) {
      run.pool_report = PoolDefragReport{};
      run.pool_report.pool = run.pools[run.current];
      run.pool_report.before = StatsOf(run.pool_report.pool, false).stats;
      run.pool_start = absl::Now();
      FinishPool(DefragOutcome::kSkipped,
                 absl::StrCat("not started: ", reason));
    }
    run.report.complete = false;
  }
  run.report.duration = absl::Now() - run.start;
  run.report.pools_resident_after_bytes = resident_bytes();
  DefragReport report = std::move(run.report);
  run_.reset();
  return report;
}

}  // namespace poold::pools
