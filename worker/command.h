// Command: one request for the worker thread, as a value. It carries the
// inputs of one RPC and one completion callback that the worker calls exactly
// once (DESIGN.md, rule 2).
#ifndef POOLD_WORKER_COMMAND_H_
#define POOLD_WORKER_COMMAND_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "worker/pools/block_info.h"
#include "worker/pools/defrag_report.h"
#include "worker/pools/pool_analysis.h"
#include "worker/pools/pool_kind.h"
#include "worker/worker_stats.h"

namespace poold {

// A completion callback: called once, on the worker thread (or on the sending
// thread when the command is refused), with the result of the command.
template <typename Result>
using Done = absl::AnyInvocable<void(Result) &&>;

// Allocates a block of `size` bytes (> 0) and copies `data` (at most `size`
// bytes) to its start. Data (or zeros after it) of more than
// Worker::kCopyPieceBytes is copied in pieces between other commands (in a
// batch too), and `done` runs after the last one.
//
// Owners: a caller with an identity (mutual TLS) sees handles whose upper
// 32 bits are XORed with its owner mask (the server applies it both ways),
// so another identity's handles are unknown to it. `owner` records the mask
// so that operators (`any_owner` below) can reach the block.
struct AllocateOp {
  uint64_t size = 0;
  absl::string_view data;  // points into the RPC request
  uint32_t owner = 0;
  Done<absl::StatusOr<pools::BlockInfo>> done;
};

// Overwrites bytes [offset, offset + data.size()) of a block. More than
// Worker::kCopyPieceBytes are copied in pieces between other commands (in a
// batch too); commands that name the block wait until the last one.
struct WriteOp {
  uint64_t handle = 0;
  // The handle may carry the mask of any owner that allocated (an
  // operator's call); the worker finds the block whatever the mask.
  bool any_owner = false;
  uint64_t offset = 0;
  absl::string_view data;  // points into the RPC request
  Done<absl::Status> done;
};

// Where a Read's bytes go: called once on the worker thread, with the
// read's length once its range is checked. Returns a buffer of that many
// bytes that stays valid until the read's `done` has run, or the error that
// completes the read instead.
using ReadDestination = absl::AnyInvocable<absl::StatusOr<char*>(uint64_t)>;

// Where a Read's bytes go, appended: called once on the worker thread, with
// the read's length once its range is checked. Returns a string (empty, with
// room reserved for that many bytes, so that appending them moves nothing)
// that stays valid until the read's `done` has run, or the error that
// completes the read instead.
using ReadSink = absl::AnyInvocable<absl::StatusOr<std::string*>(uint64_t)>;

// Reads `length` bytes (0: to the end) of a block from `offset`.
//
// With a `destination`, the worker copies the bytes there and passes `done`
// a view of that buffer. With a `sink` (and no destination), it appends them
// to the string the sink returns and passes `done` a view of that string.
// Either way, more than Worker::kCopyPieceBytes are copied in pieces between
// other commands (in a batch too); the block stays as it was meanwhile:
// commands that name it wait until the copy is over.
// With neither, the view passed to `done` points into pool memory and is
// valid only during the call.
struct ReadOp {
  uint64_t handle = 0;
  // The handle may carry the mask of any owner that allocated (an
  // operator's call); the worker finds the block whatever the mask.
  bool any_owner = false;
  uint64_t offset = 0;
  uint64_t length = 0;
  ReadDestination destination = nullptr;
  ReadSink sink = nullptr;
  Done<absl::StatusOr<absl::string_view>> done;
};

// Frees a block.
struct FreeOp {
  uint64_t handle = 0;
  // The handle may carry the mask of any owner that allocated (an
  // operator's call); the worker finds the block whatever the mask.
  bool any_owner = false;
  Done<absl::Status> done;
};

// Takes a snapshot of the engine's and the worker's statistics (with the
// last defragmentation reports when include_defrag_history).
struct StatsOp {
  bool include_classes = false;
  bool include_defrag_history = false;
  Done<absl::StatusOr<StatsSnapshot>> done;
};

// Analyses fragmentation of `pools` (distinct, not empty) without changing
// anything.
struct AnalyzeOp {
  std::vector<pools::PoolKind> pools;
  Done<absl::StatusOr<std::vector<pools::PoolAnalysis>>> done;
};

// Defragments `pools` (distinct, not empty).
struct DefragOp {
  std::vector<pools::PoolKind> pools;
  Done<absl::StatusOr<pools::DefragReport>> done;
};

// One operation of a batch: the op of the unary RPC it stands for, with a
// completion callback of its own.
using BatchEntry = std::variant<AllocateOp, WriteOp, ReadOp, FreeOp>;

// Runs `entries` in order, as one command: each entry's own `done` is called
// once, in order, on the worker thread; then `done` (OK). A long batch runs
// in pieces of at most a defragmentation slice's time, and the worker serves
// other commands between them; an entry that copies more than
// Worker::kCopyPieceBytes is itself copied in pieces, and the batch goes on
// after it. When the client cancels or the deadline passes in the middle,
// the entries not run yet are completed with CANCELLED or
// DEADLINE_EXCEEDED, then `done` (OK); so is a Read or Allocate entry in
// the middle of its copy (the Allocate's block is freed), while a Write
// entry, once begun, completes. When the whole batch is
// refused before any entry ran (channel full, shutting down, cancelled or
// past its deadline before it began), only `done` is called, with that
// error. An allocation that the memory limit refuses is answered
// RESOURCE_EXHAUSTED: it does not wait for a defragmentation, which would
// hold up the entries behind it.
// While the worker holds more than channel_capacity batches begun and not
// finished, a new one is refused whole (RESOURCE_EXHAUSTED).
struct BatchOp {
  std::vector<BatchEntry> entries;
  // Called on the worker thread right before each entry that names a handle
  // (Write, Read, Free) runs, with the entry's position; an error status
  // completes the entry with it instead of running it. May be empty.
  absl::AnyInvocable<absl::Status(size_t entry)> admit;
  // Entries run so far (the worker's place in a batch cut into pieces).
  size_t next = 0;
  Done<absl::Status> done;
};

struct Command {
  // One alternative per RPC, in CommandType order.
  using Op = std::variant<AllocateOp, WriteOp, ReadOp, FreeOp, StatsOp,
                          AnalyzeOp, DefragOp, BatchOp>;

