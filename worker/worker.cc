// Worker: the command loop and the per-op handlers.
#include "worker/worker.h"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "worker/pools/memory_limit_error.h"
#include "worker/pools/os_memory.h"
#include "worker/process_memory.h"

namespace poold {
namespace {

// What a long allocation writes after its data. Never written: its pages
// stay the kernel's shared zero page, outside the process's RSS.
char zero_piece[Worker::kCopyPieceBytes];

// When a defragmentation with this deadline should stop: a little early, so
// its partial report can still reach the client in time.
absl::Time StopTime(absl::Time start, absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return deadline;
  const absl::Duration margin =
      std::min(absl::Milliseconds(50), (deadline - start) / 10);
  return deadline - margin;
}

// CPU time the calling thread has used.
absl::Duration ThreadCpuTime() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return absl::DurationFromTimespec(ts);
}

}  // namespace

Worker::Worker(const Options& options, std::unique_ptr<pools::PoolSet> pools)
    : channel_(options.channel_capacity),
      paused_(options.start_paused),
      options_(options),
      pools_(std::move(pools)),
      next_maintenance_(absl::Now() + options.maintenance_interval),
      outside_pools_after_trim_(OutsidePoolsBytes()),
      heap_free_after_trim_(ProcessMemory::HeapFreeBytes()),
      next_auto_look_(absl::Now() + options.auto_defrag.interval) {
  CHECK(pools_ != nullptr);
  // Readers have a snapshot from the start, even while the worker is held.
  Publish();
  thread_ = std::thread([this] { Run(); });
}

Worker::~Worker() { Stop(); }

bool Worker::Submit(Command command) {
  command.queued_at = absl::Now();
  if (channel_.TrySend(command)) return true;
  // Refused: `command` is still ours and must be completed here.
  if (channel_.closed()) {
    FailCommand(command, absl::UnavailableError("server is shutting down"));
    return false;
  }
  refused_.fetch_add(1, std::memory_order_relaxed);
  FailCommand(command, absl::ResourceExhaustedError(absl::StrCat(
                           "the worker's command queue is full (",
                           channel_.capacity(), " commands); retry later")));
  return false;
}

void Worker::Resume() {
  {
    std::lock_guard<std::mutex> lock(pause_mu_);
    paused_ = false;
  }
  pause_cv_.notify_all();
}

void Worker::Stop() {
  if (!thread_.joinable()) return;
  channel_.Close();
  Resume();
  thread_.join();
}

void Worker::Run() {
  WaitWhilePaused();
  while (true) {
    if (channel_.closed() && auto_session_.has_value()) {
      EndAutoDefrag(pools::DefragStopReason::kShutdown);
    }
    if (!waiting_for_room_.empty()) {
      MakeRoom();
    } else if (!pending_defrags_.empty()) {
      Command command = std::move(pending_defrags_.front());
      pending_defrags_.pop_front();
      Execute(command);
    } else if (auto_session_.has_value() && absl::Now() >= next_auto_slice_) {
      RunAutoSlice();
      // What arrived during the slice runs before the next one, whatever
      // the budget: a client's command waits for one slice at most.
      for (size_t queued = channel_.size(); queued > 0; --queued) {
        std::optional<Command> command = channel_.TryReceive();
        if (!command.has_value()) break;
        Execute(*command);
      }
    } else if (pieces_pending()) {
      ContinuePieces();
      // What arrived during the piece runs before the next one.
      for (size_t queued = channel_.size(); queued > 0; --queued) {
        std::optional<Command> command = channel_.TryReceive();
        if (!command.has_value()) break;
        Execute(*command);
      }
    } else if (std::optional<Command> command =
                   channel_.ReceiveFor(IdleWait())) {
      Execute(*command);
    } else if (channel_.closed() && channel_.size() == 0) {
      break;
    }
    // One clock read per turn of the loop, for both.
    const absl::Time now = absl::Now();
    MaybeMaintain(now);
    MaybePublish(now);
  }
  // The channel closed while an automatic run waited for its next slice.
  if (auto_session_.has_value()) {
    EndAutoDefrag(pools::DefragStopReason::kShutdown);
  }
  VLOG(1) << "worker: channel closed and drained";
}

absl::Duration Worker::IdleWait() const {
  absl::Duration wait = options_.maintenance_interval;
  if (options_.stats_sink != nullptr) {
    wait = std::min(wait, next_publish_ - absl::Now());
  }
  if (auto_session_.has_value()) {
    wait = std::min(wait, next_auto_slice_ - absl::Now());
  }
  return std::max(wait, absl::ZeroDuration());
}

void Worker::MaybeMaintain(absl::Time now) {
  if (now < next_maintenance_) return;
  next_maintenance_ = now + options_.maintenance_interval;
  // The large pool's stale free extents, a piece at a time, for a slice at
  // most (the rest between commands, as pieces).
  const uint64_t released =
      pools_->ReleaseStaleCaches(now, absl::Now() + options_.defrag_slice);
  if (released > 0) {
    VLOG(1) << "worker: returned " << released
            << " bytes of cached empty memory to the OS";
  }
  // Idle for a whole interval after activity: what gRPC and protobuf freed
  // meanwhile (large messages) goes back to the OS once, not on every tick.
  if (!ran_since_maintenance_ && ran_since_trim_) {
    const uint64_t trimmed = TrimHeap();
    VLOG(1) << "worker: idle; trimming the heap returned " << trimmed
            << " bytes to the OS";
  } else if (!ran_since_maintenance_ && options_.trim_heap &&
             HeapGrewSinceTrim(kIdleGrowthBeforeTrim)) {
    // Idle, and yet the process grew outside the pools since the last trim,
    // or malloc holds more free memory than then: gRPC's heap after calls
    // that never reached the worker (streams a client reset at once, calls
    // refused before a command was made). Hand it back too. While that
    // memory is still in use a trim returns nothing, and both baselines move
    // up to it: the next trim waits for more growth, or for it to be freed.
    const uint64_t trimmed = TrimHeap();
    VLOG(1) << "worker: idle; the process grew outside the pools; trimming "
               "the heap returned "
            << trimmed << " bytes to the OS";
  }

  ran_since_maintenance_ = false;
  MaybeStartAutoDefrag(now);
}

