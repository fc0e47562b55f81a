// libFuzzer target: drives the pool engine with arbitrary operation
// sequences (allocate, write, read, free, forged handles, defragmentation
// steps with operations in between) and checks every answer against a plain
// model (handle -> bytes), under a memory limit, with the OS refusing calls
// where the input says (a FaultInjectingOs per pool). Any divergence or
// crash is a finding.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "worker/pools/fault_injecting_os.h"
#include "worker/pools/memory_limit_error.h"
#include "worker/pools/pool_set.h"

namespace {

using poold::pools::FaultInjectingOs;
using poold::pools::OsCall;
using poold::pools::PoolKind;
using poold::pools::PoolSet;
using poold::pools::PoolSetOptions;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "engine_fuzz: %s\n", what);
    std::abort();
  }
}

class Harness {
 public:
  Harness() {
    PoolSetOptions options;
    options.handle_key = 0x5eed;
    options.max_block_bytes = 256 << 10;
    options.small_retained_bytes = 64 << 10;
    options.medium_retained_bytes = 1 << 20;
    options.large_retained_bytes = 256 << 10;
    // Reached by 512 blocks of up to 300 KiB.
    options.memory_limit_bytes = 16 << 20;
    for (PoolKind p : poold::pools::kAllPools) {
      options.os[poold::pools::PoolIndex(p)] = &os_[poold::pools::PoolIndex(p)];
    }
    pools_ = *PoolSet::Create(options);
  }

  ~Harness() {
    // A refused unmap at teardown would leak address space run after run.
    for (FaultInjectingOs& os : os_) os.Heal();
    if (pools_->defrag_running())
      pools_->EndDefrag(poold::pools::DefragStopReason::kShutdown);
    CheckAll();
  }

  void Run(FuzzedDataProvider& in) {
    while (in.remaining_bytes() > 0) {
      switch (in.ConsumeIntegralInRange<int>(0, 13)) {
        case 0:
        case 1:
          Allocate(in);
          break;
        case 2:
          Free(in);
          break;
        case 3:
          Write(in);
          break;
        case 4:
          Read(in);
          break;
        case 5:
          Forged(in.ConsumeIntegral<uint64_t>());
          break;
        case 6:
          if (!freed_.empty()) {
            Forged(freed_[in.ConsumeIntegralInRange<size_t>(
                0, freed_.size() - 1)]);
          }
          break;
        case 7:
          BeginDefrag(in);
          break;
        case 8:
          StepDefrag(in);
          break;
        case 9:
          if (pools_->defrag_running()) {
            pools_->EndDefrag(poold::pools::DefragStopReason::kDeadline);
            CheckAll();
          }
          break;
        case 10: {
          FaultInjectingOs& os = os_[in.ConsumeIntegralInRange<size_t>(
              0, poold::pools::kPoolCount - 1)];
          const auto call = static_cast<OsCall>(in.ConsumeIntegralInRange<int>(
              0, poold::pools::kOsCallCount - 1));
          os.FailAt(call, in.ConsumeIntegralInRange<uint64_t>(1, 16),
                    in.ConsumeBool() ? ENOMEM : EIO, in.ConsumeBool());
          break;
        }
        case 11:
          for (FaultInjectingOs& os : os_) os.Heal();
          break;
        case 13:
          AllocateInPieces(in);
          break;
        case 12: {
          // The worker's purges of the large pool, a piece at a time (one
          // piece when the deadline has passed).
          const absl::Time deadline =
              in.ConsumeBool() ? absl::InfinitePast() : absl::InfiniteFuture();
          if (in.ConsumeBool()) {
            pools_->ReleaseStaleCaches(absl::Now() + absl::Seconds(10),
                                       deadline);
          } else if (pools_->large_purge_due()) {
            pools_->PurgeLargeDue(deadline);
          }
          CheckAll();
          break;
        }
      }
    }
  }