  // The command is completed with DEADLINE_EXCEEDED when it has not run by
  // then.
  absl::Time deadline = absl::InfiniteFuture();
  // Set by Worker::Submit, and when the worker began it: for the
  // queue-wait and service-time histograms.
  absl::Time queued_at = absl::InfinitePast();
  absl::Time started_at = absl::InfinitePast();
  // Set by the RPC when the client cancels; may be null. Owned by the RPC,
  // which outlives the command until its completion callback has run.
  const std::atomic<bool>* cancelled = nullptr;
  Op op;

  CommandType type() const { return static_cast<CommandType>(op.index()); }

  bool IsCancelled() const {
    return cancelled != nullptr && cancelled->load(std::memory_order_acquire);
  }
};

static_assert(std::variant_size_v<Command::Op> == kCommandTypeCount);
static_assert(
    std::is_same_v<std::variant_alternative_t<
                       static_cast<size_t>(CommandType::kFree), Command::Op>,
                   FreeOp>);
static_assert(std::is_same_v<
              std::variant_alternative_t<
                  static_cast<size_t>(CommandType::kTriggerDefragmentation),
                  Command::Op>,
              DefragOp>);
static_assert(
    std::is_same_v<std::variant_alternative_t<
                       static_cast<size_t>(CommandType::kBatch), Command::Op>,
                   BatchOp>);

// Calls `op.done` with `result` and empties it, so that a second completion
// is caught. REQUIRES: `op` was not completed yet.
template <typename OpT, typename Result>
void CompleteOp(OpT& op, Result&& result) {
  auto done = std::exchange(op.done, nullptr);
  CHECK(done != nullptr) << "a command was completed twice";
  std::move(done)(std::forward<Result>(result));
}

// Completes `command` with the error `status`, whatever its op.
// REQUIRES: !status.ok(); `command` was not completed yet.
inline void FailCommand(Command& command, const absl::Status& status) {
  DCHECK(!status.ok());
  std::visit([&status](auto& op) { CompleteOp(op, status); }, command.op);
}

}  // namespace poold

#endif  // POOLD_WORKER_COMMAND_H_