uint64_t Worker::TrimHeap() {
  ran_since_trim_ = false;
  if (!options_.trim_heap) return 0;
  const uint64_t released = ProcessMemory::TrimHeap();
  ++stats_.heap_trims;
  stats_.heap_bytes_released += released;
  outside_pools_after_trim_ = OutsidePoolsBytes();
  heap_free_after_trim_ = ProcessMemory::HeapFreeBytes();
  return released;
}

bool Worker::HeapGrewSinceTrim(uint64_t free_threshold) const {
  return OutsidePoolsBytes() >
             outside_pools_after_trim_ + kOutsideGrowthBeforeTrim ||
         ProcessMemory::HeapFreeBytes() >
             heap_free_after_trim_ + free_threshold;
}

uint64_t Worker::OutsidePoolsBytes() const {
  const uint64_t rss = pools::OsMemory::ProcessRssBytes();
  const uint64_t pools = pools_->resident_bytes();
  return rss > pools ? rss - pools : 0;
}

void Worker::WaitWhilePaused() {
  std::unique_lock<std::mutex> lock(pause_mu_);
  pause_cv_.wait(lock, [this] { return !paused_; });
}

void Worker::Execute(Command& command) {
  const CommandType type = command.type();
  command.started_at = absl::Now();
  if (command.queued_at != absl::InfinitePast()) {
    stats_.queue_wait[static_cast<size_t>(type)].Record(command.started_at -
                                                        command.queued_at);
  }
  VLOG(2) << "worker: running " << CommandTypeName(type);
  if (type == CommandType::kAllocate || type == CommandType::kFree) {
    ++mutations_;
  }
  ran_since_maintenance_ = true;
  ran_since_trim_ = true;
  if (type != CommandType::kTriggerDefragmentation) {
    last_command_at_ = command.started_at;
  }
  Dispatch(command);
}

void Worker::Dispatch(Command& command) {
  if (command.IsCancelled()) {
    FailCommand(command, absl::CancelledError("the client cancelled"));
  } else if (absl::Now() >= command.deadline) {
    FailCommand(command, absl::DeadlineExceededError(
                             "the deadline passed before the command ran"));
  } else {
    bool parked = false;
    std::visit(
        [this, &command, &parked](auto& op) {
          using OpT = std::decay_t<decltype(op)>;
          if constexpr (std::is_same_v<OpT, DefragOp>) {
            parked = RunDefrag(command, op);
          } else if constexpr (std::is_same_v<OpT, BatchOp>) {
            if (pending_batches_.size() + batches_waiting_for_blocks_ +
                    batches_in_long_copies_ >=
                options_.channel_capacity) {
              // Each batch begun holds its request's memory: bound them.
              CompleteOp(op, absl::ResourceExhaustedError(absl::StrCat(
                                 pending_batches_.size() +
                                     batches_waiting_for_blocks_ +
                                     batches_in_long_copies_,
                                 " batches are already in progress; retry "
                                 "later")));
            } else {
              parked = !RunBatchPiece(command, op);
            }
          } else if constexpr (std::is_same_v<OpT, AllocateOp>) {
            parked = HandleAllocate(command, op);
          } else if constexpr (std::is_same_v<OpT, WriteOp>) {
            parked = HandleWrite(command);
          } else if constexpr (std::is_same_v<OpT, ReadOp>) {
            parked = HandleRead(command);
          } else if constexpr (std::is_same_v<OpT, FreeOp>) {
            parked = HandleFree(command);
          } else {
            Handle(op);
          }
        },
        command.op);
    if (parked) return;  // counted when it is completed
  }
  // After completion the RPC may be gone: touch nothing but our own counters
  // (and the Command, which is ours).
  CountCompleted(command);
}

void Worker::CountCompleted(const Command& command) {
  const CommandType type = command.type();
  ++stats_.completed_of(type);
  stats_.service_time[static_cast<size_t>(type)].Record(absl::Now() -
                                                        command.started_at);
}

pools::DefragProgress Worker::StepSession(DefragSession& session,
                                          absl::Duration budget) {
  const absl::Time start = absl::Now();
  const pools::DefragProgress progress = session.Step(budget);
  stats_.by_origin[static_cast<size_t>(session.origin())].slices.Record(
      absl::Now() - start);
  if (options_.testing_slice_pause > absl::ZeroDuration()) {
    absl::SleepFor(options_.testing_slice_pause);
  }
  return progress;
}

void Worker::NoteOwner(uint32_t owner) {
  if (owner == 0 || owners_.contains(owner)) return;
  if (owners_.size() < kMaxOwners) {
    owners_.insert(owner);
  } else {
    LOG_EVERY_T(WARNING, 60)
        << "worker: more than " << kMaxOwners
        << " client identities allocated; operators cannot reach the "
           "blocks of the newer ones";
  }
}

