// Tests of the worker's automatic defragmentation: it runs on its own, says
// why, stays idle when nothing changes, leaves unfixable fragmentation alone,
// keeps to its CPU share and gives way to a requested defragmentation.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/stats_sink.h"
#include "worker/worker.h"

namespace poold {
namespace {

using pools::DefragOrigin;
using pools::DefragReport;
using pools::DefragStopReason;
using ::testing::HasSubstr;

constexpr uint64_t kMiB = uint64_t{1} << 20;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

Worker::Options AutoOptions(double cpu_share) {
  Worker::Options options;
  options.channel_capacity = 64;
  options.maintenance_interval = absl::Milliseconds(5);
  options.auto_defrag.enabled = true;
  options.auto_defrag.interval = absl::Milliseconds(10);
  options.auto_defrag.max_backoff = absl::Seconds(1);
  options.auto_defrag.min_reclaimable_bytes = 1 * kMiB;
  options.auto_defrag.min_cpu_share = cpu_share;
  options.auto_defrag.max_cpu_share = cpu_share;
  return options;
}

std::unique_ptr<pools::PoolSet> MakePools() {
  pools::PoolSetOptions options;
  options.handle_key = 78;
  return *pools::PoolSet::Create(options);
}

// `blocks` 100-byte blocks, block i filled with byte i; 9 in 10 freed (the
// survivors' handles go to `kept`): about 90% fragmentation.
std::unique_ptr<pools::PoolSet> Fragmented(size_t blocks,
                                           std::vector<uint64_t>* kept) {
  auto pools = MakePools();
  std::vector<uint64_t> all;
  for (size_t i = 0; i < blocks; ++i) {
    all.push_back(
        pools->Allocate(100, std::string(100, static_cast<char>(i)))->handle);
  }
  for (size_t i = 0; i < blocks; ++i) {
    if (i % 10 == 3) {
      kept->push_back(all[i]);
    } else {
      CHECK(pools->Free(all[i]).ok());
    }
  }
  return pools;
}

// Runs `op` through the worker and waits for its answer.
template <typename Result, typename Op>
Result Call(Worker& worker, Op op) {
  std::promise<Result> promise;
  std::future<Result> answer = promise.get_future();
  op.done = [&promise](Result result) { promise.set_value(std::move(result)); };
  Command command;
  command.op = std::move(op);
  CHECK(worker.Submit(std::move(command)));
  return answer.get();
}

StatsSnapshot Stats(Worker& worker) {
  StatsOp op;
  op.include_defrag_history = true;
  return *Call<absl::StatusOr<StatsSnapshot>>(worker, std::move(op));
}

// Asks for the stats until `done` holds (the worker answers each request
// between its own steps); fails the test after a minute.
template <typename Pred>
StatsSnapshot StatsWhen(Worker& worker, Pred done) {
  const absl::Time give_up = absl::Now() + absl::Minutes(1);
  StatsSnapshot stats = Stats(worker);
  while (!done(stats) && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(2));
    stats = Stats(worker);
  }
  EXPECT_TRUE(done(stats)) << "gave up waiting; last decision: "
                           << stats.auto_defrag.last_decision;
  return stats;
}

// Reads a sample of the survivors through the worker (the view into pool
// memory is copied in the completion, as the server does).
void ExpectIntact(Worker& worker, const std::vector<uint64_t>& kept) {
  for (size_t i = 0; i < kept.size(); i += 97) {
    std::promise<absl::StatusOr<std::string>> promise;
    auto answer = promise.get_future();
    ReadOp op;
    op.handle = kept[i];
    op.done = [&promise](absl::StatusOr<absl::string_view> data) {
      promise.set_value(data.ok() ? absl::StatusOr<std::string>(*data)
                                  : data.status());
    };
    Command command;
    command.op = std::move(op);
    ASSERT_TRUE(worker.Submit(std::move(command)));
    const absl::StatusOr<std::string> data = answer.get();
    ASSERT_TRUE(data.ok()) << data.status();
    EXPECT_EQ(*data, std::string(100, static_cast<char>(i * 10 + 3)));
  }
}

TEST(AutoDefragWorkerTest, DefragmentsOnItsOwnAndSaysWhy) {
  std::vector<uint64_t> kept;
  Worker worker(AutoOptions(0.5), Fragmented(400000, &kept));
  const StatsSnapshot stats = StatsWhen(worker, [](const StatsSnapshot& s) {
    return s.worker.automatic_defragmentations == 1 &&
           s.auto_defrag.state == AutoDefragState::kIdle &&
           !s.auto_defrag.last_decision_ran;
  });
  // It got the fragmentation below the stop threshold, or all of it.
  EXPECT_TRUE(stats.pools.total.FragmentationRatio() < 0.05 ||
              stats.pools.total.reclaimable_bytes == 0)
      << stats.pools.total.FragmentationRatio();
  EXPECT_EQ(stats.worker.defragmentations, 0u);
  EXPECT_EQ(stats.auto_defrag.runs, 1u);
  EXPECT_GT(stats.auto_defrag.bytes_reclaimed, 30 * kMiB);
  EXPECT_GT(stats.auto_defrag.cpu_time, absl::ZeroDuration());
  EXPECT_DOUBLE_EQ(stats.auto_defrag.cpu_share, 0.5);
  // The look after the run says why it does not run again.
  EXPECT_THAT(stats.auto_defrag.last_decision,
              ::testing::AnyOf(HasSubstr("nothing to reclaim"),
                               HasSubstr("below the")));
  ASSERT_EQ(stats.recent_defragmentations.size(), 1u);
  const DefragReport& report = stats.recent_defragmentations[0];
  EXPECT_EQ(report.origin, DefragOrigin::kAutomatic);
  EXPECT_THAT(report.stop_reason,
              ::testing::AnyOf(DefragStopReason::kFinished,
                               DefragStopReason::kTargetReached));
  EXPECT_EQ(report.bytes_reclaimed, stats.auto_defrag.bytes_reclaimed);
  ExpectIntact(worker, kept);
}

TEST(AutoDefragWorkerTest, AnIdleServerIsNotLookedAtUntilSomethingChanges) {
  std::vector<uint64_t> kept;
  Worker worker(AutoOptions(0.5), Fragmented(100000, &kept));
  const StatsSnapshot after_run = StatsWhen(worker, [](const StatsSnapshot& s) {
    return s.auto_defrag.runs == 1 && !s.auto_defrag.last_decision_ran &&
           s.auto_defrag.state == AutoDefragState::kIdle;
  });
  const absl::Time last_look = after_run.auto_defrag.last_decision_at;
  // 50 look intervals with no allocation or free: no look, no run.
  const absl::Time until = absl::Now() + absl::Milliseconds(500);
  const StatsSnapshot idle = StatsWhen(
      worker, [until](const StatsSnapshot&) { return absl::Now() >= until; });
  EXPECT_EQ(idle.auto_defrag.last_decision_at, last_look);
  EXPECT_EQ(idle.auto_defrag.runs, 1u);
  // An allocation is a change: the next tick looks again.
  AllocateOp allocate;
  allocate.size = 100;
  allocate.data = "x";
  ASSERT_TRUE(
      Call<absl::StatusOr<pools::BlockInfo>>(worker, std::move(allocate)).ok());
  const StatsSnapshot looked =
      StatsWhen(worker, [last_look](const StatsSnapshot& s) {
        return s.auto_defrag.last_decision_at > last_look;
      });
  EXPECT_FALSE(looked.auto_defrag.last_decision_ran);
}

TEST(AutoDefragWorkerTest, FragmentationItCannotFixStartsNoRun) {
  // One block in each of many size classes: a page each, mostly empty, yet
  // nothing compaction could return.
  auto pools = MakePools();
  for (uint64_t size = 8; size < 1024; size += 4) {
    ASSERT_TRUE(pools->Allocate(size, "").ok());
  }
  for (uint64_t size = 1024; size < 60000; size += size / 16) {
    ASSERT_TRUE(pools->Allocate(size, "").ok());
  }
  const pools::FragmentationStats before = pools->Stats(false).total;
  ASSERT_GT(before.FragmentationRatio(), 0.3);
  ASSERT_LT(before.reclaimable_bytes, 1 * kMiB);
  Worker worker(AutoOptions(0.5), std::move(pools));
  const StatsSnapshot looked = StatsWhen(worker, [](const StatsSnapshot& s) {
    return s.auto_defrag.last_decision_at != absl::InfinitePast();
  });
  EXPECT_FALSE(looked.auto_defrag.last_decision_ran);
  EXPECT_THAT(looked.auto_defrag.last_decision,
              ::testing::AnyOf(HasSubstr("nothing to reclaim"),
                               HasSubstr("below the 1.0 MiB minimum")));
  // And it does not keep looking at the same pools.
  const absl::Time until = absl::Now() + absl::Milliseconds(300);
  const StatsSnapshot later = StatsWhen(
      worker, [until](const StatsSnapshot&) { return absl::Now() >= until; });
  EXPECT_EQ(later.auto_defrag.last_decision_at,
            looked.auto_defrag.last_decision_at);
  EXPECT_EQ(later.worker.automatic_defragmentations, 0u);
  EXPECT_EQ(later.auto_defrag.cpu_time, absl::ZeroDuration());
}

// Keeps the snapshots the worker publishes, so a test can wait for one
// without sending the worker a command.
class WaitingSink : public StatsSink {
 public:
  void Publish(StatsSnapshot snapshot) override {
    std::lock_guard<std::mutex> lock(mu_);
    last_ = std::move(snapshot);
    published_.notify_all();
  }

