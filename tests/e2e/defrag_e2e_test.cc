// End-to-end tests of long defragmentations against the real poold, through
// the C++ generated stub: reads keep completing while hundreds of MiB are
// compacted in bounded slices; a short deadline ends a defragmentation with a
// partial report (or DEADLINE_EXCEEDED) and leaves every block intact;
// SIGTERM during a defragmentation answers it and poold exits 0.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/e2e/pool_test_client.h"
#include "tests/e2e/poold_process.h"

namespace poold::testing {
namespace {

using ::testing::AnyOf;
using ::testing::HasSubstr;

absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// Calls in flight while building and checking the data.
constexpr int kWindow = 64;
// Block sizes of the fragmented data sets. poold takes one RPC per block, at
// some 20 000 per second on two cores, so 300 MiB of 100-200 B blocks (two
// million allocations and 1.6 million frees) would take minutes to set up.
// Blocks from the top half of the small pool and the lower quarter of the
// medium pool build the same kind of fragmentation (random holes in spans of
// equal slots, in many size classes of both slab pools) with ten times fewer
// calls.
constexpr uint64_t kSmallMin = 512;
constexpr uint64_t kSmallMax = 1023;
constexpr uint64_t kMediumMin = 1024;
constexpr uint64_t kMediumMax = 16383;
// Sanitizer builds run several times slower: an eighth of the data (and
// of the thresholds that depend on it).
constexpr uint64_t kScale = kSanitizerBuild ? 8 : 1;
// The data set of the test of reads during a defragmentation: 336 MiB
// allocated, 80% freed, leaves over 256 MiB to reclaim (in a plain build).
// Most of it in medium blocks, which take fewer calls per MiB.
constexpr uint64_t kLoadSmallBytes = (uint64_t{64} << 20) / kScale;
constexpr uint64_t kLoadMediumBytes = (uint64_t{272} << 20) / kScale;
constexpr uint64_t kLoadFragmentedBytes = (uint64_t{256} << 20) / kScale;
constexpr int kReaderThreads = 4;
// The data set of the deadline and SIGTERM tests: half as big; its
// defragmentation takes some 40 ms (plain build, idle machine).
constexpr uint64_t kSmallBytes = (uint64_t{32} << 20) / kScale;
constexpr uint64_t kMediumBytes = (uint64_t{128} << 20) / kScale;
constexpr absl::Duration kShortDeadline = absl::Milliseconds(30);

// A fragmented data set: `small_bytes` of small-pool blocks and
// `medium_bytes` of medium-pool blocks, then `freed_percent` of the blocks
// freed at random. Returns the survivors.
struct DataSet {
  std::vector<TestBlock> survivors;
  uint64_t allocated_bytes = 0;
  size_t allocated_blocks = 0;
  absl::Duration setup_time;
};

void BuildFragmented(PoolTestClient& client, uint64_t small_bytes,
                     uint64_t medium_bytes, int freed_percent, DataSet* out) {
  const absl::Time start = absl::Now();
  std::mt19937_64 rng(77);
  std::vector<TestBlock> blocks;
  auto add = [&](uint64_t bytes, uint64_t min_size, uint64_t max_size) {
    std::uniform_int_distribution<uint64_t> size(min_size, max_size);
    for (uint64_t sum = 0; sum < bytes;) {
      blocks.push_back({.seed = blocks.size() * 104729 + 5, .size = size(rng)});
      sum += blocks.back().size;
    }
  };
  add(small_bytes, kSmallMin, kSmallMax);
  add(medium_bytes, kMediumMin, kMediumMax);
  // Interleave the pools' calls, as an application would.
  std::shuffle(blocks.begin(), blocks.end(), rng);
  POOLD_ASSERT_OK(client.AllocateAll(blocks, kWindow));
  out->allocated_blocks = blocks.size();
  out->allocated_bytes = 0;
  for (const TestBlock& block : blocks) out->allocated_bytes += block.size;

  std::shuffle(blocks.begin(), blocks.end(), rng);
  const size_t freed = blocks.size() * freed_percent / 100;
  std::vector<uint64_t> handles;
  handles.reserve(freed);
  for (size_t i = 0; i < freed; ++i) handles.push_back(blocks[i].handle);
  POOLD_ASSERT_OK(client.FreeAll(handles, kWindow));
  out->survivors.assign(blocks.begin() + freed, blocks.end());
  out->setup_time = absl::Now() - start;
}

// How long each thread of a process has run on a CPU and waited for one
// (runnable, but preempted or not yet scheduled), in nanoseconds, from
// /proc/<pid>/task/<tid>/schedstat.
struct ThreadTimes {
  uint64_t run_ns = 0;
  uint64_t wait_ns = 0;
};

std::map<pid_t, ThreadTimes> ReadThreadTimes(pid_t pid) {
  std::map<pid_t, ThreadTimes> times;
  std::error_code error;
  for (const std::filesystem::directory_entry& entry :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/task"),
                                           error)) {
    pid_t tid = 0;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &tid)) continue;
    std::ifstream file(entry.path() / "schedstat");
    ThreadTimes thread;
    if (file >> thread.run_ns >> thread.wait_ns) times[tid] = thread;
  }
  return times;
}