bool Worker::RunBatchPiece(Command& command, BatchOp& op) {
  const absl::Time start = absl::Now();
  absl::Status stop;
  if (command.IsCancelled()) {
    stop = absl::CancelledError(
        "the client cancelled; this operation of the batch did not run");
  } else if (start >= command.deadline) {
    stop = absl::DeadlineExceededError(
        "the deadline passed before this operation of the batch ran");
  }
  if (stop.ok()) {
    // A piece ends after a slice's time, so that a long batch holds up
    // other commands (and defragmentation slices) no more than a slice
    // does.
    const absl::Time until = start + options_.defrag_slice;
    // The entries' handles are known: their table entries and blocks are
    // fetched ahead, so that their cache misses overlap.
    using Step = pools::SlabPool::PrefetchStep;
    constexpr size_t kEntriesAhead = pools::PoolSet::kPrefetchEntriesAhead;
    constexpr size_t kBlocksAhead = pools::PoolSet::kPrefetchBlocksAhead;
    for (size_t ahead = 0; ahead < kEntriesAhead; ++ahead) {
      PrefetchBatchEntry(op, op.next + ahead, Step::kEntry);
    }
    for (size_t ahead = 0; ahead < kBlocksAhead; ++ahead) {
      PrefetchBatchEntry(op, op.next + ahead, Step::kBlock);
    }
    while (op.next < op.entries.size()) {
      PrefetchBatchEntry(op, op.next + kEntriesAhead, Step::kEntry);
      PrefetchBatchEntry(op, op.next + kBlocksAhead, Step::kBlock);
      // (Nothing to look up while no block is busy: the usual case.)
      if (std::optional<uint64_t> block = busy_blocks_.empty()
                                              ? std::nullopt
                                              : BlockOf(op.entries[op.next]);
          block.has_value() && busy_blocks_.contains(*block)) {
        // The rest of the batch waits for the block (a batch is not
        // refused here: its earlier entries ran).
        waiting_for_block_[*block].push_back(std::move(command));
        ++batches_waiting_for_blocks_;
        return false;
      }
      if (RunBatchEntry(command, op, op.next++)) return false;
      // After every entry: a whole-block Read or the Free of a large block
      // can take long (a vDSO clock read is ~2 % of a small entry's cost).
      if (absl::Now() >= until) break;
    }
  }
  if (!stop.ok()) {
    for (; op.next < op.entries.size(); ++op.next) {
      std::visit([&stop](auto& entry) { CompleteOp(entry, stop); },
                 op.entries[op.next]);
    }
  }
  if (op.next < op.entries.size()) {
    pending_batches_.push_back(std::move(command));
    return false;
  }
  CompleteOp(op, absl::OkStatus());
  return true;
}

bool Worker::RunBatchEntry(Command& command, BatchOp& op, size_t position) {
  BatchEntry& entry = op.entries[position];
  if (AllocateOp* allocate = std::get_if<AllocateOp>(&entry)) {
    ++mutations_;
    NoteOwner(allocate->owner);
    std::optional<absl::StatusOr<pools::BlockInfo>> made =
        AllocateFirstPiece(command, *allocate, position);
    if (!made.has_value()) return true;  // its long copy has the batch
    absl::StatusOr<pools::BlockInfo> block = *std::move(made);
    if (pools::MemoryLimitGrowth(block.status()).has_value()) {
      block = absl::ResourceExhaustedError(absl::StrCat(
          block.status().message(),
          "; an allocation in a batch does not wait for a defragmentation "
          "to make room: retry it, or allocate it alone"));
    }
    CompleteOp(*allocate, std::move(block));
    return false;
  }
  if (op.admit) {
    if (absl::Status refused = op.admit(position); !refused.ok()) {
      std::visit([&refused](auto& e) { CompleteOp(e, refused); }, entry);
      return false;
    }
  }
  if (WriteOp* write = std::get_if<WriteOp>(&entry)) {
    return WriteOrStartCopy(command, *write,
                            Resolve(write->handle, write->any_owner), position);
  }
  if (ReadOp* read = std::get_if<ReadOp>(&entry)) {
    return ReadOrStartCopy(command, *read,
                           Resolve(read->handle, read->any_owner), position);
  }
  ++mutations_;
  Handle(std::get<FreeOp>(entry));
  return false;
}

void Worker::ContinueBatch() {
  Command command = std::move(pending_batches_.front());
  pending_batches_.pop_front();
  NotePieceActivity();
  if (RunBatchPiece(command, std::get<BatchOp>(command.op))) {
    CountCompleted(command);
  }
}

bool Worker::HandleAllocate(Command& command, AllocateOp& op) {
  NoteOwner(op.owner);
  std::optional<absl::StatusOr<pools::BlockInfo>> made =
      AllocateFirstPiece(command, op, LongCopy::kWholeCommand);
  if (!made.has_value()) return true;  // its long copy has it
  absl::StatusOr<pools::BlockInfo> block = *std::move(made);
  const std::optional<uint64_t> growth =
      pools::MemoryLimitGrowth(block.status());
  if (!growth.has_value() || channel_.closed()) {
    CompleteOp(op, std::move(block));
    return false;
  }
  // The memory limit refused it. Compaction may make room; running it here,
  // whole, would stall every other command (DESIGN.md, rule 4), so the
  // allocation waits for the slices of a defragmentation instead (the
  // running one, or MakeRoom's).
  const uint64_t reclaimable = pools_->reclaimable_bytes();
  if (*growth - std::min(*growth, pools_->headroom_bytes()) > reclaimable) {
    CompleteOp(
        op,
        absl::StatusOr<pools::BlockInfo>(absl::ResourceExhaustedError(
            absl::StrCat(block.status().message(),
                         "; a defragmentation would return only ", reclaimable,
                         " bytes: free blocks, or raise "
                         "--memory_limit_bytes"))));
    return false;
  }
  if (waiting_for_room_.size() >= options_.channel_capacity) {
    // Each waiting allocation holds its request's memory: bound them.
    CompleteOp(op,
               absl::StatusOr<pools::BlockInfo>(
                   absl::ResourceExhaustedError(absl::StrCat(
                       block.status().message(), "; ", waiting_for_room_.size(),
                       " allocations already wait for a defragmentation to "
                       "make room; retry later"))));
    return false;
  }
  VLOG(1) << "worker: " << op.size
          << "-byte allocation waits for room: " << block.status();
  waiting_for_room_.push_back(std::move(command));
  return true;
}

uint64_t Worker::Resolve(uint64_t handle, bool any_owner) const {
  if (!any_owner) return handle;
  // An operator's handle: the block's own handle XOR its owner's mask. The
  // mask must be one an Allocate recorded (or none), so that a stale or
  // forged handle stays unknown.
  const std::optional<uint64_t> live = pools_->LiveHandleAt(handle);
  if (!live.has_value()) return handle;
  const uint64_t difference = *live ^ handle;
  const uint32_t mask = static_cast<uint32_t>(difference >> 32);
  if ((difference & 0xFFFFFFFFu) == 0 &&
      (mask == 0 || owners_.contains(mask))) {
    return *live;
  }
  return handle;
}

