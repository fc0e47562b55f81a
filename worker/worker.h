// Worker: the thread that owns the pools and runs every Command, and the
// channel that feeds it.
#ifndef POOLD_WORKER_WORKER_H_
#define POOLD_WORKER_WORKER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "worker/auto_defrag_policy.h"
#include "worker/channel.h"
#include "worker/command.h"
#include "worker/defrag_session.h"
#include "worker/pools/pool_set.h"
#include "worker/stats_sink.h"
#include "worker/worker_stats.h"

namespace poold {

// Runs Commands one at a time on its own thread, in the order the channel
// delivers them (but for the waits below), and completes each exactly once:
//   - CANCELLED when the client cancelled before it ran,
//   - DEADLINE_EXCEEDED when its deadline passed before it ran,
//   - otherwise with the result of the op on the pool engine, which the
//     worker thread owns alone (DESIGN.md rule 1).
// A defragmentation runs in slices of `defrag_slice` (a quarter of it while
// requests keep arriving, until none came for 8 slices); between two slices the
// worker serves the commands queued meanwhile (for up to a slice's time), so
// reads and writes keep flowing. Defragmentations that arrive while one runs
// wait their turn, in order. A defragmentation stops at a slice boundary when
// its client cancels, when its deadline is near (so the partial report can
// still reach the client) or when the worker stops; its report then says
// complete: false.
// A batch (BatchOp) is one command: its entries run in order, in pieces of
// at most defrag_slice, and the commands that arrived meanwhile (and the
// pieces of other batches) run between its pieces.
// A Read (with a destination or a sink), Write or Allocate of more than
// kCopyPieceBytes, alone or in a batch, copies its bytes the same way: in
// pieces of at most a slice's budget (see SliceBudget), with other commands
// between them (its batch waits for the copy's end). Its block is busy until
// the copy is over: a command or batch entry that names it waits (up to
// channel_capacity of them; beyond, RESOURCE_EXHAUSTED) and runs, in order,
// once it is done.
// With options.auto_defrag.enabled, the worker also defragments on its own:
// at each maintenance tick after the look interval, AutoDefragPolicy decides
// from the pools' statistics whether a run pays, and a run then goes one
// slice at a time, paced so that its CPU time stays within the decided
// share of a core; between its slices the worker serves commands as they
// come. It gives way at once (stops at the slice boundary, report PREEMPTED)
// to a TriggerDefragmentation or a memory-limit run.
// An allocation that --memory_limit_bytes refuses while compaction could make
// room waits (up to channel_capacity of them) for a defragmentation of every
// pool, run in slices like the others: it is retried after each slice and
// answered as soon as it fits, at its deadline or cancellation, or with
// RESOURCE_EXHAUSTED when the defragmentation ends without room.
//
// Submit is thread-safe and never blocks; Stop is called by the owner.
class Worker {
 public:
  // A Read, Write or Allocate that copies more bytes than this is a long
  // copy (below); it reads the clock after each this many bytes (tens of
  // microseconds).
  static constexpr uint64_t kCopyPieceBytes = 256 << 10;

  struct Options {
    // Commands the channel holds; further Submits are refused. > 0.
    size_t channel_capacity = 1024;
    // TESTING ONLY: the thread takes no command until Resume() or Stop(), so
    // the channel fills up deterministically.
    bool start_paused = false;
    // Time budget of one defragmentation slice.
    absl::Duration defrag_slice = absl::Milliseconds(1);
    // How often the worker hands memory cached longer than the engine's
    // cache_decay back to the OS (also when idle).
    absl::Duration maintenance_interval = absl::Milliseconds(100);
    // Whether the worker hands the free pages of the process's malloc heap
    // (what gRPC and protobuf freed after large messages) back to the OS:
    // at the end of every defragmentation, and once the worker has been idle
    // for a maintenance interval after running commands.
    bool trim_heap = true;
    // Automatic defragmentation (off unless enabled).
    AutoDefragOptions auto_defrag = AutoDefragOptions();
    // Defragmentation reports kept for GetStats (newest last), any origin.
    size_t report_history = 32;
    // Where the worker publishes its statistics (classes and report history
    // included): from the constructor, then every publish_interval while it
    // runs (also between defragmentation slices), and at the end of every
    // defragmentation, before its answer. Not owned; must outlive the
    // Worker. Null: never.
    StatsSink* stats_sink = nullptr;
    absl::Duration publish_interval = absl::Milliseconds(100);
    // TESTING ONLY: the worker sleeps this long after every defragmentation
    // slice, serving nothing meanwhile, so that an end-to-end test can make
    // a defragmentation outlast its deadline whatever the machine's speed.
    absl::Duration testing_slice_pause = absl::ZeroDuration();
  };

