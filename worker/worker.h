// Worker: the thread that owns the pools and runs every Command, and the
// channel that feeds it.
#ifndef POOLD_WORKER_WORKER_H_
#define POOLD_WORKER_WORKER_H_

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>

#include "worker/channel.h"
#include "worker/command.h"
#include "worker/worker_stats.h"

namespace poold {

// Runs Commands one at a time on its own thread, in the order the channel
// delivers them, and completes each exactly once:
//   - CANCELLED when the client cancelled before it ran,
//   - DEADLINE_EXCEEDED when its deadline passed before it ran,
//   - otherwise with the result of the op.
// Until the pool engine is wired in, every op answers UNIMPLEMENTED.
//
// Submit is thread-safe and never blocks; Stop is called by the owner.
class Worker {
 public:
  struct Options {
    // Commands the channel holds; further Submits are refused. > 0.
    size_t channel_capacity = 1024;
    // TESTING ONLY: the thread takes no command until Resume() or Stop(), so
    // the channel fills up deterministically.
    bool start_paused = false;
  };

  // Starts the worker thread. REQUIRES: options.channel_capacity > 0.
  explicit Worker(const Options& options);

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

  // Commands waiting now, and the channel's capacity. Thread-safe.
  size_t queue_depth() const { return channel_.size(); }
  size_t channel_capacity() const { return channel_.capacity(); }

 private:
  // Thread body: waits while paused, then runs commands until the channel is
  // closed and drained.
  void Run();
  void WaitWhilePaused();
  // Completes `command` exactly once. Worker thread only.
  void Execute(Command& command);

  // One handler per op; each completes `op` exactly once. Worker thread only.
  void Handle(AllocateOp& op);
  void Handle(WriteOp& op);
  void Handle(ReadOp& op);
  void Handle(FreeOp& op);
  void Handle(StatsOp& op);
  void Handle(AnalyzeOp& op);
  void Handle(DefragOp& op);

  // The worker's statistics now. Worker thread only.
  WorkerStats SnapshotStats() const;

  Channel<Command> channel_;
  std::atomic<uint64_t> refused_{0};

  std::mutex pause_mu_;
  std::condition_variable pause_cv_;
  bool paused_;  // guarded by pause_mu_

  // Owned by the worker thread.
  WorkerStats stats_;

  std::thread thread_;  // last: starts after everything above is built
};

}  // namespace poold

#endif  // POOLD_WORKER_WORKER_H_