std::optional<absl::StatusOr<pools::BlockInfo>> Worker::AllocateFirstPiece(
    Command& command, AllocateOp& op, size_t entry) {
  const uint64_t size = op.size != 0 ? op.size : op.data.size();
  // A block whose data, or whose zeros after the data, pass a piece is
  // written in pieces: its first piece of data now, the rest (data, then
  // zeros) by a long copy. (Data longer than the block goes whole, for
  // Allocate's refusal.)
  const bool long_block =
      op.data.size() <= size && (op.data.size() > kCopyPieceBytes ||
                                 size - op.data.size() > kCopyPieceBytes);
  if (!long_block) return pools_->Allocate(size, op.data);
  const absl::string_view first =
      op.data.substr(0, std::min<uint64_t>(op.data.size(), kCopyPieceBytes));
  const absl::string_view rest = op.data.substr(first.size());
  // The bytes after `first` are neither zeroed nor committed first: the
  // copy commits and writes them.
  absl::StatusOr<pools::BlockInfo> block =
      pools_->Allocate(size, first, size - first.size());
  if (!block.ok()) return block;
  StartLongCopy(LongCopy{.command = std::move(command),
                         .entry = entry,
                         .handle = block->handle,
                         .offset = first.size(),
                         .length = size - first.size(),
                         .source = rest,
                         .block = *block});
  return std::nullopt;
}

bool Worker::WaitForBlock(Command& command, uint64_t handle) {
  if (busy_blocks_.empty() || !busy_blocks_.contains(handle)) return false;
  if (commands_waiting_for_blocks_ >= options_.channel_capacity) {
    // Each waiting command holds its request's memory: bound them.
    FailCommand(command,
                absl::ResourceExhaustedError(absl::StrCat(
                    commands_waiting_for_blocks_,
                    " commands already wait for blocks that long reads or "
                    "writes keep busy; retry later")));
    CountCompleted(command);
    return true;
  }
  waiting_for_block_[handle].push_back(std::move(command));
  ++commands_waiting_for_blocks_;
  return true;
}

void Worker::PrefetchBatchEntry(const BatchOp& op, size_t position,
                                pools::SlabPool::PrefetchStep step) const {
  if (position >= op.entries.size()) return;
  const BatchEntry& entry = op.entries[position];
  // (An operator's handle differs from the block's own only in its tag
  // bits: its index names the same entry.)
  if (const ReadOp* read = std::get_if<ReadOp>(&entry)) {
    pools_->Prefetch(read->handle, step);
  } else if (const WriteOp* write = std::get_if<WriteOp>(&entry)) {
    pools_->Prefetch(write->handle, step);
  } else if (const FreeOp* free = std::get_if<FreeOp>(&entry)) {
    // A Free touches the entry, not the block's bytes.
    if (step == pools::SlabPool::PrefetchStep::kEntry) {
      pools_->Prefetch(free->handle, step);
    }
  }
}

std::optional<uint64_t> Worker::BlockOf(const BatchEntry& entry) const {
  return std::visit(
      [this](const auto& op) -> std::optional<uint64_t> {
        if constexpr (std::is_same_v<std::decay_t<decltype(op)>, AllocateOp>) {
          return std::nullopt;
        } else {
          return Resolve(op.handle, op.any_owner);
        }
      },
      entry);
}

bool Worker::HandleWrite(Command& command) {
  WriteOp& op = std::get<WriteOp>(command.op);
  const uint64_t handle = Resolve(op.handle, op.any_owner);
  if (WaitForBlock(command, handle)) return true;
  return WriteOrStartCopy(command, op, handle, LongCopy::kWholeCommand);
}

bool Worker::WriteOrStartCopy(Command& command, WriteOp& op, uint64_t handle,
                              size_t entry) {
  if (op.data.size() <= kCopyPieceBytes) {
    CompleteOp(op, pools_->Write(handle, op.offset, op.data));
    return false;
  }
  // The range is checked before the first byte is written (as Write
  // would check it).
  absl::StatusOr<absl::string_view> whole = pools_->Read(handle, 0, 0);
  if (!whole.ok()) {
    CompleteOp(op, whole.status());
    return false;
  }
  if (op.offset > whole->size() || op.data.size() > whole->size() - op.offset) {
    CompleteOp(
        op, absl::OutOfRangeError(absl::StrCat(
                "writing ", op.data.size(), " bytes at offset ", op.offset,
                " passes the end of the block (", whole->size(), " bytes)")));
    return false;
  }
  const uint64_t offset = op.offset;
  const absl::string_view source = op.data;
  StartLongCopy(LongCopy{.command = std::move(command),
                         .entry = entry,
                         .handle = handle,
                         .offset = offset,
                         .length = source.size(),
                         .source = source});
  return true;
}

bool Worker::HandleRead(Command& command) {
  ReadOp& op = std::get<ReadOp>(command.op);
  const uint64_t handle = Resolve(op.handle, op.any_owner);
  if (WaitForBlock(command, handle)) return true;
  return ReadOrStartCopy(command, op, handle, LongCopy::kWholeCommand);
}

bool Worker::ReadOrStartCopy(Command& command, ReadOp& op, uint64_t handle,
                             size_t entry) {
  absl::StatusOr<absl::string_view> bytes =
      pools_->Read(handle, op.offset, op.length);
  if (!bytes.ok() || (op.destination == nullptr && op.sink == nullptr)) {
    // The view points into pool memory; the callback copies it out before
    // the worker runs anything else.
    CompleteOp(op, std::move(bytes));
    return false;
  }
  char* to = nullptr;
  std::string* sink = nullptr;
  if (op.destination != nullptr) {
    absl::StatusOr<char*> destination = op.destination(bytes->size());
    if (!destination.ok()) {
      CompleteOp(op, absl::StatusOr<absl::string_view>(destination.status()));
      return false;
    }
    to = *destination;
  } else {
    absl::StatusOr<std::string*> appended = op.sink(bytes->size());
    if (!appended.ok()) {
      CompleteOp(op, absl::StatusOr<absl::string_view>(appended.status()));
      return false;
    }
    sink = *appended;
  }
  if (bytes->size() <= kCopyPieceBytes) {
    if (sink != nullptr) {
      sink->append(bytes->data(), bytes->size());
      CompleteOp(op, absl::StatusOr<absl::string_view>(*sink));
    } else {
      if (!bytes->empty()) std::memcpy(to, bytes->data(), bytes->size());
      CompleteOp(op, absl::StatusOr<absl::string_view>(
                         absl::string_view(to, bytes->size())));
    }
    return false;
  }
  const uint64_t offset = op.offset;
  const uint64_t length = bytes->size();
  StartLongCopy(LongCopy{.command = std::move(command),
                         .entry = entry,
                         .handle = handle,
                         .offset = offset,
                         .length = length,
                         .destination = to,
                         .sink = sink});
  return true;
}

