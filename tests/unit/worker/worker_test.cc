// Tests of Worker: every command is completed exactly once (also when refused
// and at shutdown), with the status its deadline, cancellation and the
// not-yet-wired engine call for. Run under ThreadSanitizer in CI.
#include "worker/worker.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

using ::testing::HasSubstr;

// Records the completions of commands by id. Thread-safe.
class Completions {
 public:
  explicit Completions(size_t n) : counts_(n, 0), codes_(n) {}

  void Record(size_t id, const absl::Status& status) {
    std::lock_guard<std::mutex> lock(mu_);
    ++counts_[id];
    codes_[id] = status.code();
    threads_.push_back(std::this_thread::get_id());
    last_message_ = std::string(status.message());
  }

  int count(size_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    return counts_[id];
  }
  absl::StatusCode code(size_t id) {
    std::lock_guard<std::mutex> lock(mu_);
    return codes_[id];
  }
  std::vector<std::thread::id> threads() {
    std::lock_guard<std::mutex> lock(mu_);
    return threads_;
  }
  std::string last_message() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_message_;
  }

 private:
  std::mutex mu_;
  std::vector<int> counts_;
  std::vector<absl::StatusCode> codes_;
  std::vector<std::thread::id> threads_;
  std::string last_message_;
};

absl::Status StatusOf(const absl::Status& s) { return s; }
template <typename T>
absl::Status StatusOf(const absl::StatusOr<T>& s) {
  return s.status();
}

// A command of type `type` whose completion is recorded under `id`.
Command MakeCommand(CommandType type, size_t id, Completions* completions) {
  auto record = [completions, id](const auto& result) {
    completions->Record(id, StatusOf(result));
  };
  Command command;
  switch (type) {
    case CommandType::kAllocate:
      command.op = AllocateOp{.size = 16, .data = "abc", .done = record};
      break;
    case CommandType::kWrite:
      command.op =
          WriteOp{.handle = 1, .offset = 0, .data = "x", .done = record};
      break;
    case CommandType::kRead:
      command.op =
          ReadOp{.handle = 1, .offset = 0, .length = 0, .done = record};
      break;
    case CommandType::kFree:
      command.op = FreeOp{.handle = 1, .done = record};
      break;
    case CommandType::kGetStats:
      command.op = StatsOp{.include_classes = true, .done = record};
      break;
    case CommandType::kAnalyzeFragmentation:
      command.op =
          AnalyzeOp{.pools = {pools::PoolKind::kSmall}, .done = record};
      break;
    case CommandType::kTriggerDefragmentation:
      command.op = DefragOp{.pools = {pools::PoolKind::kLarge}, .done = record};
      break;
  }
  return command;
}

CommandType TypeFor(size_t i) {
  return static_cast<CommandType>(i % kCommandTypeCount);
}

TEST(WorkerTest, EveryOpAnswersUnimplementedUntilTheEngineIsWired) {
  Worker worker({.channel_capacity = 16});
  Completions completions(kCommandTypeCount);
  for (size_t i = 0; i < kCommandTypeCount; ++i) {
    ASSERT_TRUE(worker.Submit(MakeCommand(TypeFor(i), i, &completions)));
  }
  worker.Stop();
  for (size_t i = 0; i < kCommandTypeCount; ++i) {
    EXPECT_EQ(completions.count(i), 1) << CommandTypeName(TypeFor(i));
    EXPECT_EQ(completions.code(i), absl::StatusCode::kUnimplemented);
  }
  EXPECT_THAT(completions.last_message(),
              HasSubstr("TriggerDefragmentation not implemented: the pool "
                        "engine is not wired in"));
}

TEST(WorkerTest, CompletesOnTheWorkerThread) {
  Worker worker({.channel_capacity = 4});
  Completions completions(1);
  ASSERT_TRUE(worker.Submit(MakeCommand(CommandType::kRead, 0, &completions)));
  worker.Stop();
  ASSERT_EQ(completions.threads().size(), 1u);
  EXPECT_NE(completions.threads()[0], std::this_thread::get_id());
}