// The thread that ran the most between two snapshots (during a
// defragmentation: poold's worker), with its run and wait times since.
struct BusiestThread {
  pid_t tid = 0;
  absl::Duration run;
  absl::Duration wait;
};

BusiestThread FindBusiestThread(const std::map<pid_t, ThreadTimes>& before,
                                const std::map<pid_t, ThreadTimes>& after) {
  BusiestThread busiest;
  for (const auto& [tid, times] : after) {
    auto earlier = before.find(tid);
    const ThreadTimes start =
        earlier == before.end() ? ThreadTimes{} : earlier->second;
    const absl::Duration run = absl::Nanoseconds(times.run_ns - start.run_ns);
    if (busiest.tid == 0 || run > busiest.run) {
      busiest = {tid, run, absl::Nanoseconds(times.wait_ns - start.wait_ns)};
    }
  }
  return busiest;
}

// Threads that read random blocks back-to-back with blocking calls and
// check each answer, keeping when every read started and ended.
class Readers {
 public:
  struct Record {
    absl::Time start;
    absl::Time end;
    bool ok = false;       // the RPC succeeded
    bool correct = false;  // and returned the block's contents
  };

  Readers(v1::PoolService::Stub* stub, const std::vector<TestBlock>* blocks,
          int threads)
      : stub_(stub), blocks_(blocks), per_thread_(threads) {}
  ~Readers() { Stop(); }

  void Start() {
    for (size_t t = 0; t < per_thread_.size(); ++t) {
      threads_.emplace_back([this, t] { Run(t); });
    }
  }

  // Waits until `count` reads have completed (or 30 s passed).
  bool WaitForReads(int64_t count) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (completed_.load() < count) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return true;
  }

  // Stops and joins the threads and returns every read, in no order.
  std::vector<Record> Stop() {
    stop_.store(true);
    for (std::thread& thread : threads_) thread.join();
    threads_.clear();
    std::vector<Record> all;
    for (std::vector<Record>& records : per_thread_) {
      all.insert(all.end(), records.begin(), records.end());
      records.clear();
    }
    return all;
  }

 private:
  void Run(size_t index) {
    std::mt19937_64 rng(index + 1);
    std::uniform_int_distribution<size_t> pick(0, blocks_->size() - 1);
    std::vector<Record>& records = per_thread_[index];
    while (!stop_.load()) {
      const TestBlock& block = (*blocks_)[pick(rng)];
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
      v1::ReadRequest request;
      request.set_handle(block.handle);
      v1::ReadResponse response;
      Record record;
      record.start = absl::Now();
      record.ok = stub_->Read(&context, request, &response).ok();
      record.end = absl::Now();
      record.correct =
          record.ok && response.data() == BlockContents(block.seed, block.size);
      records.push_back(record);
      completed_.fetch_add(1);
    }
  }

  v1::PoolService::Stub* const stub_;
  const std::vector<TestBlock>* const blocks_;
  std::vector<std::vector<Record>> per_thread_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> completed_{0};
};