bool Worker::HandleFree(Command& command) {
  FreeOp& op = std::get<FreeOp>(command.op);
  const uint64_t handle = Resolve(op.handle, op.any_owner);
  if (WaitForBlock(command, handle)) return true;
  CompleteOp(op, pools_->Free(handle));
  return false;
}

void Worker::StartLongCopy(LongCopy copy) {
  busy_blocks_.insert(copy.handle);
  if (copy.entry != LongCopy::kWholeCommand) ++batches_in_long_copies_;
  if (!RunCopyPiece(copy)) long_copies_.push_back(std::move(copy));
}

bool Worker::RunCopyPiece(LongCopy& copy) {
  Command& command = copy.command;
  const bool whole = copy.entry == LongCopy::kWholeCommand;
  const absl::Time start = absl::Now();
  absl::Status stop;
  // A write, once begun, runs to its end: stopped, it would leave the block
  // half written.
  const bool write =
      whole ? command.type() == CommandType::kWrite
            : std::holds_alternative<WriteOp>(
                  std::get<BatchOp>(command.op).entries[copy.entry]);
  if (!write) {
    if (command.IsCancelled()) {
      stop = absl::CancelledError("the client cancelled");
    } else if (start >= command.deadline) {
      stop = absl::DeadlineExceededError(
          "the deadline passed while the block's bytes were being copied");
    }
  }
  // A piece is as long as a defragmentation slice would be now (a quarter
  // of one while requests keep arriving).
  const absl::Time until = start + SliceBudget(start);
  while (stop.ok() && copy.copied < copy.length) {
    uint64_t n = std::min(kCopyPieceBytes, copy.length - copy.copied);
    const uint64_t at = copy.offset + copy.copied;
    // The block is looked up again for each piece: it is busy (neither
    // written nor freed by anyone else), but the engine may have moved it.
    if (copy.destination != nullptr || copy.sink != nullptr) {
      absl::StatusOr<absl::string_view> bytes =
          pools_->Read(copy.handle, at, n);
      if (!bytes.ok()) {
        stop = bytes.status();
        break;
      }
      if (copy.sink != nullptr) {
        copy.sink->append(bytes->data(), n);
      } else {
        std::memcpy(copy.destination + copy.copied, bytes->data(), n);
      }
    } else {
      // A new block's pages are made resident a piece at a time, each
      // before it is written.
      if (copy.block.handle != 0) {
        stop = pools_->CommitBytes(copy.handle, at, n);
        if (!stop.ok()) break;
      }
      // The source's bytes, then zeros (which fresh pages, just committed,
      // already are).
      if (copy.copied < copy.source.size()) {
        const absl::string_view bytes = copy.source.substr(copy.copied, n);
        stop = pools_->Write(copy.handle, at, bytes);
        if (!stop.ok()) break;
        n = bytes.size();
      } else if (!copy.block.fresh_pages) {
        stop = pools_->Write(copy.handle, at, absl::string_view(zero_piece, n));
        if (!stop.ok()) break;
      }
    }
    copy.copied += n;
    if (absl::Now() >= until) break;
  }
  if (stop.ok() && copy.copied < copy.length) return false;
  const auto complete = [this, &copy, &stop](auto& op) {
    using OpT = std::decay_t<decltype(op)>;
    if constexpr (std::is_same_v<OpT, ReadOp>) {
      const absl::string_view bytes =
          copy.sink != nullptr
              ? absl::string_view(*copy.sink)
              : absl::string_view(copy.destination, copy.length);
      CompleteOp(op, stop.ok() ? absl::StatusOr<absl::string_view>(bytes)
                               : absl::StatusOr<absl::string_view>(stop));
    } else if constexpr (std::is_same_v<OpT, WriteOp>) {
      CompleteOp(op, stop);
    } else if constexpr (std::is_same_v<OpT, AllocateOp>) {
      if (!stop.ok()) {
        // Nobody was told the handle: the block goes. Its fresh pages past
        // the bytes written were never made resident.
        const absl::Status freed =
            copy.block.fresh_pages
                ? pools_->FreeUnfinished(copy.handle, copy.offset + copy.copied)
                : pools_->Free(copy.handle);
        if (!freed.ok()) {
          LOG(WARNING) << "worker: freeing an allocation stopped midway: "
                       << freed;
        }
        CompleteOp(op, absl::StatusOr<pools::BlockInfo>(stop));
      } else {
        CompleteOp(op, absl::StatusOr<pools::BlockInfo>(copy.block));
      }
    } else {
      LOG(FATAL) << "a long copy of a command that copies no block";
    }
  };
  if (whole) {
    std::visit(complete, command.op);
    CountCompleted(command);
  } else {
    // The batch goes on with its next entry, in its turn.
    std::visit(complete, std::get<BatchOp>(command.op).entries[copy.entry]);
    --batches_in_long_copies_;
    pending_batches_.push_back(std::move(command));
  }
  ReleaseBlock(copy.handle);
  return true;
}

void Worker::ContinueLongCopy() {
  LongCopy copy = std::move(long_copies_.front());
  long_copies_.pop_front();
  NotePieceActivity();
  if (!RunCopyPiece(copy)) long_copies_.push_back(std::move(copy));
}

void Worker::NotePieceActivity() {
  last_command_at_ = absl::Now();
  ran_since_maintenance_ = true;
  ran_since_trim_ = true;
}

