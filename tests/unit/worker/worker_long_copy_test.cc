// Tests of long copies on the worker: a Read, Write or Allocate of more than
// Worker::kCopyPieceBytes is copied in pieces with other commands between
// them, its block stays as it was meanwhile (commands that name it wait, in
// order), and a cancellation in the middle leaves nothing behind.
#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/pools/fault_injecting_os.h"
#include "worker/worker.h"

namespace poold {
namespace {

// 16 MiB: 64 pieces of Worker::kCopyPieceBytes.
constexpr uint64_t kLarge = 16 << 20;

std::unique_ptr<pools::PoolSet> MakePools() {
  pools::PoolSetOptions options;
  options.handle_key = 78;
  return *pools::PoolSet::Create(options);
}

// A worker whose slices end after one piece of a copy.
Worker::Options OnePieceAtATime(size_t channel_capacity = 64) {
  return {.channel_capacity = channel_capacity,
          .defrag_slice = absl::Nanoseconds(1)};
}

// Where each completion came in, one counter for all of them.
class Timeline {
 public:
  int Take(const std::string& what) {
    std::lock_guard<std::mutex> lock(mu_);
    order_.push_back(what);
    return static_cast<int>(order_.size()) - 1;
  }
  std::vector<std::string> order() {
    std::lock_guard<std::mutex> lock(mu_);
    return order_;
  }

 private:
  std::mutex mu_;
  std::vector<std::string> order_;
};

// `size` bytes that differ from one place to the next, from `seed`.
std::string Pattern(uint64_t size, int seed) {
  std::string bytes(size, '\0');
  for (uint64_t k = 0; k < size; ++k) {
    bytes[k] = static_cast<char>((k * 7 + seed) % 251);
  }
  return bytes;
}

absl::StatusOr<uint64_t> AllocateNow(Worker& worker, const std::string& data,
                                     uint64_t size = 0) {
  std::promise<absl::StatusOr<pools::BlockInfo>> done;
  Command command;
  command.op = AllocateOp{.size = size != 0 ? size : data.size(),
                          .data = data,
                          .done = [&](absl::StatusOr<pools::BlockInfo> block) {
                            done.set_value(std::move(block));
                          }};
  EXPECT_TRUE(worker.Submit(std::move(command)));
  absl::StatusOr<pools::BlockInfo> block = done.get_future().get();
  if (!block.ok()) return block.status();
  return block->handle;
}

// Frees `handle` and waits for the answer.
absl::Status FreeNow(Worker& worker, uint64_t handle) {
  std::promise<absl::Status> freed;
  Command command;
  command.op = FreeOp{.handle = handle,
                      .done = [&](absl::Status s) { freed.set_value(s); }};
  EXPECT_TRUE(worker.Submit(std::move(command)));
  return freed.get_future().get();
}

// The worker's statistics now (a command, in its turn).
StatsSnapshot StatsNow(Worker& worker) {
  std::promise<StatsSnapshot> stats;
  Command command;
  command.op = StatsOp{.done = [&](absl::StatusOr<StatsSnapshot> snapshot) {
    stats.set_value(*std::move(snapshot));
  }};
  EXPECT_TRUE(worker.Submit(std::move(command)));
  return stats.get_future().get();
}

// Pools whose large pool reaches the OS through `os`.
std::unique_ptr<pools::PoolSet> MakePoolsWithLargeOs(pools::OsInterface* os) {
  pools::PoolSetOptions options;
  options.handle_key = 78;
  options.os[static_cast<size_t>(pools::PoolKind::kLarge)] = os;
  return *pools::PoolSet::Create(options);
}

// A whole-block Read into its own buffer; `on_destination` runs on the
// worker when the buffer is asked for (before the first byte is copied).
struct LongRead {
  std::string buffer;
  std::promise<absl::StatusOr<std::string>> done;

