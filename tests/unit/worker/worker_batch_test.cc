// Tests of batches on the worker: entries run in order, a long batch is cut
// into pieces between which other commands run, and a cancellation in the
// middle completes the rest without running them.
#include <algorithm>
#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/worker.h"

namespace poold {
namespace {

// Where each completion came in, one counter for all of them.
struct Timeline {
  std::mutex mu;
  int next = 0;
  std::vector<int> entries;  // the place of each entry's completion
  int read = -1;             // the place of the unary Read's
  int batch = -1;            // the place of the batch's own completion

  int Take() {
    std::lock_guard<std::mutex> lock(mu);
    return next++;
  }
};

std::unique_ptr<pools::PoolSet> MakePools() {
  pools::PoolSetOptions options;
  options.handle_key = 77;
  return *pools::PoolSet::Create(options);
}

// A batch of `count` 64-byte allocations, recorded in `timeline`.
Command AllocationBatch(int count, Timeline* timeline,
                        std::promise<absl::Status>* done) {
  timeline->entries.assign(count, -1);
  BatchOp batch;
  for (int i = 0; i < count; ++i) {
    batch.entries.emplace_back(
        AllocateOp{.size = 64, .data = "x", .done = [timeline, i](auto r) {
                     CHECK(r.ok()) << r.status();
                     timeline->entries[i] = timeline->Take();
                   }});
  }
  batch.done = [timeline, done](absl::Status status) {
    timeline->batch = timeline->Take();
    done->set_value(status);
  };
  Command command;
  command.op = std::move(batch);
  return command;
}

// A held worker gets a batch of 20000 allocations, then a Read; `slice` is
// the worker's defragmentation slice. Returns the timeline once both are
// complete.
void RunBatchThenRead(absl::Duration slice, Timeline* timeline) {
  Worker worker(
      {.channel_capacity = 4, .start_paused = true, .defrag_slice = slice},
      MakePools());
  std::promise<absl::Status> batch_done;
  ASSERT_TRUE(worker.Submit(AllocationBatch(20000, timeline, &batch_done)));
  std::promise<void> read_done;
  Command read;
  read.op = ReadOp{.handle = 1, .done = [&](auto r) {
                     EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
                     timeline->read = timeline->Take();
                     read_done.set_value();
                   }};
  ASSERT_TRUE(worker.Submit(std::move(read)));
  worker.Resume();
  EXPECT_TRUE(batch_done.get_future().get().ok());
  read_done.get_future().wait();
  worker.Stop();
}

TEST(WorkerBatchTest, ALongBatchLetsOtherCommandsRunBetweenItsPieces) {
  // 20000 allocations take far more than 10 us: the Read, queued behind
  // the batch, runs after its first piece and long before its end.
  Timeline timeline;
  RunBatchThenRead(absl::Microseconds(10), &timeline);
  std::lock_guard<std::mutex> lock(timeline.mu);
  // In order, each once.
  EXPECT_TRUE(std::is_sorted(timeline.entries.begin(), timeline.entries.end()));
  EXPECT_EQ(
      std::adjacent_find(timeline.entries.begin(), timeline.entries.end()),
      timeline.entries.end());
  EXPECT_GT(timeline.read, timeline.entries.front());
  EXPECT_LT(timeline.read, timeline.entries.back() - 10000);
  EXPECT_EQ(timeline.batch, 20001);  // last
}

TEST(WorkerBatchTest, WithSlicesLongerThanTheBatchItRunsWhole) {
  // The same with a one-second slice: nothing comes between the entries.
  Timeline timeline;
  RunBatchThenRead(absl::Seconds(1), &timeline);
  std::lock_guard<std::mutex> lock(timeline.mu);
  EXPECT_EQ(timeline.entries.back(), 19999);
  EXPECT_EQ(timeline.batch, 20000);
  EXPECT_EQ(timeline.read, 20001);
}

TEST(WorkerBatchTest, ACancellationInTheMiddleCompletesTheRestUnrun) {
  Worker worker({.channel_capacity = 4, .defrag_slice = absl::Microseconds(10)},
                MakePools());
  std::atomic<bool> cancelled{false};
  std::vector<absl::StatusCode> codes(5000, absl::StatusCode::kUnknown);
  std::promise<absl::Status> done;
  BatchOp batch;
  for (int i = 0; i < 5000; ++i) {
    batch.entries.emplace_back(
        AllocateOp{.size = 64, .data = "x", .done = [&, i](auto r) {
                     codes[i] = r.status().code();
                     // The client goes away after the first result.
                     cancelled.store(true, std::memory_order_release);
                   }});
  }
  batch.done = [&](absl::Status status) { done.set_value(status); };
  Command command;
  command.cancelled = &cancelled;
  command.op = std::move(batch);
  ASSERT_TRUE(worker.Submit(std::move(command)));
  EXPECT_TRUE(done.get_future().get().ok());
  worker.Stop();
  // The first piece (at least one entry) ran; the next saw the
  // cancellation.
  const auto first_cancelled =
      std::find(codes.begin(), codes.end(), absl::StatusCode::kCancelled);
  ASSERT_NE(first_cancelled, codes.end());
  EXPECT_GE(first_cancelled - codes.begin(), 1);
  EXPECT_TRUE(std::all_of(
      codes.begin(), first_cancelled,
      [](absl::StatusCode c) { return c == absl::StatusCode::kOk; }));
  EXPECT_TRUE(std::all_of(first_cancelled, codes.end(), [](absl::StatusCode c) {
    return c == absl::StatusCode::kCancelled;
  }));
}

TEST(WorkerBatchTest, ABatchRefusedWholeCompletesOnlyItself) {
  Worker worker({.channel_capacity = 4}, MakePools());
  worker.Stop();
  bool entry_ran = false;
  absl::Status status;
  BatchOp batch;
  batch.entries.emplace_back(
      FreeOp{.handle = 1, .done = [&](absl::Status) { entry_ran = true; }});
  batch.done = [&](absl::Status s) { status = s; };
  Command command;
  command.op = std::move(batch);
  EXPECT_FALSE(worker.Submit(std::move(command)));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(entry_ran);
}

TEST(WorkerBatchTest, BatchesInProgressAreBounded) {
  // A channel of one: while a long batch is in progress (parked between its
  // pieces), a second one is refused whole, and says why.
  Worker worker({.channel_capacity = 1,
                 .start_paused = true,
                 .defrag_slice = absl::Microseconds(10)},
                MakePools());
  Timeline timeline;
  std::promise<absl::Status> long_done;
  ASSERT_TRUE(worker.Submit(AllocationBatch(200000, &timeline, &long_done)));
  worker.Resume();
  // Submit as soon as the channel has room: the long batch left it.
  std::promise<absl::Status> second_done;
  while (true) {
    BatchOp batch;
    batch.entries.emplace_back(
        AllocateOp{.size = 8, .data = "y", .done = [](auto) {}});
    bool refused_by_channel = false;
    batch.done = [&](absl::Status status) {
      if (absl::StrContains(status.message(), "in progress")) {
        second_done.set_value(status);
      } else if (!status.ok()) {
        refused_by_channel = true;  // (only the channel refuses at once)
      } else {
        second_done.set_value(status);
      }
    };
    Command command;
    command.op = std::move(batch);
    if (worker.Submit(std::move(command))) break;
    ASSERT_TRUE(refused_by_channel);
  }
  const absl::Status second = second_done.get_future().get();
  EXPECT_EQ(second.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(second.message()),
              ::testing::HasSubstr("batches are already in progress"));
  EXPECT_TRUE(long_done.get_future().get().ok());
  worker.Stop();
}

}  // namespace
}  // namespace poold