void Worker::ContinuePieces() {
  // Free memory of large blocks beyond what the large pool retains goes back
  // to the OS a piece at a time too (a 64 MiB madvise takes milliseconds),
  // in turn with the batches' and copies' pieces.
  const bool others = !pending_batches_.empty() || !long_copies_.empty();
  if (pools_->large_purge_due() && (!others || !last_piece_was_purge_)) {
    last_piece_was_purge_ = true;
    const absl::Time now = absl::Now();
    pools_->PurgeLargeDue(now + SliceBudget(now));
    return;
  }
  last_piece_was_purge_ = false;
  if (!others) return;
  const bool copy = !long_copies_.empty() &&
                    (pending_batches_.empty() || !last_piece_was_copy_);
  last_piece_was_copy_ = copy;
  if (copy) {
    ContinueLongCopy();
  } else {
    ContinueBatch();
  }
}

void Worker::ReleaseBlock(uint64_t handle) {
  busy_blocks_.erase(handle);
  auto it = waiting_for_block_.find(handle);
  if (it == waiting_for_block_.end()) return;
  std::deque<Command> waiting = std::move(it->second);
  waiting_for_block_.erase(it);
  // In order; one of them may make the block busy again, and those after
  // it then wait again, still in order.
  for (Command& command : waiting) {
    if (command.type() == CommandType::kBatch) {
      // Its entry on this block runs now, in its turn.
      --batches_waiting_for_blocks_;
      if (RunBatchPiece(command, std::get<BatchOp>(command.op))) {
        CountCompleted(command);
      }
    } else {
      --commands_waiting_for_blocks_;
      Dispatch(command);
    }
  }
}

void Worker::Handle(FreeOp& op) {
  CompleteOp(op, pools_->Free(Resolve(op.handle, op.any_owner)));
}

void Worker::Handle(StatsOp& op) {
  StatsSnapshot snapshot =
      TakeSnapshot(op.include_classes, op.include_defrag_history);
  snapshot.process = ProcessMemory::Read();
  CompleteOp(op, absl::StatusOr<StatsSnapshot>(std::move(snapshot)));
}

StatsSnapshot Worker::TakeSnapshot(bool include_classes,
                                   bool include_defrag_history) const {
  StatsSnapshot snapshot;
  snapshot.taken_at = absl::Now();
  snapshot.pools = pools_->Stats(include_classes);
  snapshot.worker = SnapshotStats();
  snapshot.auto_defrag = SnapshotAutoDefrag();
  if (include_defrag_history) {
    snapshot.recent_defragmentations.assign(recent_reports_.begin(),
                                            recent_reports_.end());
  }
  return snapshot;
}

void Worker::Publish() {
  if (options_.stats_sink == nullptr) return;
  // The reports change only when a run ends: copying and serializing them
  // is most of a publication's cost, so they go out only then.
  uint64_t runs = 0;
  for (const DefragOriginStats& origin : stats_.by_origin) runs += origin.runs;
  const bool history_changed = published_ == 0 || runs != published_runs_;
  published_runs_ = runs;
  StatsSnapshot snapshot =
      TakeSnapshot(/*include_classes=*/true, history_changed);
  snapshot.history_unchanged = !history_changed;
  // Read here, not by each reader: mallinfo2() locks every malloc arena,
  // which a gRPC handler must not wait for.
  snapshot.process = ProcessMemory::Read();
  snapshot.sequence = ++published_;
  options_.stats_sink->Publish(std::move(snapshot));
  next_publish_ = absl::Now() + options_.publish_interval;
}

void Worker::MaybePublish(absl::Time now) {
  if (now >= next_publish_) Publish();
}

void Worker::Handle(AnalyzeOp& op) {
  std::vector<pools::PoolAnalysis> analyses;
  analyses.reserve(op.pools.size());
  for (pools::PoolKind pool : op.pools) {
    analyses.push_back(pools_->Analyze(pool));
  }
  CompleteOp(op, absl::StatusOr<std::vector<pools::PoolAnalysis>>(
                     std::move(analyses)));
}

absl::Duration Worker::SliceBudget(absl::Time now) const {
  // Requests that kept arriving: pause_bench measured p99 of reads during a
  // defragmentation at 1.46 - 1.50 x quiet with this rule, 2.13 x with quarter
  // slices only while a request is queued (readers with think time often
  // leave the queue empty at a slice's end).
  if (channel_.size() > 0 ||
      now - last_command_at_ < 8 * options_.defrag_slice) {
    return std::min(options_.defrag_slice, std::max(options_.defrag_slice / 4,
                                                    absl::Microseconds(10)));
  }
  return options_.defrag_slice;
}

void Worker::ServeBetweenSlices(absl::Time limit) {
  const absl::Time until = std::min(absl::Now() + options_.defrag_slice, limit);
  while (absl::Now() < until) {
    std::optional<Command> next = channel_.TryReceive();
    if (!next.has_value()) break;
    if (std::holds_alternative<DefragOp>(next->op)) {
      pending_defrags_.push_back(std::move(*next));  // waits its turn
    } else {
      Execute(*next);
    }
  }
  // Batches and long copies go on between slices too, a piece at a time.
  if (pieces_pending() && absl::Now() < limit) ContinuePieces();
}

pools::DefragStopReason Worker::RunSlices(DefragSession& session,
                                          absl::Time stop_at,
                                          const Command* command) {
  using pools::DefragStopReason;
  absl::Duration slice = SliceBudget(absl::Now());
  while (true) {
    // Neither a slice nor the serving between slices may run past stop_at:
    // the partial report must still reach the client in time.
    const absl::Duration left = stop_at - absl::Now();
    if (left <= absl::ZeroDuration()) return DefragStopReason::kDeadline;
    if (StepSession(session, std::min(slice, left)).done) {
      return DefragStopReason::kFinished;
    }
    RetryWaitingForRoom(std::min(absl::Now() + options_.defrag_slice, stop_at));
    // Let gRPC's threads run: on few cores, a worker that goes from slice to
    // slice keeps the threads that receive and answer requests off the CPU
    // (pause_bench on 2 cores: p99 of reads during a defragmentation 4.5 ms
    // without this, 2.5 ms with it).
    std::this_thread::yield();
    slice = SliceBudget(absl::Now());
    ServeBetweenSlices(stop_at);
    MaybePublish(absl::Now());
    if (command != nullptr && command->IsCancelled()) {
      return DefragStopReason::kCancelled;
    }
    if (absl::Now() >= stop_at) return DefragStopReason::kDeadline;
    if (channel_.closed()) return DefragStopReason::kShutdown;
    if (session.origin() == pools::DefragOrigin::kMemoryLimit &&
        waiting_for_room_.empty()) {
      return DefragStopReason::kNoneWaiting;
    }
  }
}