  Command Make(uint64_t handle, Timeline* timeline,
               absl::AnyInvocable<void()> on_destination = nullptr) {
    Command command;
    command.op = ReadOp{
        .handle = handle,
        .destination = [this, on_destination = std::move(on_destination)](
                           uint64_t length) mutable -> absl::StatusOr<char*> {
          buffer.resize(length);
          if (on_destination) on_destination();
          return buffer.data();
        },
        .done =
            [this, timeline](absl::StatusOr<absl::string_view> data) {
              timeline->Take("long read");
              if (!data.ok()) {
                done.set_value(data.status());
              } else {
                done.set_value(std::string(*data));
              }
            }};
    return command;
  }
};

// A Read of the first `length` bytes of `handle`, as a view.
Command SmallRead(uint64_t handle, uint64_t length, const std::string& name,
                  Timeline* timeline,
                  std::promise<absl::StatusOr<std::string>>* done) {
  Command command;
  command.op = ReadOp{.handle = handle,
                      .length = length,
                      .done = [=](absl::StatusOr<absl::string_view> data) {
                        timeline->Take(name);
                        done->set_value(data.ok() ? absl::StatusOr<std::string>(
                                                        std::string(*data))
                                                  : data.status());
                      }};
  return command;
}

// The position of `name` in `order`; -1 when absent.
int Position(const std::vector<std::string>& order, const std::string& name) {
  for (size_t i = 0; i < order.size(); ++i) {
    if (order[i] == name) return static_cast<int>(i);
  }
  return -1;
}

TEST(WorkerLongCopyTest, ALongReadLetsOtherCommandsRunBetweenItsPieces) {
  Worker worker(OnePieceAtATime(), MakePools());
  const std::string large = Pattern(kLarge, 1);
  const std::string small = Pattern(100, 2);
  absl::StatusOr<uint64_t> a = AllocateNow(worker, large);
  absl::StatusOr<uint64_t> b = AllocateNow(worker, small);
  ASSERT_TRUE(a.ok() && b.ok());
  Timeline timeline;
  LongRead read;
  std::promise<absl::StatusOr<std::string>> small_done;
  // The small read is queued before the long read's first byte is copied.
  ASSERT_TRUE(worker.Submit(read.Make(*a, &timeline, [&] {
    ASSERT_TRUE(
        worker.Submit(SmallRead(*b, 0, "small read", &timeline, &small_done)));
  })));
  EXPECT_TRUE(*read.done.get_future().get() == large);
  EXPECT_EQ(*small_done.get_future().get(), small);
  EXPECT_EQ(timeline.order(),
            (std::vector<std::string>{"small read", "long read"}));
}

TEST(WorkerLongCopyTest, WithSlicesLongerThanTheCopyItRunsWhole) {
  // The same with an hour-long slice: nothing comes between the pieces.
  Worker worker({.channel_capacity = 64, .defrag_slice = absl::Hours(1)},
                MakePools());
  const std::string large = Pattern(kLarge, 1);
  absl::StatusOr<uint64_t> a = AllocateNow(worker, large);
  absl::StatusOr<uint64_t> b = AllocateNow(worker, "b");
  ASSERT_TRUE(a.ok() && b.ok());
  Timeline timeline;
  LongRead read;
  std::promise<absl::StatusOr<std::string>> small_done;
  ASSERT_TRUE(worker.Submit(read.Make(*a, &timeline, [&] {
    ASSERT_TRUE(
        worker.Submit(SmallRead(*b, 0, "small read", &timeline, &small_done)));
  })));
  EXPECT_TRUE(*read.done.get_future().get() == large);
  small_done.get_future().wait();
  EXPECT_EQ(timeline.order(),
            (std::vector<std::string>{"long read", "small read"}));
}

TEST(WorkerLongCopyTest, AWriteAndAFreeOfABusyBlockWaitForTheRead) {
  Worker worker(OnePieceAtATime(), MakePools());
  const std::string large = Pattern(kLarge, 1);
  absl::StatusOr<uint64_t> a = AllocateNow(worker, large);
  ASSERT_TRUE(a.ok());
  Timeline timeline;
  LongRead read;
  std::promise<absl::Status> write_done;
  std::promise<absl::StatusOr<std::string>> reread_done;
  std::promise<absl::Status> free_done;
  ASSERT_TRUE(worker.Submit(read.Make(*a, &timeline, [&] {
    Command write;
    write.op = WriteOp{.handle = *a,
                       .offset = kLarge / 2,
                       .data = "new bytes",
                       .done = [&](absl::Status status) {
                         timeline.Take("write");
                         write_done.set_value(status);
                       }};
    ASSERT_TRUE(worker.Submit(std::move(write)));
    ASSERT_TRUE(
        worker.Submit(SmallRead(*a, 0, "reread", &timeline, &reread_done)));
    Command free;
    free.op = FreeOp{.handle = *a, .done = [&](absl::Status status) {
                       timeline.Take("free");
                       free_done.set_value(status);
                     }};
    ASSERT_TRUE(worker.Submit(std::move(free)));
  })));
  // The read saw the block as it was when it began, whole.
  EXPECT_TRUE(*read.done.get_future().get() == large);
  EXPECT_TRUE(write_done.get_future().get().ok());
  absl::StatusOr<std::string> reread = reread_done.get_future().get();
  ASSERT_TRUE(reread.ok()) << reread.status();
  EXPECT_EQ(reread->substr(kLarge / 2, 9), "new bytes");
  EXPECT_TRUE(free_done.get_future().get().ok());
  // They waited, and then ran in the order they came.
  EXPECT_EQ(timeline.order(),
            (std::vector<std::string>{"long read", "write", "reread", "free"}));
}

TEST(WorkerLongCopyTest, ABatchEntryThatNamesABusyBlockWaitsForIt) {
  Worker worker(OnePieceAtATime(), MakePools());
  const std::string large = Pattern(kLarge, 3);
  absl::StatusOr<uint64_t> a = AllocateNow(worker, large);
  absl::StatusOr<uint64_t> b = AllocateNow(worker, "b");
  ASSERT_TRUE(a.ok() && b.ok());
  Timeline timeline;
  LongRead read;
  std::promise<absl::Status> batch_done;
  std::string first_of_a;
  ASSERT_TRUE(worker.Submit(read.Make(*a, &timeline, [&] {
    BatchOp batch;
    batch.entries.emplace_back(ReadOp{
        .handle = *b, .done = [&](absl::StatusOr<absl::string_view> data) {
          EXPECT_TRUE(data.ok());
          timeline.Take("entry of b");
        }});
    batch.entries.emplace_back(
        WriteOp{.handle = *a, .data = "zz", .done = [&](absl::Status status) {
                  EXPECT_TRUE(status.ok());
                  timeline.Take("entry of a");
                }});
    batch.done = [&](absl::Status status) { batch_done.set_value(status); };
    Command command;
    command.op = std::move(batch);
    ASSERT_TRUE(worker.Submit(std::move(command)));
  })));
  EXPECT_TRUE(*read.done.get_future().get() == large);
  EXPECT_TRUE(batch_done.get_future().get().ok());
  // The entry of another block ran between the pieces; the write of the
  // busy block waited for the read's end.
  EXPECT_EQ(timeline.order(), (std::vector<std::string>{
                                  "entry of b", "long read", "entry of a"}));
}

TEST(WorkerLongCopyTest, AWaitingBatchKeepsItsPlaceAmongTheWaitingCommands) {
  // A batch and then a Read wait for the same block: once it is free, the
  // batch's entry runs first, and the Read sees what it wrote.
  Worker worker(OnePieceAtATime(), MakePools());
  absl::StatusOr<uint64_t> a = AllocateNow(worker, Pattern(kLarge, 1));
  ASSERT_TRUE(a.ok());
  Timeline timeline;
  LongRead read;
  std::promise<absl::Status> batch_done;
  std::promise<absl::StatusOr<std::string>> after_done;
  ASSERT_TRUE(worker.Submit(read.Make(*a, &timeline, [&] {
    BatchOp batch;
    batch.entries.emplace_back(
        WriteOp{.handle = *a, .data = "zz", .done = [&](absl::Status status) {
                  EXPECT_TRUE(status.ok());
                  timeline.Take("batch write");
                }});
    batch.done = [&](absl::Status status) { batch_done.set_value(status); };
    Command command;
    command.op = std::move(batch);
    ASSERT_TRUE(worker.Submit(std::move(command)));
    ASSERT_TRUE(
        worker.Submit(SmallRead(*a, 2, "read after", &timeline, &after_done)));
  })));
  ASSERT_TRUE(read.done.get_future().get().ok());
  EXPECT_TRUE(batch_done.get_future().get().ok());
  EXPECT_EQ(*after_done.get_future().get(), "zz");
  EXPECT_EQ(timeline.order(), (std::vector<std::string>{
                                  "long read", "batch write", "read after"}));
}

TEST(WorkerLongCopyTest, BatchesWaitingForABlockCountAsBatchesInProgress) {
  // channel_capacity 3: three batches wait for the busy block; a fourth is
  // refused whole, as when three are in progress.
  Worker worker(OnePieceAtATime(/*channel_capacity=*/3), MakePools());
  absl::StatusOr<uint64_t> a = AllocateNow(worker, Pattern(kLarge, 1));
  absl::StatusOr<uint64_t> b = AllocateNow(worker, "b");
  ASSERT_TRUE(a.ok() && b.ok());
  Timeline timeline;
  LongRead read;
  std::vector<std::promise<absl::Status>> done(4);
  auto batch_of_a = [&](int i, absl::AnyInvocable<void()> first) {
    BatchOp batch;
    if (first) {
      // An entry of another block first: it runs, then the batch waits.
      batch.entries.emplace_back(ReadOp{
          .handle = *b,
          .done = [first = std::move(first)](
                      absl::StatusOr<absl::string_view>) mutable { first(); }});
    }
    batch.entries.emplace_back(
        ReadOp{.handle = *a, .length = 1, .done = [](auto) {}});
    batch.done = [&done, i](absl::Status status) { done[i].set_value(status); };
    Command command;
    command.op = std::move(batch);
    return command;
  };
  ASSERT_TRUE(worker.Submit(read.Make(*a, &timeline, [&] {
    ASSERT_TRUE(worker.Submit(batch_of_a(0, nullptr)));
    ASSERT_TRUE(worker.Submit(batch_of_a(1, nullptr)));
    ASSERT_TRUE(worker.Submit(batch_of_a(
        2, [&] { ASSERT_TRUE(worker.Submit(batch_of_a(3, nullptr))); })));
  })));
  ASSERT_TRUE(read.done.get_future().get().ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(done[i].get_future().get().ok()) << i;
  }
  const absl::Status refused = done[3].get_future().get();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()),
              ::testing::HasSubstr("batches are already in progress"));
}

