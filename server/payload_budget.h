// PayloadBudget: bounds the block bytes that RPCs in flight hold in memory
// (request data waiting for the worker, responses waiting for their
// clients), so that clients cannot make poold pin memory without limit.
#ifndef POOLD_SERVER_PAYLOAD_BUDGET_H_
#define POOLD_SERVER_PAYLOAD_BUDGET_H_

#include <atomic>
#include <cstdint>

namespace poold {

// A byte budget shared by the gRPC threads and the worker. Thread-safe and
// lock-free.
class PayloadBudget {
 public:
  // `limit_bytes` == 0: no limit.
  explicit PayloadBudget(uint64_t limit_bytes) : limit_(limit_bytes) {}

  PayloadBudget(const PayloadBudget&) = delete;
  PayloadBudget& operator=(const PayloadBudget&) = delete;

  // Takes `bytes` and returns true when they fit under the limit, or when
  // nothing is held at all (so one payload of any allowed size always
  // passes); otherwise takes nothing and returns false.
  [[nodiscard]] bool TryTake(uint64_t bytes);

  // Gives back `bytes` taken earlier.
  void Give(uint64_t bytes);

  uint64_t held() const { return held_.load(std::memory_order_relaxed); }
  uint64_t limit() const { return limit_; }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> held_{0};
};

}  // namespace poold

#endif  // POOLD_SERVER_PAYLOAD_BUDGET_H_