class DefragE2eTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags) {
    PooldProcess::Options options;
    options.extra_flags = std::move(flags);
    absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
        PooldProcess::Start(options);
    ASSERT_TRUE(poold.ok()) << poold.status();
    poold_ = *std::move(poold);
    client_ = std::make_unique<PoolTestClient>(poold_->NewChannel());
  }

  void TearDown() override {
    client_.reset();
    if (poold_ != nullptr && poold_->Running()) {
      absl::StatusOr<int> code = poold_->Stop();
      ASSERT_TRUE(code.ok()) << code.status();
      EXPECT_EQ(*code, 0) << poold_->Log();
    }
  }

  std::unique_ptr<PooldProcess> poold_;
  std::unique_ptr<PoolTestClient> client_;
};

// Over 256 MiB of fragmented memory are compacted in 1 ms slices while four
// threads read random blocks back-to-back: reads keep completing, with the
// right contents, while the defragmentation runs; no read waits for the
// whole of it; no slice runs much past its budget.
TEST_F(DefragE2eTest, ReadsKeepCompletingDuringALargeDefragmentation) {
  constexpr absl::Duration kSlice = absl::Milliseconds(1);
  ASSERT_NO_FATAL_FAILURE(Start(
      {absl::StrCat("--defrag_slice_us=", absl::ToInt64Microseconds(kSlice))}));
  DataSet data;
  ASSERT_NO_FATAL_FAILURE(
      BuildFragmented(*client_, kLoadSmallBytes, kLoadMediumBytes, 80, &data));
  v1::FragmentationReport analysis;
  ASSERT_TRUE(client_->Analyze({}, &analysis).ok());
  // The fragmented data: what the pools hold, most of it reclaimable.
  EXPECT_GE(analysis.total().resident_bytes(), kLoadFragmentedBytes);
  EXPECT_GE(analysis.projected_bytes_reclaimed(), kLoadFragmentedBytes);

  Readers readers(client_->stub(), &data.survivors, kReaderThreads);
  readers.Start();
  ASSERT_TRUE(readers.WaitForReads(100));
  const std::map<pid_t, ThreadTimes> times_before =
      ReadThreadTimes(poold_->pid());
  v1::DefragReport report;
  const absl::Time sent = absl::Now();
  grpc::Status status = client_->Defragment({}, &report, absl::Seconds(120));
  const absl::Time answered = absl::Now();
  const BusiestThread worker =
      FindBusiestThread(times_before, ReadThreadTimes(poold_->pid()));
  absl::SleepFor(absl::Milliseconds(20));
  std::vector<Readers::Record> reads = readers.Stop();
  ASSERT_TRUE(status.ok()) << status.error_message();

  const absl::Duration server_time = FromProto(report.duration());
  const absl::Duration max_slice = FromProto(report.max_slice_duration());
  // Reads issued after the defragmentation was asked for and answered
  // before it finished, and the longest of them.
  int during = 0;
  absl::Duration longest = absl::ZeroDuration();
  int failed = 0;
  for (const Readers::Record& read : reads) {
    if (!read.ok || !read.correct) ++failed;
    if (read.start >= sent && read.end <= answered) {
      ++during;
      longest = std::max(longest, read.end - read.start);
    }
  }
  std::fprintf(
      stderr,
      "defrag e2e: %zu blocks (%s) allocated, %zu survive, set up in %s; "
      "resident %s, reclaimable %s; defragmentation %s (server %s, %llu "
      "slices, longest %s; worker thread ran %s, waited for a CPU %s): "
      "reclaimed %s, moved %s in %llu blocks; reads: %zu in all, %d during "
      "the defragmentation, longest %s\n",
      data.allocated_blocks, FormatBytes(data.allocated_bytes).c_str(),
      data.survivors.size(), absl::FormatDuration(data.setup_time).c_str(),
      FormatBytes(analysis.total().resident_bytes()).c_str(),
      FormatBytes(analysis.projected_bytes_reclaimed()).c_str(),
      absl::FormatDuration(answered - sent).c_str(),
      absl::FormatDuration(server_time).c_str(),
      static_cast<unsigned long long>(report.slices()),
      absl::FormatDuration(max_slice).c_str(),
      absl::FormatDuration(worker.run).c_str(),
      absl::FormatDuration(worker.wait).c_str(),
      FormatBytes(report.bytes_reclaimed()).c_str(),
      FormatBytes(report.bytes_moved()).c_str(),
      static_cast<unsigned long long>(report.blocks_moved()), reads.size(),
      during, absl::FormatDuration(longest).c_str());

  EXPECT_TRUE(report.complete());
  // Not exactly the projection: with the default --cache_decay the worker
  // may return spans emptied by the last frees to the OS in between.
  EXPECT_LE(report.bytes_reclaimed(), analysis.projected_bytes_reclaimed());
  EXPECT_GE(report.bytes_reclaimed(), kLoadFragmentedBytes);
  EXPECT_EQ(failed, 0) << "reads failed or returned wrong data";
  // Reads flowed during the defragmentation: each reader thread completed
  // many reads while it ran (were reads held back until it finished, each
  // thread would have completed at most one).
  EXPECT_GE(during, 10 * kReaderThreads);
  // No read waited behind the whole defragmentation (only behind a slice).
  EXPECT_LT(longest, server_time / 2);
  // The longest slice: the compactor checks the clock between moves, so a
  // slice ends within microseconds of its budget; 5x the budget leaves room
  // for the longest indivisible steps (a span returned to the OS, the
  // bookkeeping at the end of a pool). On an idle machine it stays under
  // 2 ms. What a wall-clock bound cannot absorb is preemption: on a busy
  // 2-core machine the worker thread waited up to 18 ms for a CPU inside
  // one slice. The kernel counts that wait per thread (schedstat), so the
  // bound adds the worker's total wait for a CPU during the
  // defragmentation: a slice that overran by itself still fails.
  EXPECT_LE(max_slice, 5 * kSlice + worker.wait)
      << "worker thread " << worker.tid << " ran "
      << absl::FormatDuration(worker.run);
  POOLD_ASSERT_OK(client_->VerifyAll(data.survivors, kWindow));
}