TEST(WorkerLongCopyTest, ALongWriteIsSeenWholeByTheCommandsAfterIt) {
  Worker worker(OnePieceAtATime(), MakePools());
  absl::StatusOr<uint64_t> a = AllocateNow(worker, Pattern(kLarge, 1));
  absl::StatusOr<uint64_t> b = AllocateNow(worker, "b");
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string fresh = Pattern(kLarge, 9);
  Timeline timeline;
  // A long read holds the block while the write and two reads queue up.
  LongRead read;
  std::promise<absl::Status> write_done;
  std::promise<absl::StatusOr<std::string>> tail_done;
  std::promise<absl::StatusOr<std::string>> other_done;
  ASSERT_TRUE(worker.Submit(read.Make(*a, &timeline, [&] {
    Command write;
    write.op =
        WriteOp{.handle = *a, .data = fresh, .done = [&](absl::Status status) {
                  timeline.Take("write");
                  write_done.set_value(status);
                }};
    ASSERT_TRUE(worker.Submit(std::move(write)));
    ASSERT_TRUE(
        worker.Submit(SmallRead(*a, 0, "read of a", &timeline, &tail_done)));
  })));
  ASSERT_TRUE(read.done.get_future().get().ok());
  // Now the write is in its pieces: a read of another block runs between.
  ASSERT_TRUE(
      worker.Submit(SmallRead(*b, 0, "read of b", &timeline, &other_done)));
  EXPECT_TRUE(write_done.get_future().get().ok());
  absl::StatusOr<std::string> after = tail_done.get_future().get();
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(*after == fresh);
  EXPECT_TRUE(other_done.get_future().get().ok());
  const std::vector<std::string> order = timeline.order();
  EXPECT_LT(Position(order, "write"), Position(order, "read of a"));
}