void Worker::MakeRoom() {
  pools::DefragStopReason stop_reason = pools::DefragStopReason::kFinished;
  if (auto_session_.has_value()) {
    EndAutoDefrag(pools::DefragStopReason::kPreempted);
  }
  if (pools_->reclaimable_bytes() > 0) {
    DefragSession session(*pools_, pools::DefragOrigin::kMemoryLimit);
    CHECK(session.Begin({}).ok());
    stop_reason = RunSlices(session, absl::InfiniteFuture(), nullptr);
    FinishSession(session, stop_reason);
  }
  const bool shutting_down = stop_reason == pools::DefragStopReason::kShutdown;
  while (!waiting_for_room_.empty()) {
    Command command = std::move(waiting_for_room_.front());
    waiting_for_room_.pop_front();
    if (std::optional<absl::Status> refusal = TryAnswerWaiting(command)) {
      CompleteOp(
          std::get<AllocateOp>(command.op),
          absl::StatusOr<pools::BlockInfo>(
              shutting_down ? absl::UnavailableError(
                                  "the server is shutting down; the allocation "
                                  "was waiting for room under the memory limit")
                            : absl::ResourceExhaustedError(absl::StrCat(
                                  refusal->message(),
                                  "; still after a defragmentation: free "
                                  "blocks, or raise --memory_limit_bytes"))));
      CountCompleted(command);
    }
  }
  Publish();
}

std::optional<absl::Status> Worker::TryAnswerWaiting(Command& command) {
  AllocateOp& op = std::get<AllocateOp>(command.op);
  if (command.IsCancelled()) {
    CompleteOp(op, absl::StatusOr<pools::BlockInfo>(
                       absl::CancelledError("the client cancelled")));
    CountCompleted(command);
    return std::nullopt;
  }
  if (absl::Now() >= command.deadline) {
    CompleteOp(op, absl::StatusOr<pools::BlockInfo>(absl::DeadlineExceededError(
                       "the deadline passed while the allocation waited for "
                       "a defragmentation to make room under the memory "
                       "limit")));
    CountCompleted(command);
    return std::nullopt;
  }
  std::optional<absl::StatusOr<pools::BlockInfo>> made =
      AllocateFirstPiece(command, op, LongCopy::kWholeCommand);
  if (!made.has_value()) return std::nullopt;  // its long copy has it
  if (pools::MemoryLimitGrowth(made->status()).has_value()) {
    return made->status();  // nothing changed; it may wait on
  }
  CompleteOp(op, *std::move(made));
  CountCompleted(command);
  return std::nullopt;
}

void Worker::RetryWaitingForRoom(absl::Time until) {
  std::deque<Command> still_waiting;
  while (!waiting_for_room_.empty() && absl::Now() < until) {
    Command command = std::move(waiting_for_room_.front());
    waiting_for_room_.pop_front();
    if (TryAnswerWaiting(command).has_value()) {
      still_waiting.push_back(std::move(command));
    }
  }
  // Those not tried in time keep their place behind those tried.
  for (Command& command : waiting_for_room_) {
    still_waiting.push_back(std::move(command));
  }
  waiting_for_room_ = std::move(still_waiting);
}

bool Worker::RunDefrag(const Command& command, DefragOp& op) {
  const absl::Time start = absl::Now();
  if (auto_session_.has_value()) {
    EndAutoDefrag(pools::DefragStopReason::kPreempted);
  }
  DefragSession session(*pools_, pools::DefragOrigin::kRpc);
  if (absl::Status status = session.Begin(op.pools); !status.ok()) {
    CompleteOp(op, absl::StatusOr<pools::DefragReport>(status));
    return false;
  }
  const pools::DefragStopReason stop_reason =
      RunSlices(session, StopTime(start, command.deadline), &command);
  pools::DefragReport report = FinishSession(session, stop_reason);
  const bool trim_after =
      report.stop_reason == pools::DefragStopReason::kDeadline;
  // A client that reads the statistics after this answer sees the run,
  // this command counted among the completed ones.
  CountCompleted(command);
  Publish();
  if (command.IsCancelled()) {
    CompleteOp(op, absl::StatusOr<pools::DefragReport>(absl::CancelledError(
                       "the client cancelled; the defragmentation stopped at "
                       "a slice boundary")));
  } else {
    CompleteOp(op, absl::StatusOr<pools::DefragReport>(std::move(report)));
  }
  // Stopped for its deadline, it answered before returning what it emptied.
  if (trim_after) ReturnEmptiedAfterTheAnswer();
  return true;
}

void Worker::ReturnEmptiedAfterTheAnswer() {
  const uint64_t released = pools_->TrimCaches();
  if (released == 0) return;
  stats_.total_bytes_reclaimed += released;
  Publish();
  LOG(INFO) << "defragmentation stopped at its deadline: returned " << released
            << " more bytes it had emptied, after answering (counted in "
               "total_bytes_reclaimed, not in its report)";
}

