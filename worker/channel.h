// Channel<T>: the bounded multi-producer, single-consumer queue that carries
// Commands from the gRPC threads to the worker thread. It is the only object
// two threads share (DESIGN.md, rule 1).
#ifndef POOLD_WORKER_CHANNEL_H_
#define POOLD_WORKER_CHANNEL_H_

#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "glog/logging.h"

namespace poold {

// A fixed-capacity FIFO. Producers never block: TrySend fails at once when the
// channel is full or closed. The consumer may block in Receive or poll with
// TryReceive. Messages of one producer are received in the order it sent them.
// Every message is either received exactly once or refused by TrySend.
//
// Thread-safe. A mutex and a condition variable guard a ring buffer; the
// critical sections only move one value.
template <typename T>
class Channel {
 public:
  // REQUIRES: capacity > 0.
  explicit Channel(size_t capacity) : slots_(capacity) {
    CHECK_GT(capacity, 0u) << "a channel needs room for one message";
  }

  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Appends `value` without blocking. On success the channel has taken
  // `value` (it is moved from) and true is returned. When the channel is full
  // or closed, returns false and leaves `value` untouched, so the caller still
  // owns it (and, for a Command, must complete it).
  [[nodiscard]] bool TrySend(T& value) {
    bool wake;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_ || count_ == slots_.size()) return false;
      slots_[(head_ + count_) % slots_.size()].emplace(std::move(value));
      ++count_;
      // A busy receiver finds the message on its own: only a waiting one
      // needs the (system call) wake-up.
      wake = receiver_waiting_;
    }
    if (wake) not_empty_.notify_one();
    return true;
  }

  // Removes and returns the oldest message, waiting while the channel is
  // empty and open. Returns nullopt once the channel is closed and drained.
  std::optional<T> Receive() {
    std::unique_lock<std::mutex> lock(mu_);
    receiver_waiting_ = true;
    not_empty_.wait(lock, [this] { return count_ > 0 || closed_; });
    receiver_waiting_ = false;
    return PopLocked();
  }

  // Like Receive, but waits at most `timeout`: returns nullopt when nothing
  // arrived by then, or once the channel is closed and drained.
  std::optional<T> ReceiveFor(absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    receiver_waiting_ = true;
    not_empty_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                        [this] { return count_ > 0 || closed_; });
    receiver_waiting_ = false;
    return PopLocked();
  }

  // Removes and returns the oldest message, or nullopt at once when the
  // channel is empty.
  std::optional<T> TryReceive() {
    std::lock_guard<std::mutex> lock(mu_);
    return PopLocked();
  }

  // Refuses every later TrySend and wakes a waiting Receive. Messages already
  // in the channel stay receivable. Idempotent.
  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    not_empty_.notify_all();
  }

  // True once Close() was called.
  bool closed() const {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }

  // Messages waiting now (a snapshot; other threads may change it at once).
  size_t size() const {
    std::lock_guard<std::mutex> lock(mu_);
    return count_;
  }

  size_t capacity() const { return slots_.size(); }

  // True while the consumer is inside Receive or ReceiveFor, waiting for a
  // message (a snapshot; tests use it to know the consumer is blocked).
  bool receiver_waiting() const {
    std::lock_guard<std::mutex> lock(mu_);
    return receiver_waiting_;
  }

 private:
  // REQUIRES: mu_ held.
  std::optional<T> PopLocked() {
    if (count_ == 0) return std::nullopt;
    std::optional<T> value = std::move(slots_[head_]);
    slots_[head_].reset();
    head_ = (head_ + 1) % slots_.size();
    --count_;
    return value;
  }

  mutable std::mutex mu_;
  std::condition_variable not_empty_;
  std::vector<std::optional<T>> slots_;  // ring buffer; size() == capacity
  size_t head_ = 0;                      // index of the oldest message
  size_t count_ = 0;                     // messages in the ring
  bool closed_ = false;
  bool receiver_waiting_ = false;  // the consumer is in (or entering) a wait
};

}  // namespace poold

#endif  // POOLD_WORKER_CHANNEL_H_