  // Takes ownership of `pools`, publishes the first statistics snapshot
  // (when options.stats_sink is set) and starts the worker thread, which from
  // then on is the only thread that touches them.
  // REQUIRES: options.channel_capacity > 0; pools != nullptr.
  Worker(const Options& options, std::unique_ptr<pools::PoolSet> pools);

  // Stops the worker (see Stop) if that was not done yet.
  ~Worker();

  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Hands `command` to the worker thread and returns true. When the channel
  // is full, completes `command` at once on the calling thread with
  // RESOURCE_EXHAUSTED (counted in WorkerStats::refused) and returns false;
  // after Stop() began, completes it with UNAVAILABLE and returns false.
  // Either way the completion callback runs exactly once. Thread-safe; never
  // blocks beyond a short critical section.
  bool Submit(Command command);

  // Lets a worker started with `start_paused` take commands. Thread-safe.
  void Resume();

  // Closes the channel (every later Submit is refused with UNAVAILABLE),
  // lets the thread complete every command still queued, and joins it.
  // Idempotent. Call from the owning thread, not from a completion callback.
  void Stop();

  // True once Stop() began (every later Submit is refused). Thread-safe.
  bool stopping() const { return channel_.closed(); }

  // Commands waiting now, and the channel's capacity. Thread-safe.
  size_t queue_depth() const { return channel_.size(); }
  size_t channel_capacity() const { return channel_.capacity(); }

 private:
  // Thread body: waits while paused, then runs commands (and the periodic
  // maintenance) until the channel is closed and drained.
  void Run();
  // Releases stale cached memory when the maintenance interval has passed,
  // and trims the heap when idle after activity. `now`: the time now.
  void MaybeMaintain(absl::Time now);
  // Trims the process's malloc heap (when options_.trim_heap) and counts
  // it; returns the RSS it released.
  uint64_t TrimHeap();
  // The process's resident bytes outside the pools (gRPC, protobuf, code,
  // stacks) now.
  uint64_t OutsidePoolsBytes() const;
  // Whether the RSS outside the pools grew by kOutsideGrowthBeforeTrim, or
  // malloc's free bytes by `free_threshold`, since the last trim, so that a
  // trim has something to return (a /proc read and a walk of malloc's
  // bins). (RSS grows by memory still in use as well, which a trim cannot
  // return: hence the larger threshold.)
  bool HeapGrewSinceTrim(uint64_t free_threshold) const;
  void WaitWhilePaused();
  // Completes `command` exactly once: here, or, for an allocation that
  // waits for room under the memory limit, later (it is moved out of
  // `command`). Worker thread only.
  void Execute(Command& command);
  // Execute without the queue-wait accounting: for a command that waited
  // for a busy block.
  void Dispatch(Command& command);

  // Counts `command` as completed, with its service time. Worker thread
  // only.
  void CountCompleted(const Command& command);
  // session.Step(budget), with the slice's duration counted.
  pools::DefragProgress StepSession(DefragSession& session,
                                    absl::Duration budget);