  // The first published snapshot for which `done` holds; fails the test
  // after a minute.
  template <typename Pred>
  StatsSnapshot WaitFor(Pred done) {
    std::unique_lock<std::mutex> lock(mu_);
    EXPECT_TRUE(published_.wait_for(lock, std::chrono::minutes(1),
                                    [&] { return done(last_); }))
        << "gave up waiting; last decision: "
        << last_.auto_defrag.last_decision;
    return last_;
  }

 private:
  std::mutex mu_;
  std::condition_variable published_;
  StatsSnapshot last_;
};

TEST(AutoDefragWorkerTest, AnAutomaticRunLeavesAHeapThatDidNotGrowAlone) {
  // A requested run trims the heap at its end (WorkerDefragTest); an
  // automatic one, which under churn ends every few hundred milliseconds
  // while clients wait, only when the heap grew 16 MiB since the last trim.
  // No command ever runs here, so the idle maintenance trims only on that
  // same growth, which this test does not cause: a trim counted here would
  // be the automatic run's.
  if (kSanitized) {
    GTEST_SKIP() << "a sanitizer's allocator keeps freed memory resident "
                    "(quarantine), so the process grows outside the pools "
                    "and a trim is due";
  }
  std::vector<uint64_t> kept;
  WaitingSink sink;
  Worker::Options options = AutoOptions(0.5);
  options.stats_sink = &sink;
  options.publish_interval = absl::Milliseconds(5);
  Worker worker(options, Fragmented(400000, &kept));
  const StatsSnapshot after = sink.WaitFor([](const StatsSnapshot& s) {
    return s.worker.automatic_defragmentations >= 1;
  });
  EXPECT_GT(after.auto_defrag.bytes_reclaimed, 30 * kMiB);
  EXPECT_EQ(after.worker.heap_trims, 0u);
  worker.Stop();
}

// The median of the automatic slices' durations in `stats`, as the bound of
// its histogram bucket.
absl::Duration MedianAutomaticSlice(const StatsSnapshot& stats) {
  const LatencyHistogram& slices =
      stats.worker.by_origin[static_cast<size_t>(DefragOrigin::kAutomatic)]
          .slices;
  uint64_t seen = 0;
  for (size_t i = 0; i < slices.counts().size(); ++i) {
    seen += slices.counts()[i];
    if (2 * seen >= slices.count()) {
      return i < LatencyHistogram::kBoundsNanos.size()
                 ? absl::Nanoseconds(LatencyHistogram::kBoundsNanos[i])
                 : absl::InfiniteDuration();
    }
  }
  return absl::ZeroDuration();
}

// The statistics after one automatic run of Fragmented(1200000) with 8 ms
// slices at half a core, with or without a client sending a GetStats every
// 200 us. (Enough work for several slices on a fast machine: a run of two,
// the last one short, has a short median whatever the budget.)
StatsSnapshot AutoRunWithTraffic(bool traffic) {
  std::vector<uint64_t> kept;
  WaitingSink sink;
  Worker::Options options = AutoOptions(0.5);
  options.defrag_slice = absl::Milliseconds(8);
  options.stats_sink = &sink;
  options.publish_interval = absl::Milliseconds(5);
  Worker worker(options, Fragmented(1200000, &kept));
  std::atomic<bool> stop{false};
  std::thread client([&] {
    while (traffic && !stop.load()) {
      Command command;
      command.op = StatsOp{.done = [](absl::StatusOr<StatsSnapshot>) {}};
      worker.Submit(std::move(command));  // refused when full: fine
      absl::SleepFor(absl::Microseconds(200));
    }
  });
  const StatsSnapshot after = sink.WaitFor([](const StatsSnapshot& s) {
    return s.worker.automatic_defragmentations >= 1;
  });
  stop.store(true);
  client.join();
  worker.Stop();
  return after;
}

TEST(AutoDefragWorkerTest, SlicesShrinkWhileRequestsKeepArriving) {
  // Between an automatic run's slices the worker serves what came, so the
  // queue is mostly empty when a slice starts; requests still keep coming,
  // and each waits for the slice in progress: quarter slices (2 ms), as for
  // a requested run. A slice ends at its wall-clock budget, so its length
  // does not depend on how fast the machine is.
  const StatsSnapshot quiet = AutoRunWithTraffic(false);
  const StatsSnapshot busy = AutoRunWithTraffic(true);
  const absl::Duration quiet_median = MedianAutomaticSlice(quiet);
  const absl::Duration busy_median = MedianAutomaticSlice(busy);
  EXPECT_GE(quiet_median, absl::Milliseconds(5)) << "quiet";
  EXPECT_LE(busy_median, absl::Microseconds(2500))
      << "busy; quiet median " << quiet_median;
}

TEST(AutoDefragWorkerTest, KeepsToItsCpuShare) {
  std::vector<uint64_t> kept;
  Worker worker(AutoOptions(0.2), Fragmented(200000, &kept));
  const StatsSnapshot stats = StatsWhen(worker, [](const StatsSnapshot& s) {
    return s.auto_defrag.runs == 1 &&
           s.auto_defrag.state != AutoDefragState::kRunning;
  });
  ASSERT_EQ(stats.recent_defragmentations.size(), 1u);
  const DefragReport& report = stats.recent_defragmentations[0];
  ASSERT_GT(report.slices, 2u);
  // Each slice but the last is followed by a pause of cpu * (1/share - 1):
  // the run lasts at least its CPU time, less the last slice, over the share.
  const absl::Duration paced =
      (stats.auto_defrag.cpu_time - report.max_slice) / 0.2;
  EXPECT_GE(report.duration, paced * 0.95)
      << "cpu " << stats.auto_defrag.cpu_time << " in " << report.slices
      << " slices";
}

TEST(AutoDefragWorkerTest, GivesWayToATriggeredDefragmentation) {
  std::vector<uint64_t> kept;
  // At 1% of a core, the automatic run would take many seconds.
  Worker worker(AutoOptions(0.01), Fragmented(400000, &kept));
  StatsWhen(worker, [](const StatsSnapshot& s) {
    return s.auto_defrag.state == AutoDefragState::kRunning;
  });
  const absl::StatusOr<DefragReport> report =
      Call<absl::StatusOr<DefragReport>>(worker, DefragOp{});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->origin, DefragOrigin::kRpc);
  EXPECT_TRUE(report->complete);
  EXPECT_EQ(report->stop_reason, DefragStopReason::kFinished);
  const StatsSnapshot stats = Stats(worker);
  ASSERT_EQ(stats.recent_defragmentations.size(), 2u);
  const DefragReport& automatic = stats.recent_defragmentations[0];
  EXPECT_EQ(automatic.origin, DefragOrigin::kAutomatic);
  EXPECT_EQ(automatic.stop_reason, DefragStopReason::kPreempted);
  EXPECT_FALSE(automatic.complete);
  EXPECT_EQ(stats.recent_defragmentations[1].origin, DefragOrigin::kRpc);
  EXPECT_EQ(stats.pools.total.reclaimable_bytes, 0u);
  ExpectIntact(worker, kept);
}