TEST(WorkerLongCopyTest, ALongAllocationCancelledMidwayLeavesNoBlock) {
  Worker worker({.channel_capacity = 8,
                 .start_paused = true,
                 .defrag_slice = absl::Nanoseconds(1)},
                MakePools());
  const std::string large = Pattern(kLarge, 5);
  std::atomic<bool> cancelled{false};
  std::promise<absl::StatusOr<pools::BlockInfo>> allocated;
  Command allocate;
  allocate.cancelled = &cancelled;
  allocate.op = AllocateOp{.size = kLarge,
                           .data = large,
                           .done = [&](absl::StatusOr<pools::BlockInfo> b) {
                             allocated.set_value(std::move(b));
                           }};
  ASSERT_TRUE(worker.Submit(std::move(allocate)));
  // Runs after the allocation's first piece: the client goes away.
  Command stats;
  stats.op = StatsOp{.done = [&](absl::StatusOr<StatsSnapshot> snapshot) {
    EXPECT_EQ(snapshot->pools.total.blocks, 1u);
    cancelled.store(true, std::memory_order_release);
  }};
  ASSERT_TRUE(worker.Submit(std::move(stats)));
  worker.Resume();
  EXPECT_EQ(allocated.get_future().get().status().code(),
            absl::StatusCode::kCancelled);
  const StatsSnapshot snapshot = StatsNow(worker);
  EXPECT_EQ(snapshot.pools.total.blocks, 0u);
  // Its pages were fresh, and two pieces of 256 KiB were written: the 16 MiB
  // never written are not counted resident (they never were).
  EXPECT_LT(snapshot.pools.total.resident_bytes, 2u << 20);
}