// The report of a defragmentation stopped early by `reason`: pools before
// the one in progress CLEANED, that one PARTIAL, the rest SKIPPED ("not
// started: ..."), and less reclaimed than a full run would.
void ExpectStoppedEarly(const v1::DefragReport& report,
                        absl::string_view reason) {
  EXPECT_FALSE(report.complete());
  EXPECT_EQ(report.pools_size(), 3);
  EXPECT_EQ(report.pools_partial(), 1u);
  EXPECT_EQ(report.pools_failed(), 0u);
  bool seen_partial = false;
  for (const v1::PoolDefragReport& pool : report.pools()) {
    SCOPED_TRACE(v1::Pool_Name(pool.pool()));
    if (seen_partial) {
      EXPECT_EQ(pool.outcome(), v1::PoolDefragReport::OUTCOME_SKIPPED);
      EXPECT_EQ(pool.reason(), absl::StrCat("not started: ", reason));
    } else if (pool.outcome() == v1::PoolDefragReport::OUTCOME_PARTIAL) {
      seen_partial = true;
      EXPECT_EQ(pool.reason(), reason);
    } else {
      EXPECT_THAT(pool.outcome(), AnyOf(v1::PoolDefragReport::OUTCOME_CLEANED,
                                        v1::PoolDefragReport::OUTCOME_SKIPPED));
    }
  }
  EXPECT_TRUE(seen_partial);
}