// Shutdown while an automatic run waits for its next slice (at 0.1% of a
// core it spends nearly all its time waiting) ends the run with the reason
// shutdown; poold used to abort on the session dropped without an end.
TEST(AutoDefragWorkerTest, ShutdownDuringAnAutomaticRunEndsIt) {
  std::vector<uint64_t> kept;
  auto worker =
      std::make_unique<Worker>(AutoOptions(0.001), Fragmented(100000, &kept));
  StatsWhen(*worker, [](const StatsSnapshot& s) {
    return s.auto_defrag.state == AutoDefragState::kRunning;
  });
  worker->Stop();
  worker.reset();
}

TEST(AutoDefragWorkerTest, DisabledDoesNothing) {
  std::vector<uint64_t> kept;
  Worker::Options options = AutoOptions(0.5);
  options.auto_defrag.enabled = false;
  Worker worker(options, Fragmented(100000, &kept));
  const StatsSnapshot stats = Stats(worker);
  EXPECT_EQ(stats.auto_defrag.state, AutoDefragState::kDisabled);
  EXPECT_EQ(stats.auto_defrag.next_look_at, absl::InfiniteFuture());
  EXPECT_GT(stats.pools.total.reclaimable_bytes, 5 * kMiB);
}

TEST(AutoDefragWorkerTest, TheHistoryKeepsTheLastReports) {
  Worker::Options options;
  options.report_history = 3;
  Worker worker(options, MakePools());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(Call<absl::StatusOr<DefragReport>>(worker, DefragOp{}).ok());
  }
  const StatsSnapshot stats = Stats(worker);
  ASSERT_EQ(stats.recent_defragmentations.size(), 3u);
  EXPECT_EQ(stats.worker.defragmentations, 5u);
  EXPECT_LE(stats.recent_defragmentations[0].started_at,
            stats.recent_defragmentations[2].started_at);
  EXPECT_TRUE(Call<absl::StatusOr<StatsSnapshot>>(worker, StatsOp{})
                  ->recent_defragmentations.empty());
}

}  // namespace
}  // namespace poold