TEST(WorkerLongCopyTest, ALongReadCancelledMidwayAnswersCancelled) {
  Worker worker(OnePieceAtATime(), MakePools());
  absl::StatusOr<uint64_t> a = AllocateNow(worker, Pattern(kLarge, 1));
  ASSERT_TRUE(a.ok());
  Timeline timeline;
  LongRead read;
  std::atomic<bool> cancelled{false};
  Command command = read.Make(*a, &timeline, [&] {
    Command stats;
    stats.op = StatsOp{.done = [&](absl::StatusOr<StatsSnapshot>) {
      cancelled.store(true, std::memory_order_release);
    }};
    ASSERT_TRUE(worker.Submit(std::move(stats)));
  });
  command.cancelled = &cancelled;
  ASSERT_TRUE(worker.Submit(std::move(command)));
  EXPECT_EQ(read.done.get_future().get().status().code(),
            absl::StatusCode::kCancelled);
  // The block is no longer busy: a Free runs at once.
  EXPECT_TRUE(FreeNow(worker, *a).ok());
}

TEST(WorkerLongCopyTest, CommandsWaitingForBusyBlocksAreBounded) {
  // channel_capacity 4: four commands may wait; the fifth is refused.
  Worker worker(OnePieceAtATime(/*channel_capacity=*/4), MakePools());
  absl::StatusOr<uint64_t> a = AllocateNow(worker, Pattern(kLarge, 1));
  ASSERT_TRUE(a.ok());
  Timeline timeline;
  LongRead read;
  std::vector<std::promise<absl::StatusOr<std::string>>> waiting(5);
  ASSERT_TRUE(worker.Submit(read.Make(*a, &timeline, [&] {
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(
          worker.Submit(SmallRead(*a, 1, "waiting", &timeline, &waiting[i])));
    }
    // Runs after those three wait: two more.
    Command stats;
    stats.op = StatsOp{.done = [&](absl::StatusOr<StatsSnapshot>) {
      for (int i = 3; i < 5; ++i) {
        ASSERT_TRUE(
            worker.Submit(SmallRead(*a, 1, "waiting", &timeline, &waiting[i])));
      }
    }};
    ASSERT_TRUE(worker.Submit(std::move(stats)));
  })));
  ASSERT_TRUE(read.done.get_future().get().ok());
  for (int i = 0; i < 4; ++i) {
    EXPECT_TRUE(waiting[i].get_future().get().ok()) << i;
  }
  const absl::Status refused = waiting[4].get_future().get().status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()),
              ::testing::HasSubstr("commands already wait"));
}