// A defragmentation whose deadline comes before it can finish stops at a
// slice boundary shortly before the deadline and answers OK with a partial
// report; if the answer cannot beat the client's deadline (or the command
// reached the worker too late), the client sees DEADLINE_EXCEEDED. Either
// way every block is intact and a second, unhurried defragmentation
// reclaims the rest: together exactly what was projected.
TEST_F(DefragE2eTest, ShortDeadlineStopsWithAPartialReport) {
  // No cache decay between the two runs: the projection stays exact. Short
  // slices: poold checks the time only between slices (and serves requests
  // there), so it can answer up to two slices after it meant to stop, and
  // with 1 ms slices that eats the 2 ms it keeps in hand for a 20 ms
  // deadline.
  ASSERT_NO_FATAL_FAILURE(
      Start({"--cache_decay=inf", "--defrag_slice_us=100"}));
  DataSet data;
  ASSERT_NO_FATAL_FAILURE(
      BuildFragmented(*client_, kSmallBytes, kMediumBytes, 80, &data));
  v1::FragmentationReport analysis;
  ASSERT_TRUE(client_->Analyze({}, &analysis).ok());
  const uint64_t projected = analysis.projected_bytes_reclaimed();
  ASSERT_GT(projected, 0u);

  v1::DefragReport first;
  const absl::Time sent = absl::Now();
  grpc::Status status = client_->Defragment({}, &first, kShortDeadline);
  const absl::Duration rpc_time = absl::Now() - sent;
  ASSERT_THAT(status.error_code(),
              AnyOf(grpc::StatusCode::OK, grpc::StatusCode::DEADLINE_EXCEEDED))
      << status.error_message();
  uint64_t reclaimed_first = 0;
  if (status.ok()) {
    ExpectStoppedEarly(first, "deadline exceeded");
    reclaimed_first = first.bytes_reclaimed();
    EXPECT_LE(reclaimed_first, projected);
  }
  std::fprintf(stderr,
               "defrag e2e: %s of fragmented data, projected reclaim %s; "
               "deadline %s: %s after %s, reclaimed %s\n",
               FormatBytes(analysis.total().resident_bytes()).c_str(),
               FormatBytes(projected).c_str(),
               absl::FormatDuration(kShortDeadline).c_str(),
               status.ok() ? "partial report" : "DEADLINE_EXCEEDED",
               absl::FormatDuration(rpc_time).c_str(),
               FormatBytes(reclaimed_first).c_str());
  POOLD_ASSERT_OK(client_->VerifyAll(data.survivors, kWindow));

  v1::DefragReport second;
  ASSERT_TRUE(client_->Defragment({}, &second, absl::Seconds(60)).ok());
  EXPECT_TRUE(second.complete());
  EXPECT_EQ(second.pools_partial(), 0u);
  if (status.ok()) {
    EXPECT_EQ(reclaimed_first + second.bytes_reclaimed(), projected);
  } else {
    EXPECT_LE(second.bytes_reclaimed(), projected);
  }
  v1::GetStatsResponse stats;
  ASSERT_TRUE(client_->GetStats(false, &stats).ok());
  EXPECT_EQ(stats.total().reclaimable_bytes(), 0u);
  POOLD_ASSERT_OK(client_->VerifyAll(data.survivors, kWindow));
}

// SIGTERM while a defragmentation runs: it stops at the next slice
// boundary, its RPC is answered (OK with a partial report saying why), and
// poold exits 0.
TEST_F(DefragE2eTest, SigtermDuringADefragmentationStopsItCleanly) {
  ASSERT_NO_FATAL_FAILURE(Start({}));
  DataSet data;
  ASSERT_NO_FATAL_FAILURE(
      BuildFragmented(*client_, kSmallBytes, kMediumBytes, 80, &data));

  struct Call {
    grpc::ClientContext context;
    v1::TriggerDefragmentationRequest request;
    v1::DefragReport report;
    grpc::Status status;
    absl::Notification done;
  } call;
  call.context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  client_->stub()->async()->TriggerDefragmentation(
      &call.context, &call.request, &call.report, [&call](grpc::Status s) {
        call.status = std::move(s);
        call.done.Notify();
      });
  // Signal once poold says the defragmentation started.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!absl::StrContains(poold_->Log(), "defragmentation started")) {
    ASSERT_LT(absl::Now(), deadline) << poold_->Log();
    ASSERT_FALSE(call.done.HasBeenNotified())
        << "the defragmentation ended before it was seen to start: "
        << call.status.error_message();
    absl::SleepFor(absl::Microseconds(200));
  }
  ASSERT_TRUE(poold_->Signal(SIGTERM).ok());
  ASSERT_TRUE(call.done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  absl::StatusOr<int> code = poold_->WaitForExit();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0) << poold_->Log();

  std::fprintf(stderr,
               "defrag e2e: SIGTERM during a defragmentation: %s, complete "
               "%d, reclaimed %s in %s\n",
               call.status.ok()
                   ? "OK"
                   : absl::StatusCodeToString(static_cast<absl::StatusCode>(
                                                  call.status.error_code()))
                         .c_str(),
               call.report.complete() ? 1 : 0,
               FormatBytes(call.report.bytes_reclaimed()).c_str(),
               absl::FormatDuration(FromProto(call.report.duration())).c_str());
  ASSERT_TRUE(call.status.ok()) << call.status.error_message();
  ExpectStoppedEarly(call.report, "server shutting down");
  EXPECT_THAT(poold_->Log(),
              HasSubstr("defragmentation stopped (server shutting down)"));
}

}  // namespace
}  // namespace poold::testing