TEST(WorkerTest, PassedDeadlineGivesDeadlineExceeded) {
  Worker worker({.channel_capacity = 4});
  Completions completions(2);
  Command late = MakeCommand(CommandType::kAllocate, 0, &completions);
  late.deadline = absl::Now() - absl::Seconds(1);
  ASSERT_TRUE(worker.Submit(std::move(late)));
  Command in_time = MakeCommand(CommandType::kAllocate, 1, &completions);
  in_time.deadline = absl::Now() + absl::Hours(1);
  ASSERT_TRUE(worker.Submit(std::move(in_time)));
  worker.Stop();
  EXPECT_EQ(completions.count(0), 1);
  EXPECT_EQ(completions.code(0), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(completions.count(1), 1);
  EXPECT_EQ(completions.code(1), absl::StatusCode::kUnimplemented);
}

TEST(WorkerTest, DeadlinePassingWhileQueuedGivesDeadlineExceeded) {
  Worker worker({.channel_capacity = 4, .start_paused = true});
  Completions completions(1);
  Command command = MakeCommand(CommandType::kWrite, 0, &completions);
  command.deadline = absl::Now() + absl::Milliseconds(10);
  ASSERT_TRUE(worker.Submit(std::move(command)));
  absl::SleepFor(absl::Milliseconds(30));
  worker.Resume();
  worker.Stop();
  EXPECT_EQ(completions.count(0), 1);
  EXPECT_EQ(completions.code(0), absl::StatusCode::kDeadlineExceeded);
}

TEST(WorkerTest, CancelledCommandGivesCancelled) {
  Worker worker({.channel_capacity = 4, .start_paused = true});
  Completions completions(1);
  std::atomic<bool> cancelled{false};
  Command command = MakeCommand(CommandType::kFree, 0, &completions);
  command.cancelled = &cancelled;
  ASSERT_TRUE(worker.Submit(std::move(command)));
  cancelled.store(true);
  worker.Resume();
  worker.Stop();
  EXPECT_EQ(completions.count(0), 1);
  EXPECT_EQ(completions.code(0), absl::StatusCode::kCancelled);
}

TEST(WorkerTest, FullChannelRefusesAtOnceWithResourceExhausted) {
  Worker worker({.channel_capacity = 2, .start_paused = true});
  Completions completions(3);
  ASSERT_TRUE(worker.Submit(MakeCommand(CommandType::kRead, 0, &completions)));
  ASSERT_TRUE(worker.Submit(MakeCommand(CommandType::kRead, 1, &completions)));
  EXPECT_EQ(worker.queue_depth(), 2u);
  EXPECT_EQ(worker.channel_capacity(), 2u);

  // Refused on this thread, before Submit returns.
  EXPECT_FALSE(worker.Submit(MakeCommand(CommandType::kRead, 2, &completions)));
  EXPECT_EQ(completions.count(2), 1);
  EXPECT_EQ(completions.code(2), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(completions.count(0), 0);
  EXPECT_EQ(completions.count(1), 0);

  worker.Stop();  // releases the pause and drains the queue
  EXPECT_EQ(completions.count(0), 1);
  EXPECT_EQ(completions.count(1), 1);
  EXPECT_EQ(completions.code(0), absl::StatusCode::kUnimplemented);
}

TEST(WorkerTest, StopCompletesQueuedCommandsAndRefusesLaterOnes) {
  constexpr size_t kQueued = 10;
  Worker worker({.channel_capacity = kQueued, .start_paused = true});
  Completions completions(kQueued + 1);
  for (size_t i = 0; i < kQueued; ++i) {
    ASSERT_TRUE(worker.Submit(MakeCommand(TypeFor(i), i, &completions)));
  }
  worker.Stop();
  for (size_t i = 0; i < kQueued; ++i) {
    EXPECT_EQ(completions.count(i), 1);
  }
  EXPECT_FALSE(worker.Submit(
      MakeCommand(CommandType::kGetStats, kQueued, &completions)));
  EXPECT_EQ(completions.count(kQueued), 1);
  EXPECT_EQ(completions.code(kQueued), absl::StatusCode::kUnavailable);
  worker.Stop();  // idempotent
}

TEST(WorkerTest, DestructorCompletesQueuedCommands) {
  Completions completions(3);
  {
    Worker worker({.channel_capacity = 3, .start_paused = true});
    for (size_t i = 0; i < 3; ++i) {
      ASSERT_TRUE(worker.Submit(MakeCommand(TypeFor(i), i, &completions)));
    }
  }
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(completions.count(i), 1);
}

// Many threads submit every kind of command into a small channel while the
// worker runs and then stops: each command is completed exactly once, either
// by the worker or, when refused, by its submitter.
TEST(WorkerTest, ConcurrentSubmittersEachCommandCompletedExactlyOnce) {
  constexpr size_t kThreads = 6;
  constexpr size_t kPerThread = 3000;
  constexpr size_t kTotal = kThreads * kPerThread;
  Completions completions(kTotal);
  std::atomic<uint64_t> accepted{0};
  {
    Worker worker({.channel_capacity = 8});
    std::vector<std::thread> threads;
    for (size_t t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (size_t i = 0; i < kPerThread; ++i) {
          size_t id = t * kPerThread + i;
          if (worker.Submit(MakeCommand(TypeFor(id), id, &completions))) {
            accepted.fetch_add(1);
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
    worker.Stop();
  }
  uint64_t unimplemented = 0;
  uint64_t exhausted = 0;
  for (size_t id = 0; id < kTotal; ++id) {
    ASSERT_EQ(completions.count(id), 1) << "command " << id;
    absl::StatusCode code = completions.code(id);
    if (code == absl::StatusCode::kUnimplemented) ++unimplemented;
    if (code == absl::StatusCode::kResourceExhausted) ++exhausted;
  }
  EXPECT_EQ(unimplemented, accepted.load());
  EXPECT_EQ(unimplemented + exhausted, kTotal);
}

// Submitting while another thread stops the worker: every command is still
// completed exactly once (UNIMPLEMENTED, RESOURCE_EXHAUSTED or UNAVAILABLE).
TEST(WorkerTest, SubmitRacingWithStopCompletesEverything) {
  constexpr size_t kThreads = 4;
  constexpr size_t kPerThread = 2000;
  constexpr size_t kTotal = kThreads * kPerThread;
  Completions completions(kTotal);
  Worker worker({.channel_capacity = 16});
  std::vector<std::thread> threads;
  for (size_t t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = 0; i < kPerThread; ++i) {
        size_t id = t * kPerThread + i;
        (void)worker.Submit(MakeCommand(TypeFor(id), id, &completions));
      }
    });
  }
  absl::SleepFor(absl::Milliseconds(2));
  worker.Stop();
  for (std::thread& t : threads) t.join();
  for (size_t id = 0; id < kTotal; ++id) {
    ASSERT_EQ(completions.count(id), 1) << "command " << id;
    absl::StatusCode code = completions.code(id);
    EXPECT_TRUE(code == absl::StatusCode::kUnimplemented ||
                code == absl::StatusCode::kResourceExhausted ||
                code == absl::StatusCode::kUnavailable)
        << code;
  }
}

}  // namespace
}  // namespace poold