pools::DefragReport Worker::FinishSession(DefragSession& session,
                                          pools::DefragStopReason reason) {
  // A run stopped by its deadline answers at once: trimming the heap can
  // take longer than the time kept in hand, and the idle maintenance trims
  // it soon after anyway. An automatic run ends every few hundred
  // milliseconds under churn, while clients wait for the worker, and a trim
  // walks the whole heap (0.4 to 1.3 ms in churn_bench): it trims only when
  // the heap grew enough since the last trim to be worth it.
  pools::DefragReport report = session.End(
      reason,
      [this, reason, &session]() -> uint64_t {
        if (reason == pools::DefragStopReason::kDeadline) return 0;
        if (session.origin() == pools::DefragOrigin::kAutomatic &&
            (!options_.trim_heap ||
             !HeapGrewSinceTrim(kOutsideGrowthBeforeTrim))) {
          return 0;
        }
        return TrimHeap();
      },
      stats_);
  // Nobody waits for the report of a run of another origin: return what it
  // emptied now (an RPC's run does so after answering).
  if (report.stop_reason == pools::DefragStopReason::kDeadline &&
      session.origin() != pools::DefragOrigin::kRpc) {
    stats_.total_bytes_reclaimed += pools_->TrimCaches();
  }
  if (options_.report_history > 0) {
    if (recent_reports_.size() >= options_.report_history) {
      recent_reports_.pop_front();
    }
    recent_reports_.push_back(report);
  }
  return report;
}

void Worker::MaybeStartAutoDefrag(absl::Time now) {
  const AutoDefragOptions& policy = options_.auto_defrag;
  if (auto_session_.has_value() || pools_->defrag_running() ||
      now < next_auto_look_ || channel_.closed()) {
    return;
  }
  if (!AutoDefragWantsLook(policy, auto_history_, mutations_, now)) return;
  auto_decision_ = DecideAutoDefrag(
      policy, auto_history_,
      AutoDefragInput{
          .now = now, .mutations = mutations_, .stats = pools_->Stats(false)});
  next_auto_look_ = auto_decision_.next_look;
  if (!auto_decision_.run) {
    VLOG(1) << "automatic defragmentation: no run: " << auto_decision_.reason;
    return;
  }
  LOG(INFO) << "automatic defragmentation: " << auto_decision_.reason;
  auto_session_.emplace(*pools_, pools::DefragOrigin::kAutomatic);
  CHECK(auto_session_->Begin(auto_decision_.pools).ok());
  auto_aimed_bytes_ = auto_decision_.aimed_bytes;
  auto_cpu_share_ = auto_decision_.cpu_share;
  auto_cpu_at_start_ = auto_cpu_;
  next_auto_slice_ = now;
}

void Worker::RunAutoSlice() {
  // A client's command waits for at most this slice: a quarter of the
  // budget while requests keep arriving, as in RunSlices.
  const absl::Duration slice = SliceBudget(absl::Now());
  const absl::Duration cpu_before = ThreadCpuTime();
  const pools::DefragProgress progress = StepSession(*auto_session_, slice);
  const absl::Duration cpu = ThreadCpuTime() - cpu_before;
  auto_cpu_ += cpu;
  if (progress.done) {
    EndAutoDefrag(pools::DefragStopReason::kFinished);
    return;
  }
  const std::string target =
      AutoDefragStopReason(options_.auto_defrag, pools_->Stats(false).total);
  if (!target.empty()) {
    VLOG(1) << "automatic defragmentation: " << target;
    EndAutoDefrag(pools::DefragStopReason::kTargetReached);
    return;
  }
  // Within the budget: this slice's CPU time is share of the time until the
  // next one.
  next_auto_slice_ =
      absl::Now() + cpu * ((1 - auto_cpu_share_) / auto_cpu_share_);
}

void Worker::EndAutoDefrag(pools::DefragStopReason reason) {
  const pools::DefragReport report = FinishSession(*auto_session_, reason);
  auto_session_.reset();
  auto_bytes_reclaimed_ += report.bytes_reclaimed;
  const absl::Time now = absl::Now();
  RecordAutoDefragRun(options_.auto_defrag, auto_history_, report,
                      auto_aimed_bytes_, pools_->Stats(false).total,
                      auto_cpu_ - auto_cpu_at_start_, now);
  if (auto_history_.poor_runs > 0) {
    // The back-off is the policy's decision now: GetStats says why.
    auto_decision_.state = AutoDefragState::kBackingOff;
    auto_decision_.run = false;
    auto_decision_.decided_at = now;
    auto_decision_.next_look = auto_history_.backoff_until;
    auto_decision_.reason =
        absl::StrCat("backing off after ", auto_history_.poor_runs,
                     " poor run(s) in a row: ", auto_history_.last_poor_reason);
    LOG(INFO) << "automatic defragmentation: " << auto_decision_.reason
              << "; no run before "
              << absl::FormatTime(auto_history_.backoff_until)
              << " unless fragmentation climbs past twice the start threshold";
  }
  // Look again at the next tick: a look says where the run left things,
  // and (backing off) whether fragmentation is climbing past the ceiling.
  next_auto_look_ = now;
  Publish();
}

AutoDefragStats Worker::SnapshotAutoDefrag() const {
  AutoDefragStats stats;
  const absl::Time now = absl::Now();
  if (!options_.auto_defrag.enabled) {
    stats.state = AutoDefragState::kDisabled;
  } else if (auto_session_.has_value()) {
    stats.state = AutoDefragState::kRunning;
  } else if (now < auto_history_.backoff_until) {
    stats.state = AutoDefragState::kBackingOff;
  } else {
    stats.state = AutoDefragState::kIdle;
  }
  stats.last_decision = auto_decision_.reason;
  stats.last_decision_ran = auto_decision_.run;
  stats.last_decision_at = auto_decision_.decided_at;
  stats.next_look_at =
      options_.auto_defrag.enabled ? next_auto_look_ : absl::InfiniteFuture();
  stats.runs = auto_history_.runs;
  stats.bytes_reclaimed = auto_bytes_reclaimed_;
  stats.cpu_time = auto_cpu_;
  stats.cpu_share = auto_cpu_share_;
  stats.poor_runs = static_cast<uint64_t>(auto_history_.poor_runs);
  return stats;
}

WorkerStats Worker::SnapshotStats() const {
  WorkerStats stats = stats_;
  stats.queue_depth = channel_.size();
  stats.channel_capacity = channel_.capacity();
  stats.refused = refused_.load(std::memory_order_relaxed);
  stats.allocations_waiting_for_room = waiting_for_room_.size();
  stats.long_copies_in_progress = long_copies_.size();
  stats.commands_waiting_for_blocks =
      commands_waiting_for_blocks_ + batches_waiting_for_blocks_;
  return stats;
}

}  // namespace poold