TEST(WorkerLongCopyTest, ALongAllocationCommitsItsPagesPieceByPiece) {
  // The OS refuses memory in the middle of the copy: the allocation answers
  // the refusal and leaves no block; the next one, with memory, succeeds.
  pools::FaultInjectingOs os;
  Worker worker(OnePieceAtATime(), MakePoolsWithLargeOs(&os));
  const std::string large = Pattern(kLarge, 6);
  // The worker thread makes no OS call of its own while idle (a warm-up
  // allocation is made and freed first): later commit calls are this
  // allocation's, 64 of them in pieces.
  absl::StatusOr<uint64_t> warm = AllocateNow(worker, large);
  ASSERT_TRUE(warm.ok());
  const uint64_t commits_before = os.calls(pools::OsCall::kCommit);
  EXPECT_GE(commits_before, 30u);  // most of the block, a piece at a time
  ASSERT_TRUE(FreeNow(worker, *warm).ok());
  os.FailAt(pools::OsCall::kCommit, 10, ENOMEM);
  absl::StatusOr<uint64_t> refused = AllocateNow(worker, large);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted)
      << refused.status();
  EXPECT_EQ(StatsNow(worker).pools.total.blocks, 0u);
  os.Heal();
  absl::StatusOr<uint64_t> again = AllocateNow(worker, large);
  ASSERT_TRUE(again.ok()) << again.status();
  Timeline timeline;
  LongRead read;
  ASSERT_TRUE(worker.Submit(read.Make(*again, &timeline)));
  EXPECT_TRUE(*read.done.get_future().get() == large);
}

TEST(WorkerLongCopyTest, ALongAllocationKeepsItsBytes) {
  Worker worker(OnePieceAtATime(), MakePools());
  const std::string large = Pattern(kLarge + 12345, 4);
  absl::StatusOr<uint64_t> a = AllocateNow(worker, large);
  ASSERT_TRUE(a.ok()) << a.status();
  Timeline timeline;
  LongRead read;
  ASSERT_TRUE(worker.Submit(read.Make(*a, &timeline)));
  EXPECT_TRUE(*read.done.get_future().get() == large);
}

// A large block without data (or with little) gets its zeros a piece at a
// time too, committed piece by piece, whether its extent was fresh or
// reused (resident, holding an old block's bytes).
TEST(WorkerLongCopyTest, ALargeBlockWithoutDataIsZeroedInPieces) {
  pools::FaultInjectingOs os;
  Worker worker(OnePieceAtATime(), MakePoolsWithLargeOs(&os));
  // Fresh pages: committed a piece at a time.
  const uint64_t commits_before = os.calls(pools::OsCall::kCommit);
  absl::StatusOr<uint64_t> fresh = AllocateNow(worker, "", kLarge);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_GE(os.calls(pools::OsCall::kCommit) - commits_before, 30u);
  Timeline timeline;
  LongRead read_fresh;
  ASSERT_TRUE(worker.Submit(read_fresh.Make(*fresh, &timeline)));
  EXPECT_TRUE(*read_fresh.done.get_future().get() == std::string(kLarge, '\0'));
  // A reused extent: an old block's bytes, zeroed.
  absl::StatusOr<uint64_t> old = AllocateNow(worker, Pattern(kLarge, 7));
  ASSERT_TRUE(old.ok());
  ASSERT_TRUE(FreeNow(worker, *old).ok());
  absl::StatusOr<uint64_t> reused = AllocateNow(worker, "abc", kLarge);
  ASSERT_TRUE(reused.ok()) << reused.status();
  LongRead read_reused;
  ASSERT_TRUE(worker.Submit(read_reused.Make(*reused, &timeline)));
  std::string expected(kLarge, '\0');
  expected.replace(0, 3, "abc");
  EXPECT_TRUE(*read_reused.done.get_future().get() == expected);
}

