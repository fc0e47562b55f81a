// UnknownHandleLimiter: token buckets per client key.
#include "server/unknown_handle_limiter.h"

#include <algorithm>
#include <chrono>

#include "glog/logging.h"

namespace poold {
namespace {

// A sweep of the full table at most this often; between sweeps, newcomers
// share the overflow bucket (a stream of new keys cannot make every call
// scan the table).
constexpr absl::Duration kSweepInterval = absl::Seconds(1);

}  // namespace

UnknownHandleLimiter::UnknownHandleLimiter(double per_second, double burst,
                                           size_t max_keys)
    : per_second_(per_second),
      burst_(std::max(burst, 1.0)),
      max_keys_(std::max<size_t>(max_keys, 1)) {}

absl::Time UnknownHandleLimiter::Now() {
  return absl::FromUnixNanos(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

UnknownHandleLimiter::Bucket& UnknownHandleLimiter::Refilled(
    const std::string& key, absl::Time now) {
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_ && now - last_sweep_ >= kSweepInterval) {
      // Forget the keys whose budget is whole again (they owe nothing).
      last_sweep_ = now;
      absl::erase_if(buckets_, [&](const auto& entry) {
        const Bucket& b = entry.second;
        return b.tokens +
                   absl::ToDoubleSeconds(now - b.updated) * per_second_ >=
               burst_;
      });
    }
    const std::string& tracked =
        buckets_.size() < max_keys_ ? key : std::string(kOverflowKey);
    it = buckets_.try_emplace(tracked, Bucket{burst_, now}).first;
  }
  Bucket& bucket = it->second;
  if (now > bucket.updated) {
    bucket.tokens = std::min(
        burst_, bucket.tokens +
                    absl::ToDoubleSeconds(now - bucket.updated) * per_second_);
    bucket.updated = now;
  }
  return bucket;
}

void UnknownHandleLimiter::Take(Bucket& bucket, absl::Time now) {
  bucket.tokens = std::max(0.0, bucket.tokens - 1);
  const absl::Time whole =
      now + absl::Seconds((burst_ - bucket.tokens) / per_second_);
  const int64_t until = absl::ToUnixNanos(whole);
  int64_t seen = debt_until_.load(std::memory_order_relaxed);
  while (seen < until && !debt_until_.compare_exchange_weak(
                             seen, until, std::memory_order_release)) {
  }
}

bool UnknownHandleLimiter::Admit(const std::string& key, absl::Time now) {
  if (!enabled()) return true;
  absl::MutexLock lock(&mu_);
  Bucket& bucket = Refilled(key, now);
  if (bucket.tokens >= 1) {
    Take(bucket, now);
    return true;
  }
  refusals_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void UnknownHandleLimiter::Refund(const std::string& key, absl::Time now) {
  if (!enabled()) return;
  absl::MutexLock lock(&mu_);
  Bucket& bucket = Refilled(key, now);
  bucket.tokens = std::min(burst_, bucket.tokens + 1);
}

void UnknownHandleLimiter::RecordUnknown(const std::string& key, absl::Time now,
                                         bool admitted) {
  unknown_answers_.fetch_add(1, std::memory_order_relaxed);
  if (!enabled()) return;
  absl::MutexLock lock(&mu_);
  Bucket& bucket = Refilled(key, now);
  if (!admitted) Take(bucket, now);
  if (bucket.tokens < 1) {
    LOG_EVERY_T(WARNING, 10)
        << "client " << key << " named " << burst_
        << " or more unknown handles in a burst; its handle calls are "
           "slowed to "
        << per_second_
        << " unknown handles per second (--max_unknown_handles_per_second): "
           "a client guessing handles, or one using freed ones";
  }
}

}  // namespace poold
