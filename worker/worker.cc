// Worker: the command loop and the per-op handlers.
#include "worker/worker.h"

#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace poold {
namespace {

absl::Status NotWired(CommandType type) {
  return absl::UnimplementedError(
      absl::StrCat(CommandTypeName(type),
                   " not implemented: the pool engine is not wired in"));
}

}  // namespace

Worker::Worker(const Options& options)
    : channel_(options.channel_capacity),
      paused_(options.start_paused),
      thread_([this] { Run(); }) {}

Worker::~Worker() { Stop(); }

bool Worker::Submit(Command command) {
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
  while (std::optional<Command> command = channel_.Receive()) {
    Execute(*command);
  }
  VLOG(1) << "worker: channel closed and drained";
}

void Worker::WaitWhilePaused() {
  std::unique_lock<std::mutex> lock(pause_mu_);
  pause_cv_.wait(lock, [this] { return !paused_; });
}

void Worker::Execute(Command& command) {
  const CommandType type = command.type();
  VLOG(2) << "worker: running " << CommandTypeName(type);
  if (command.IsCancelled()) {
    FailCommand(command, absl::CancelledError("the client cancelled"));
  } else if (absl::Now() >= command.deadline) {
    FailCommand(command, absl::DeadlineExceededError(
                             "the deadline passed before the command ran"));
  } else {
    std::visit([this](auto& op) { Handle(op); }, command.op);
  }
  // After completion the RPC may be gone: touch nothing but our own counters.
  ++stats_.completed_of(type);
}

void Worker::Handle(AllocateOp& op) {
  CompleteOp(op, NotWired(CommandType::kAllocate));
}

void Worker::Handle(WriteOp& op) {
  CompleteOp(op, NotWired(CommandType::kWrite));
}

void Worker::Handle(ReadOp& op) {
  CompleteOp(op, NotWired(CommandType::kRead));
}

void Worker::Handle(FreeOp& op) {
  CompleteOp(op, NotWired(CommandType::kFree));
}

void Worker::Handle(StatsOp& op) {
  // With the engine: StatsSnapshot{pool_set.Stats(op.include_classes),
  // SnapshotStats()}.
  CompleteOp(op, NotWired(CommandType::kGetStats));
}

void Worker::Handle(AnalyzeOp& op) {
  CompleteOp(op, NotWired(CommandType::kAnalyzeFragmentation));
}

void Worker::Handle(DefragOp& op) {
  CompleteOp(op, NotWired(CommandType::kTriggerDefragmentation));
}

WorkerStats Worker::SnapshotStats() const {
  WorkerStats stats = stats_;
  stats.queue_depth = channel_.size();
  stats.channel_capacity = channel_.capacity();
  stats.refused = refused_.load(std::memory_order_relaxed);
  return stats;
}

}  // namespace poold