// A batch entry's read through a sink; `on_sink` runs on the worker when the
// sink is asked for room (before the first byte is copied).
struct SinkRead {
  std::string answer;
  std::promise<absl::StatusOr<std::string>> done;

  ReadOp Make(uint64_t handle, Timeline* timeline, const std::string& name,
              absl::AnyInvocable<void()> on_sink = nullptr) {
    return ReadOp{
        .handle = handle,
        .sink = [this, on_sink = std::move(on_sink)](
                    uint64_t length) mutable -> absl::StatusOr<std::string*> {
          answer.reserve(length);
          if (on_sink) on_sink();
          return &answer;
        },
        .done =
            [this, timeline, name](absl::StatusOr<absl::string_view> data) {
              timeline->Take(name);
              if (!data.ok()) {
                done.set_value(data.status());
              } else {
                // The view is of the sink's string, which holds the bytes.
                EXPECT_EQ(data->data(), answer.data());
                done.set_value(std::string(*data));
              }
            }};
  }
};

// Submits `batch` and returns the future of its completion.
std::future<absl::Status> SubmitBatch(
    Worker& worker, BatchOp batch, std::promise<absl::Status>* done,
    const std::atomic<bool>* cancelled = nullptr) {
  batch.done = [done](absl::Status status) { done->set_value(status); };
  Command command;
  command.cancelled = cancelled;
  command.op = std::move(batch);
  EXPECT_TRUE(worker.Submit(std::move(command)));
  return done->get_future();
}

TEST(WorkerLongCopyTest, ALongReadInABatchLetsOtherCommandsRunBetweenPieces) {
  Worker worker(OnePieceAtATime(), MakePools());
  const std::string large = Pattern(kLarge, 8);
  const std::string small = Pattern(100, 9);
  absl::StatusOr<uint64_t> a = AllocateNow(worker, large);
  absl::StatusOr<uint64_t> b = AllocateNow(worker, small);
  ASSERT_TRUE(a.ok() && b.ok());
  Timeline timeline;
  SinkRead long_read;
  SinkRead after;
  std::promise<absl::StatusOr<std::string>> small_done;
  BatchOp batch;
  // The small read is queued before the batch's long read copies a byte.
  batch.entries.emplace_back(long_read.Make(*a, &timeline, "long read", [&] {
    ASSERT_TRUE(
        worker.Submit(SmallRead(*b, 0, "small read", &timeline, &small_done)));
  }));
  batch.entries.emplace_back(after.Make(*b, &timeline, "entry after"));
  std::promise<absl::Status> batch_done;
  EXPECT_TRUE(SubmitBatch(worker, std::move(batch), &batch_done).get().ok());
  EXPECT_TRUE(*long_read.done.get_future().get() == large);
  EXPECT_EQ(*after.done.get_future().get(), small);
  EXPECT_EQ(*small_done.get_future().get(), small);
  // Copied whole, the long read would come first.
  EXPECT_EQ(timeline.order(), (std::vector<std::string>{
                                  "small read", "long read", "entry after"}));
}

TEST(WorkerLongCopyTest, ALongWriteInABatchIsSeenWholeByTheEntriesAfterIt) {
  Worker worker(OnePieceAtATime(), MakePools());
  absl::StatusOr<uint64_t> a = AllocateNow(worker, Pattern(kLarge, 10));
  absl::StatusOr<uint64_t> b = AllocateNow(worker, "b");
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string written = Pattern(kLarge, 11);
  Timeline timeline;
  std::promise<absl::StatusOr<std::string>> small_done;
  SinkRead after;
  BatchOp batch;
  batch.entries.emplace_back(
      WriteOp{.handle = *a, .data = written, .done = [&](absl::Status status) {
                EXPECT_TRUE(status.ok()) << status;
                timeline.Take("long write");
              }});
  batch.entries.emplace_back(after.Make(*a, &timeline, "read after"));
  // Right before the write runs, a read of another block is queued: it runs
  // between the write's pieces.
  batch.admit = [&](size_t position) {
    if (position == 0) {
      EXPECT_TRUE(worker.Submit(
          SmallRead(*b, 0, "small read", &timeline, &small_done)));
    }
    return absl::OkStatus();
  };
  std::promise<absl::Status> batch_done;
  EXPECT_TRUE(SubmitBatch(worker, std::move(batch), &batch_done).get().ok());
  EXPECT_TRUE(*after.done.get_future().get() == written);
  EXPECT_EQ(*small_done.get_future().get(), "b");
  EXPECT_EQ(timeline.order(), (std::vector<std::string>{
                                  "small read", "long write", "read after"}));
}