  // Allocates, or, when the memory limit refuses the block and compaction
  // could make room, parks `command` in waiting_for_room_ (completed later
  // by ServeWaitingForRoom) and returns true. Worker thread only.
  bool HandleAllocate(Command& command, AllocateOp& op);
  // Records `owner` (not 0) as one that allocated, so that operators can
  // reach its blocks; at most kMaxOwners of them.
  void NoteOwner(uint32_t owner);
  // Runs entries of `command`'s batch `op` from op.next for about a slice's
  // time (or completes the rest with CANCELLED or DEADLINE_EXCEEDED). Returns
  // true when the batch is complete; false when entries are left, in which
  // case `command` was moved to the back of pending_batches_ (or, when the
  // next entry names a busy block, to the commands waiting for it; or into
  // the long copy of an entry, which puts it back among pending_batches_
  // when it ends).
  bool RunBatchPiece(Command& command, BatchOp& op);
  // Runs the entry at `position` of `command`'s batch `op` (after op.admit,
  // for one that names a handle). Returns true when the entry's bytes go on
  // in a long copy, which took `command`: the batch goes on once the copy
  // is over.
  bool RunBatchEntry(Command& command, BatchOp& op, size_t position);
  // Runs the next piece of the batch at the front of pending_batches_.
  void ContinueBatch();
  // One handler per op; each completes `op` exactly once. Worker thread only.
  void Handle(FreeOp& op);
  // The unary commands that name a block: each completes `command` (and
  // returns false), or takes it (returns true): it waits for its busy
  // block, or its copy goes on in pieces, and is completed and counted
  // later.
  bool HandleWrite(Command& command);
  bool HandleRead(Command& command);
  bool HandleFree(Command& command);
  // Writes or reads the block `handle` (not busy) for `op`, which is
  // `command`'s op or, with `entry` != LongCopy::kWholeCommand, that entry
  // of its batch. Completes `op` and returns false; or, when more than
  // kCopyPieceBytes are to be copied, starts a long copy, which takes
  // `command`, and returns true.
  bool WriteOrStartCopy(Command& command, WriteOp& op, uint64_t handle,
                        size_t entry);
  bool ReadOrStartCopy(Command& command, ReadOp& op, uint64_t handle,
                       size_t entry);
  // When `handle` is busy, takes `command`: it waits for the block
  // (returns true), or, past channel_capacity waiting, is completed with
  // RESOURCE_EXHAUSTED and counted (returns true as well).
  bool WaitForBlock(Command& command, uint64_t handle);
  // Allocates the block of `op` (`command`'s op, or its batch's entry
  // `entry`) with its data, or with the first kCopyPieceBytes of it when it
  // is longer: then the rest goes on in a long copy, which takes `command`,
  // and this returns nullopt. Otherwise returns the result, leaving
  // `command` to the caller.
  std::optional<absl::StatusOr<pools::BlockInfo>> AllocateFirstPiece(
      Command& command, AllocateOp& op, size_t entry);
  // A batch entry's block, as the engine knows it; nullopt for an Allocate.
  std::optional<uint64_t> BlockOf(const BatchEntry& entry) const;
  // Hints the CPU to fetch what entry `position` of `op` will touch (step
  // kEntry, then kBlock some entries later), so that the table entries and
  // blocks of a batch's random handles arrive while earlier entries run
  // instead of one cache miss after another. Entries past the end and
  // Allocates are skipped.
  void PrefetchBatchEntry(const BatchOp& op, size_t position,
                          pools::SlabPool::PrefetchStep step) const;

