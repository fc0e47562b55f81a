// UnknownHandleLimiter: slows down clients that keep naming handles poold
// does not know (guessers). Each client key (a TLS identity, or the peer's
// address) has a token bucket: every NOT_FOUND for an unknown handle costs a
// token, tokens come back at a fixed rate, and a key without tokens gets its
// handle calls refused before they are looked up. While any key owes tokens,
// every handle call takes one when it is admitted and gets it back when its
// handle was known, so calls sent at once cannot outrun the budget.
#ifndef POOLD_SERVER_UNKNOWN_HANDLE_LIMITER_H_
#define POOLD_SERVER_UNKNOWN_HANDLE_LIMITER_H_

#include <atomic>
#include <cstdint>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace poold {

class UnknownHandleLimiter {
 public:
  // `per_second` unknown handles per key in the long run, after a burst of
  // `burst`; per_second == 0: no limit. At most `max_keys` keys have a
  // bucket of their own; past that, new keys share one.
  UnknownHandleLimiter(double per_second, double burst, size_t max_keys);

  UnknownHandleLimiter(const UnknownHandleLimiter&) = delete;
  UnknownHandleLimiter& operator=(const UnknownHandleLimiter&) = delete;

  // Largest per_second accepted (--max_unknown_handles_per_second).
  static constexpr double kMaxPerSecond = 1e6;

  // A monotonic clock for `now` below (a wall clock stepping back would stop
  // the refills).
  static absl::Time Now();

  bool enabled() const { return per_second_ > 0; }
  double per_second() const { return per_second_; }

  // False while every key has its whole burst: then a call need not be
  // admitted (it costs nothing), and only an unknown handle is recorded.
  // Thread-safe and lock-free.
  bool anyone_in_debt(absl::Time now) const {
    return enabled() &&
           absl::ToUnixNanos(now) < debt_until_.load(std::memory_order_acquire);
  }

  // Takes a token for a call of `key` that names a handle; false, counted as
  // a refusal, when there is none left. Thread-safe.
  bool Admit(const std::string& key, absl::Time now);

  // The call of `key` admitted at Admit named a known handle: its token
  // comes back. Thread-safe.
  void Refund(const std::string& key, absl::Time now);

  // Counts a NOT_FOUND answered to `key` for a handle. Unless the call was
  // admitted (its token is already taken), takes a token. Logs (WARNING, at
  // most every 10 s) when the key runs out. Thread-safe.
  void RecordUnknown(const std::string& key, absl::Time now, bool admitted);

  // NOT_FOUND answers counted, and calls refused, since the start.
  uint64_t unknown_answers() const {
    return unknown_answers_.load(std::memory_order_relaxed);
  }
  uint64_t refusals() const {
    return refusals_.load(std::memory_order_relaxed);
  }

  // The key under which untracked clients share a bucket.
  static constexpr char kOverflowKey[] = "(other clients)";

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time updated;
  };

  // The bucket of `key`, refilled to `now`; created full when new.
  Bucket& Refilled(const std::string& key, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes a token from `bucket` (not below 0) and moves debt_until_ to when
  // it is whole again.
  void Take(Bucket& bucket, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const double per_second_;
  const double burst_;
  const size_t max_keys_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
  // When the table was last swept of keys whose budget is whole again.
  absl::Time last_sweep_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // No key owes tokens from then on (Unix nanoseconds of the monotonic
  // clock); only moves forward.
  std::atomic<int64_t> debt_until_{0};
  std::atomic<uint64_t> unknown_answers_{0};
  std::atomic<uint64_t> refusals_{0};
};

}  // namespace poold

#endif  // POOLD_SERVER_UNKNOWN_HANDLE_LIMITER_H_