TEST(WorkerLongCopyTest, ALongAllocationInABatchCommitsPieceByPiece) {
  // The OS refuses memory in the middle of the batch's first allocation: it
  // answers the refusal and leaves no block, and the batch goes on with its
  // next allocation, which gets its bytes.
  pools::FaultInjectingOs os;
  Worker worker(OnePieceAtATime(), MakePoolsWithLargeOs(&os));
  const std::string first = Pattern(kLarge, 12);
  const std::string second = Pattern(kLarge + 777, 13);
  os.FailAt(pools::OsCall::kCommit, 10, ENOMEM);
  absl::Status first_status;
  uint64_t second_handle = 0;
  BatchOp batch;
  batch.entries.emplace_back(
      AllocateOp{.size = first.size(),
                 .data = first,
                 .done = [&](absl::StatusOr<pools::BlockInfo> block) {
                   first_status = block.status();
                 }});
  batch.entries.emplace_back(
      AllocateOp{.size = second.size(),
                 .data = second,
                 .done = [&](absl::StatusOr<pools::BlockInfo> block) {
                   ASSERT_TRUE(block.ok()) << block.status();
                   second_handle = block->handle;
                 }});
  std::promise<absl::Status> batch_done;
  const uint64_t commits_before = os.calls(pools::OsCall::kCommit);
  EXPECT_TRUE(SubmitBatch(worker, std::move(batch), &batch_done).get().ok());
  // Whole, each block would take one commit.
  EXPECT_GE(os.calls(pools::OsCall::kCommit) - commits_before, 40u);
  EXPECT_EQ(first_status.code(), absl::StatusCode::kResourceExhausted)
      << first_status;
  ASSERT_NE(second_handle, 0u);
  Timeline timeline;
  LongRead read;
  ASSERT_TRUE(worker.Submit(read.Make(second_handle, &timeline)));
  EXPECT_TRUE(*read.done.get_future().get() == second);
  EXPECT_EQ(StatsNow(worker).pools.total.blocks, 1u);
}

TEST(WorkerLongCopyTest,
     ABatchCancelledDuringALongReadAnswersTheRestCancelled) {
  Worker worker(OnePieceAtATime(), MakePools());
  absl::StatusOr<uint64_t> a = AllocateNow(worker, Pattern(kLarge, 14));
  absl::StatusOr<uint64_t> b = AllocateNow(worker, "b");
  ASSERT_TRUE(a.ok() && b.ok());
  std::atomic<bool> cancelled{false};
  Timeline timeline;
  SinkRead long_read;
  SinkRead after;
  BatchOp batch;
  batch.entries.emplace_back(long_read.Make(*a, &timeline, "long read", [&] {
    cancelled.store(true, std::memory_order_release);
  }));
  batch.entries.emplace_back(after.Make(*b, &timeline, "entry after"));
  std::promise<absl::Status> batch_done;
  EXPECT_TRUE(SubmitBatch(worker, std::move(batch), &batch_done, &cancelled)
                  .get()
                  .ok());
  EXPECT_EQ(long_read.done.get_future().get().status().code(),
            absl::StatusCode::kCancelled);
  EXPECT_EQ(after.done.get_future().get().status().code(),
            absl::StatusCode::kCancelled);
  // The block is no longer busy: a Free runs at once.
  EXPECT_TRUE(FreeNow(worker, *a).ok());
}

}  // namespace
}  // namespace poold