 private:
  uint64_t Size(FuzzedDataProvider& in) {
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
      case 0:
        return in.ConsumeIntegralInRange<uint64_t>(0, 1023);
      case 1:
        return in.ConsumeIntegralInRange<uint64_t>(1024, 65535);
      case 2:
        return in.ConsumeIntegralInRange<uint64_t>(65536, 300 << 10);
      default:
        return in.ConsumeIntegral<uint64_t>();  // mostly invalid
    }
  }

  void Allocate(FuzzedDataProvider& in) {
    if (handles_.size() >= 512) return;
    const uint64_t size = Size(in);
    const size_t data_len = in.ConsumeIntegralInRange<size_t>(0, 2048);
    std::string data(data_len,
                     static_cast<char>(in.ConsumeIntegral<uint8_t>()));
    const uint64_t failures = OsFailures();
    auto block = pools_->Allocate(size, data);
    const uint64_t effective = size == 0 ? data.size() : size;
    const bool valid =
        effective > 0 && data.size() <= effective && effective <= (256 << 10);
    Check(block.ok() == valid ||
              (valid &&
               (poold::pools::MemoryLimitGrowth(block.status()).has_value() ||
                OsFailures() > failures)),
          "allocate validity");
    if (!block.ok()) {
      CheckAll();  // a refused allocation changes nothing
      return;
    }
    Check(block->size == effective, "allocate size");
    Check(!model_.contains(block->handle), "handle reused while live");
    data.resize(effective, '\0');
    model_[block->handle] = std::move(data);
    handles_.push_back(block->handle);
  }

  // A large allocation written in pieces, as the worker's long copy does
  // it: committed and written piece by piece after its first bytes, then
  // kept, or stopped midway and freed unfinished.
  void AllocateInPieces(FuzzedDataProvider& in) {
    if (handles_.size() >= 512) return;
    const uint64_t size = in.ConsumeIntegralInRange<uint64_t>(65536, 256 << 10);
    const uint64_t first = in.ConsumeIntegralInRange<uint64_t>(0, size);
    const std::string data(size,
                           static_cast<char>(in.ConsumeIntegral<uint8_t>()));
    const uint64_t failures = OsFailures();
    auto block = pools_->Allocate(
        size, absl::string_view(data).substr(0, first), size - first);
    if (!block.ok()) {
      Check(poold::pools::MemoryLimitGrowth(block.status()).has_value() ||
                OsFailures() > failures,
            "allocation in pieces refused");
      CheckAll();
      return;
    }
    const uint64_t end = in.ConsumeBool()
                             ? size
                             : in.ConsumeIntegralInRange<uint64_t>(first, size);
    uint64_t at = first;
    absl::Status committed;
    while (at < end) {
      const uint64_t n = std::min<uint64_t>(16 << 10, end - at);
      committed = pools_->CommitBytes(block->handle, at, n);
      if (!committed.ok()) break;
      Check(
          pools_
              ->Write(block->handle, at, absl::string_view(data).substr(at, n))
              .ok(),
          "write of a piece");
      at += n;
    }
    if (at < size) {
      Check(committed.ok() || OsFailures() > failures, "commit refused");
      const absl::Status freed = block->fresh_pages
                                     ? pools_->FreeUnfinished(block->handle, at)
                                     : pools_->Free(block->handle);
      Check(freed.ok(), "free of an unfinished block");
      freed_.push_back(block->handle);
      CheckAll();
      return;
    }
    model_[block->handle] = data;
    handles_.push_back(block->handle);
  }

  size_t Pick(FuzzedDataProvider& in) {
    return in.ConsumeIntegralInRange<size_t>(0, handles_.size() - 1);
  }

  void Free(FuzzedDataProvider& in) {
    if (handles_.empty()) return;
    const size_t i = Pick(in);
    const uint64_t handle = handles_[i];
    Check(pools_->Free(handle).ok(), "free of a live handle");
    Check(pools_->Free(handle).code() == absl::StatusCode::kNotFound,
          "double free");
    model_.erase(handle);
    handles_[i] = handles_.back();
    handles_.pop_back();
    freed_.push_back(handle);
  }

  void Write(FuzzedDataProvider& in) {
    if (handles_.empty()) return;
    const uint64_t handle = handles_[Pick(in)];
    std::string& model = model_[handle];
    const uint64_t offset =
        in.ConsumeBool() ? in.ConsumeIntegral<uint64_t>()
                         : in.ConsumeIntegralInRange<uint64_t>(0, model.size());
    const size_t len = in.ConsumeIntegralInRange<size_t>(0, 4096);
    const std::string data(len,
                           static_cast<char>(in.ConsumeIntegral<uint8_t>()));
    const absl::Status status = pools_->Write(handle, offset, data);
    const bool fits = offset <= model.size() && len <= model.size() - offset;
    Check(status.ok() == fits, "write range check");
    if (!fits) {
      Check(status.code() == absl::StatusCode::kOutOfRange, "write code");
      return;
    }
    model.replace(offset, len, data);
  }

  void Read(FuzzedDataProvider& in) {
    if (handles_.empty()) return;
    const uint64_t handle = handles_[Pick(in)];
    pools_->Prefetch(handle, poold::pools::SlabPool::PrefetchStep::kEntry);
    pools_->Prefetch(handle, poold::pools::SlabPool::PrefetchStep::kBlock);
    const std::string& model = model_[handle];
    const uint64_t offset =
        in.ConsumeBool() ? in.ConsumeIntegral<uint64_t>()
                         : in.ConsumeIntegralInRange<uint64_t>(0, model.size());
    const uint64_t length =
        in.ConsumeBool() ? in.ConsumeIntegral<uint64_t>()
                         : in.ConsumeIntegralInRange<uint64_t>(0, model.size());
    auto data = pools_->Read(handle, offset, length);
    const bool fits = offset <= model.size() &&
                      (length == 0 || length <= model.size() - offset);
    Check(data.ok() == fits, "read range check");
    if (!fits) {
      Check(data.status().code() == absl::StatusCode::kOutOfRange, "read code");
      return;
    }
    const uint64_t n = length == 0 ? model.size() - offset : length;
    Check(*data == absl::string_view(model).substr(offset, n), "read bytes");
  }

  void Forged(uint64_t handle) {
    // A batch prefetches handles it has not checked yet: any value is safe.
    pools_->Prefetch(handle, poold::pools::SlabPool::PrefetchStep::kEntry);
    pools_->Prefetch(handle, poold::pools::SlabPool::PrefetchStep::kBlock);
    if (model_.contains(handle)) return;
    Check(pools_->Read(handle, 0, 0).status().code() ==
              absl::StatusCode::kNotFound,
          "forged read");
    Check(pools_->Write(handle, 0, "x").code() == absl::StatusCode::kNotFound,
          "forged write");
    Check(pools_->Free(handle).code() == absl::StatusCode::kNotFound,
          "forged free");
  }

  void BeginDefrag(FuzzedDataProvider& in) {
    if (pools_->defrag_running()) return;
    std::vector<PoolKind> pools;
    const uint8_t mask = in.ConsumeIntegral<uint8_t>();
    for (PoolKind p : poold::pools::kAllPools) {
      if (mask & (1 << poold::pools::PoolIndex(p))) pools.push_back(p);
    }
    Check(pools_->BeginDefrag(pools).ok(), "begin defrag");
  }

  void StepDefrag(FuzzedDataProvider& in) {
    if (!pools_->defrag_running()) return;
    const poold::pools::DefragProgress progress = pools_->DefragStep(
        absl::Microseconds(in.ConsumeIntegralInRange<int>(0, 100)));
    CheckAll();
    if (progress.done) {
      const auto report =
          pools_->EndDefrag(poold::pools::DefragStopReason::kFinished);
      Check(report.complete, "finished defrag is complete");
      CheckAll();
    }
  }

  uint64_t OsFailures() const {
    uint64_t n = 0;
    for (const FaultInjectingOs& os : os_) n += os.failures();
    return n;
  }

  void CheckAll() {
    uint64_t live = 0;
    for (const auto& [handle, model] : model_) {
      auto data = pools_->Read(handle, 0, 0);
      Check(data.ok() && *data == model, "block intact");
      live += model.size();
    }
    const auto stats = pools_->Stats(false);
    Check(stats.total.live_bytes == live, "live bytes counter");
    Check(stats.total.blocks == model_.size(), "blocks counter");
    Check(stats.total.resident_bytes == pools_->resident_bytes(),
          "resident bytes counter");
    Check(stats.total.allocated_bytes >= stats.total.live_bytes,
          "allocated bytes counter");
    Check(stats.total.resident_bytes >=
              stats.total.allocated_bytes + stats.total.free_bytes,
          "free bytes counter");
    Check(pools_->CheckResidency().ok(), "resident bytes are what the OS has");
    Check(pools_->CheckInvariants().ok(), "span records agree with counters");
  }

  // Before pools_: they must outlive it.
  std::array<FaultInjectingOs, poold::pools::kPoolCount> os_;
  std::unique_ptr<PoolSet> pools_;
  absl::flat_hash_map<uint64_t, std::string> model_;
  std::vector<uint64_t> handles_;
  std::vector<uint64_t> freed_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Harness harness;
  harness.Run(in);
  return 0;
}
