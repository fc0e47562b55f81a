// UnknownHandleLimiter: slows down clients that keep naming handles poold
// does not know (guessers). Each client key (a TLS identity, or the peer's
// address without its port) has a token bucket: every NOT_FOUND for an
// unknown handle takes a token, tokens come back at a fixed rate, and a key
// without tokens gets its handle calls refused before they are looked up.
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

  bool enabled() const { return per_second_ > 0; }
  double per_second() const { return per_second_; }

  // True when `key` may make a call that names a handle now (its bucket has
  // a token left). A refusal is counted. Thread-safe.
  bool Admit(const std::string& key, absl::Time now);

  // Counts a NOT_FOUND answered to `key` for a handle: takes a token, and
  // logs (WARNING, at most every 10 s) when the key runs out. Thread-safe.
  void RecordUnknown(const std::string& key, absl::Time now);

  // True while some key has used part of its burst (it would be refused
  // sooner than a new one). While false, every key would be admitted: a
  // caller may skip Admit. Thread-safe.
  bool anyone_in_debt() const {
    return enabled() && in_debt_.load(std::memory_order_acquire) > 0;
  }

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

  const double per_second_;
  const double burst_;
  const size_t max_keys_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
  // Buckets below their burst (written under mu_).
  std::atomic<int64_t> in_debt_{0};
  std::atomic<uint64_t> unknown_answers_{0};
  std::atomic<uint64_t> refusals_{0};
};

}  // namespace poold

#endif  // POOLD_SERVER_UNKNOWN_HANDLE_LIMITER_H_