  // A Read, Write or Allocate whose bytes are copied in pieces: a unary
  // command, or an entry of a batch (which waits for the copy's end).
  struct LongCopy {
    static constexpr size_t kWholeCommand = ~size_t{0};
    Command command;
    // The batch entry copied, or kWholeCommand.
    size_t entry = kWholeCommand;
    uint64_t handle = 0;  // the block, busy until the copy is over
    uint64_t offset = 0;  // where in the block the copy starts
    uint64_t length = 0;
    uint64_t copied = 0;
    char* destination = nullptr;  // a Read's buffer,
    std::string* sink = nullptr;  // or the string it appends to
    // A Write's or an Allocate's bytes (an Allocate's block gets zeros after
    // them, up to `length`).
    absl::string_view source = {};
    pools::BlockInfo block = {};  // an Allocate's block
  };
  // Marks copy.handle busy and runs the copy's first piece; the rest goes
  // on from long_copies_.
  void StartLongCopy(LongCopy copy);
  // Copies for about a slice's time (or stops the copy when its client
  // cancelled or its deadline passed). When the copy is over: completes
  // and counts its command (or completes its batch entry and puts the batch
  // back among pending_batches_), frees the block of an Allocate that did
  // not finish, releases the block, and returns true.
  bool RunCopyPiece(LongCopy& copy);
  // Runs the next piece of the copy at the front of long_copies_.
  void ContinueLongCopy();
  // Runs the next piece of a batch, of a long copy, or of returning the
  // large pool's free memory (PoolSet::PurgeLargeDue),
  // in turns.
  void ContinuePieces();
  // A piece of a batch or copy is about to run: the worker is not idle
  // (for SliceBudget and the idle trims).
  void NotePieceActivity();
  bool pieces_pending() const {
    return !pending_batches_.empty() || !long_copies_.empty() ||
           pools_->large_purge_due();
  }
  // `handle` is no longer busy: runs the commands that waited for it, in
  // order (a batch runs its next piece then, in its turn).
  void ReleaseBlock(uint64_t handle);
  // The handle to look up for `handle`: itself, or for an operator's call
  // (`any_owner`) the live block's handle when `handle` is it under a
  // recorded owner's mask.
  uint64_t Resolve(uint64_t handle, bool any_owner) const;
  void Handle(StatsOp& op);
  void Handle(AnalyzeOp& op);
  // A defragmentation, in slices, serving other commands between them.
  // Returns true when it counted the command as completed itself (before
  // the snapshot published ahead of its answer), false when the caller
  // counts it.
  bool RunDefrag(const Command& command, DefragOp& op);
  // The budget of the next defragmentation slice, of any origin, at `now`.
  // A client's command waits for the slice in progress, so while commands
  // keep arriving (one is queued, or one began within the last 8 budgets) it
  // is a quarter of options_.defrag_slice (not below 10 us); otherwise the
  // whole budget, so that a run nobody waits on is not slowed.
  absl::Duration SliceBudget(absl::Time now) const;
  // Runs the slices of `session` until it is done, `stop_at` passes,
  // `command` (if any) is cancelled, the channel closes, or (for a
  // memory-limit session) no allocation waits for room any more. Between
  // slices it serves queued commands and retries waiting allocations.
  // Returns why it stopped (kFinished when done).
  pools::DefragStopReason RunSlices(DefragSession& session, absl::Time stop_at,
                                    const Command* command);
  // A defragmentation of every pool, in slices, for the allocations waiting
  // for room under the memory limit (it stops once none waits); then
  // completes every one of them: RESOURCE_EXHAUSTED if it still does not
  // fit, UNAVAILABLE if the server is shutting down.
  void MakeRoom();
  // Completes (and counts) a waiting allocation that is cancelled, expired
  // or now fits, or hands it to a long copy, and returns nullopt; else
  // returns the memory limit's refusal, leaving the command uncompleted.
  std::optional<absl::Status> TryAnswerWaiting(Command& command);
  // Tries the waiting allocations in order until `until`; the rest wait on.
  void RetryWaitingForRoom(absl::Time until);
  // Runs the commands queued now, for up to one slice's time and not past
  // `limit` (queueing defragmentations in pending_defrags_), then one piece
  // of the batch at the front of pending_batches_.
  void ServeBetweenSlices(absl::Time limit);

  // Returns to the OS what a run stopped at its deadline emptied but left
  // cached so that it could answer in time; counts it in the stats.
  void ReturnEmptiedAfterTheAnswer();
  // Ends `session` (see DefragSession::End) and keeps its report in
  // recent_reports_. Every defragmentation ends here.
  pools::DefragReport FinishSession(DefragSession& session,
                                    pools::DefragStopReason reason);
  // At a maintenance tick: asks the policy whether to start an automatic
  // run, and starts it.
  void MaybeStartAutoDefrag(absl::Time now);
  // One slice of the automatic run; ends it when it is done or below the
  // stop threshold, else schedules the next slice within the CPU budget.
  void RunAutoSlice();
  // Ends the automatic run for `reason` and tells the policy how it went.
  void EndAutoDefrag(pools::DefragStopReason reason);
  // How long the loop may wait for a command before it has work of its own.
  absl::Duration IdleWait() const;

  // Publishes a snapshot to options_.stats_sink (if any) now, or when the
  // publish interval has passed by `now`. Worker thread (or the
  // constructor) only.
  void Publish();
  void MaybePublish(absl::Time now);
  // Everything GetStats answers but the process's memory, now. Worker
  // thread (or the constructor) only.
  StatsSnapshot TakeSnapshot(bool include_classes,
                             bool include_defrag_history) const;
  // The worker's statistics now. Worker thread only.
  WorkerStats SnapshotStats() const;
  AutoDefragStats SnapshotAutoDefrag() const;

