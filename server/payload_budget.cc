// PayloadBudget: a lock-free byte budget.
#include "server/payload_budget.h"

namespace poold {

bool PayloadBudget::TryTake(uint64_t bytes) {
  uint64_t held = held_.load(std::memory_order_relaxed);
  while (true) {
    if (limit_ != 0 && held != 0 && (bytes > limit_ || held > limit_ - bytes)) {
      return false;
    }
    if (held_.compare_exchange_weak(held, held + bytes,
                                    std::memory_order_relaxed)) {
      return true;
    }
  }
}

void PayloadBudget::Give(uint64_t bytes) {
  held_.fetch_sub(bytes, std::memory_order_relaxed);
}

}  // namespace poold
