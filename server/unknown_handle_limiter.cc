// UnknownHandleLimiter: token buckets per client key.
#include "server/unknown_handle_limiter.h"

#include <algorithm>

#include "glog/logging.h"

namespace poold {

UnknownHandleLimiter::UnknownHandleLimiter(double per_second, double burst,
                                           size_t max_keys)
    : per_second_(per_second),
      burst_(std::max(burst, 1.0)),
      max_keys_(std::max<size_t>(max_keys, 1)) {}

UnknownHandleLimiter::Bucket& UnknownHandleLimiter::Refilled(
    const std::string& key, absl::Time now) {
  auto it = buckets_.find(key);
  if (it == buckets_.end()) {
    if (buckets_.size() >= max_keys_) {
      // Forget the keys whose buckets are full again (they owe nothing);
      // if none is, the newcomer shares the overflow bucket.
      absl::erase_if(buckets_, [&](const auto& entry) {
        const Bucket& b = entry.second;
        const bool whole =
            b.tokens + absl::ToDoubleSeconds(now - b.updated) * per_second_ >=
            burst_;
        if (whole && b.tokens < burst_) {
          in_debt_.fetch_sub(1, std::memory_order_release);
        }
        return whole;
      });
    }
    const std::string& tracked =
        buckets_.size() < max_keys_ ? key : std::string(kOverflowKey);
    it = buckets_.try_emplace(tracked, Bucket{burst_, now}).first;
  }
  Bucket& bucket = it->second;
  if (now > bucket.updated) {
    const bool was_in_debt = bucket.tokens < burst_;
    bucket.tokens = std::min(
        burst_, bucket.tokens +
                    absl::ToDoubleSeconds(now - bucket.updated) * per_second_);
    bucket.updated = now;
    if (was_in_debt && bucket.tokens >= burst_) {
      in_debt_.fetch_sub(1, std::memory_order_release);
    }
  }
  return bucket;
}

bool UnknownHandleLimiter::Admit(const std::string& key, absl::Time now) {
  if (!enabled()) return true;
  absl::MutexLock lock(&mu_);
  if (Refilled(key, now).tokens >= 1) return true;
  refusals_.fetch_add(1, std::memory_order_relaxed);
  return false;
}

void UnknownHandleLimiter::RecordUnknown(const std::string& key,
                                         absl::Time now) {
  unknown_answers_.fetch_add(1, std::memory_order_relaxed);
  if (!enabled()) return;
  absl::MutexLock lock(&mu_);
  Bucket& bucket = Refilled(key, now);
  if (bucket.tokens >= burst_) in_debt_.fetch_add(1, std::memory_order_release);
  bucket.tokens = std::max(0.0, bucket.tokens - 1);
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