  Channel<Command> channel_;
  std::atomic<uint64_t> refused_{0};

  std::mutex pause_mu_;
  std::condition_variable pause_cv_;
  bool paused_;  // guarded by pause_mu_

  const Options options_;
  // Owned by the worker thread (after the constructor).
  std::unique_ptr<pools::PoolSet> pools_;
  WorkerStats stats_;
  std::deque<Command> pending_defrags_;
  // Batches begun and not finished, each waiting for its next piece (in the
  // order their pieces run).
  std::deque<Command> pending_batches_;
  // Reads, writes and allocations copied in pieces (in the order their
  // pieces run), the blocks they keep busy, the commands waiting for a busy
  // block (per block, in order) and how many those are.
  std::deque<LongCopy> long_copies_;
  absl::flat_hash_set<uint64_t> busy_blocks_;
  absl::flat_hash_map<uint64_t, std::deque<Command>> waiting_for_block_;
  size_t commands_waiting_for_blocks_ = 0;
  // Batches begun and waiting for a busy block, or for the long copy of one
  // of their entries: they count among the batches in progress.
  size_t batches_waiting_for_blocks_ = 0;
  size_t batches_in_long_copies_ = 0;
  // Which kind of piece ran last (ContinuePieces takes turns).
  bool last_piece_was_copy_ = false;
  bool last_piece_was_purge_ = false;
  // Allocations refused by the memory limit, waiting for a defragmentation
  // to make room (oldest first).
  std::deque<Command> waiting_for_room_;
  absl::Time next_maintenance_;
  // When the last client command (not a defragmentation) began: the sign
  // that requests keep arriving, for SliceBudget.
  absl::Time last_command_at_ = absl::InfinitePast();
  // Commands ran since the last maintenance tick / since the last heap trim.
  bool ran_since_maintenance_ = false;
  bool ran_since_trim_ = false;
  // The RSS outside the pools and malloc's free bytes after the last heap
  // trim (or at start): the end of an automatic run trims when either grew
  // by kOutsideGrowthBeforeTrim (clients may be waiting: a trim walks the
  // whole heap); an idle worker also when the free bytes grew by
  // kIdleGrowthBeforeTrim (what gRPC frees in stages after a flood of calls
  // goes back within a MiB).
  uint64_t outside_pools_after_trim_;
  uint64_t heap_free_after_trim_;
  static constexpr uint64_t kOutsideGrowthBeforeTrim = 16 << 20;
  static constexpr uint64_t kIdleGrowthBeforeTrim = 1 << 20;
  // Allocate and Free commands run: the policy's sign of change.
  uint64_t mutations_ = 0;
  std::deque<pools::DefragReport> recent_reports_;

  // Automatic defragmentation: the policy's memory and last decision, and
  // the run in progress with its pacing.
  AutoDefragHistory auto_history_;
  AutoDefragDecision auto_decision_;
  std::optional<DefragSession> auto_session_;
  uint64_t auto_aimed_bytes_ = 0;
  double auto_cpu_share_ = 0;
  absl::Time next_auto_look_;
  absl::Time next_auto_slice_;
  absl::Duration auto_cpu_;  // thread CPU time of every automatic slice
  absl::Duration auto_cpu_at_start_;  // auto_cpu_ when this run started
  uint64_t auto_bytes_reclaimed_ = 0;

  // Snapshots published so far, when the next one is due, and the
  // defragmentations ended when the last one was taken.
  uint64_t published_ = 0;
  uint64_t published_runs_ = 0;
  absl::Time next_publish_;

  // Owner masks of the identities that allocated (AllocateOp::owner), for
  // operators' calls. At most kMaxOwners: an operator's stale or forged
  // handle matches one of them with a chance of (owners + 1) / 2^32.
  static constexpr size_t kMaxOwners = 4096;
  absl::flat_hash_set<uint32_t> owners_;

  std::thread thread_;  // started by the constructor, after the first Publish
};

}  // namespace poold

#endif  // POOLD_WORKER_WORKER_H_
