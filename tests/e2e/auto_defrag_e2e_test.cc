// End-to-end tests of automatic defragmentation (--auto_defrag) against the
// real poold: a fragmented server shrinks with no defragmentation RPC and
// GetStats says why; fragmentation that compaction cannot fix starts no run
// and costs no CPU; a TriggerDefragmentation during an automatic run ends
// that run and is answered with its own report.
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/e2e/defrag_test_support.h"
#include "tests/e2e/pool_test_client.h"
#include "tests/e2e/poold_process.h"

namespace poold::testing {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;
// How long a test waits for the server to get somewhere on its own.
constexpr absl::Duration kPatience = absl::Seconds(120);

// CPU time (user + system) the process `pid` has used so far.
absl::Duration ProcessCpuTime(pid_t pid) {
  std::ifstream file(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(file)),
                   std::istreambuf_iterator<char>());
  // Fields after the command name, which is in parentheses and may hold
  // spaces: state is field 3, utime 14, stime 15.
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return absl::Seconds(static_cast<double>(utime + stime) / ticks);
}

class AutoDefragE2eTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> flags) {
    PooldProcess::Options options;
    options.auto_defrag = true;
    // Look often, so the tests do not wait for the default 1 s interval.
    flags.push_back("--auto_defrag_interval=100ms");
    options.extra_flags = std::move(flags);
    absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
        PooldProcess::Start(options);
    ASSERT_TRUE(poold.ok()) << poold.status();
    poold_ = *std::move(poold);
    client_ = std::make_unique<PoolTestClient>(poold_->NewChannel());
  }

  void TearDown() override {
    client_.reset();
    if (poold_ != nullptr) {
      absl::StatusOr<int> code = poold_->Stop();
      ASSERT_TRUE(code.ok()) << code.status();
      EXPECT_EQ(*code, 0) << poold_->Log();
    }
  }

  // GetStats with the recent defragmentations.
  v1::GetStatsResponse Stats() {
    v1::GetStatsRequest request;
    request.set_include_defrag_history(true);
    request.set_consistent(true);
    v1::GetStatsResponse response;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    const grpc::Status status =
        client_->stub()->GetStats(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  std::unique_ptr<PooldProcess> poold_;
  std::unique_ptr<PoolTestClient> client_;
};

// A fragmented server, left alone, returns the room to the OS by itself:
// its RSS (and its pools' resident bytes) fall to within a few MiB of the
// live data, no TriggerDefragmentation is ever sent, and GetStats explains
// the runs: the decisions in words, the reports with ORIGIN_AUTOMATIC, and
// the INFO log lines. Every block reads back unchanged.
TEST_F(AutoDefragE2eTest, AFragmentedServerShrinksOnItsOwnAndSaysWhy) {
  ASSERT_NO_FATAL_FAILURE(Start({"--cache_decay=0"}));
  const absl::StatusOr<uint64_t> idle_rss = poold_->RssBytes();
  ASSERT_TRUE(idle_rss.ok()) << idle_rss.status();
  FragmentedData data;
  POOLD_ASSERT_OK(BuildFragmented(*client_, (uint64_t{16} << 20) / kDataScale,
                                  (uint64_t{96} << 20) / kDataScale, 80,
                                  &data));
  uint64_t live = 0;
  for (const TestBlock& block : data.survivors) live += block.size;
  // Without compaction the pools keep about the 112 MiB allocated (80% of it
  // free in partly used spans): 5 x live. Compacted, they hold live plus a
  // page or so per size class.
  const uint64_t pools_target = live + live / 10 + 4 * kMiB;
  const uint64_t rss_target = *idle_rss + live + live / 4 + 8 * kMiB;

  // Only statistics are asked for; the server does the rest.
  v1::GetStatsResponse stats = Stats();
  const absl::Time give_up = absl::Now() + kPatience;
  while (stats.total().resident_bytes() > pools_target ||
         stats.auto_defrag().state() == v1::AutoDefragStats::STATE_RUNNING) {
    ASSERT_LT(absl::Now(), give_up)
        << "pools still hold " << FormatBytes(stats.total().resident_bytes())
        << " for " << FormatBytes(live)
        << " live; auto_defrag: " << stats.auto_defrag().DebugString();
    absl::SleepFor(absl::Milliseconds(50));  // polling, not synchronisation
    stats = Stats();
  }
  if (!kSanitizerBuild) {
    const absl::StatusOr<uint64_t> rss = poold_->RssBytes();
    ASSERT_TRUE(rss.ok()) << rss.status();
    EXPECT_LE(*rss, rss_target)
        << "RSS " << FormatBytes(*rss) << ", idle " << FormatBytes(*idle_rss)
        << ", live " << FormatBytes(live);
  }

  EXPECT_EQ(stats.worker().defragmentations(), 0u);
  EXPECT_GE(stats.worker().automatic_defragmentations(), 1u);
  const v1::AutoDefragStats& auto_defrag = stats.auto_defrag();
  EXPECT_GE(auto_defrag.runs(), 1u);
  EXPECT_GT(auto_defrag.bytes_reclaimed(), live);
  EXPECT_GT(auto_defrag.cpu_time().seconds() * 1000000000 +
                auto_defrag.cpu_time().nanos(),
            0);
  EXPECT_FALSE(auto_defrag.last_decision().empty());
  EXPECT_TRUE(auto_defrag.has_last_decision_at());
  EXPECT_TRUE(auto_defrag.has_next_look_at());
  ASSERT_GE(stats.recent_defragmentations_size(), 1);
  uint64_t reported = 0;
  for (const v1::DefragReport& report : stats.recent_defragmentations()) {
    EXPECT_EQ(report.origin(), v1::DefragReport::ORIGIN_AUTOMATIC);
    EXPECT_TRUE(report.has_started_at());
    reported += report.bytes_reclaimed();
  }
  EXPECT_EQ(reported, auto_defrag.bytes_reclaimed());
  const std::string log = poold_->Log();
  EXPECT_THAT(log, HasSubstr("automatic defragmentation: fragmentation "));
  EXPECT_THAT(log, HasSubstr("defragmentation started (automatic)"));
  EXPECT_THAT(log, HasSubstr("defragmentation finished: origin=automatic"));

  POOLD_ASSERT_OK(client_->VerifyAll(data.survivors, kWindow));
}

// Fragmentation that compaction cannot fix: 1-byte blocks fill their slots
// badly and carry their handle entries, so the pools are over 90%
// "fragmented" (a ratio that would keep a ratio-driven defragmenter busy
// for ever), but almost nothing is reclaimable. Allocations and frees keep
// the policy looking every 100 ms; it never starts a run and says why. Once
// the clients stop it looks once more, and then the server uses (almost) no
// CPU.
TEST_F(AutoDefragE2eTest, UnfixableFragmentationStartsNoRunAndCostsNoCpu) {
  ASSERT_NO_FATAL_FAILURE(
      Start({"--auto_defrag_min_reclaimable_bytes=1048576"}));
  std::vector<TestBlock> blocks(20000);
  for (size_t i = 0; i < blocks.size(); ++i) {
    blocks[i].seed = i + 1;
    blocks[i].size = 1;
  }
  POOLD_ASSERT_OK(client_->AllocateAll(blocks, kWindow));
  // Churn at the end of the pool: allocate and free again, a few seconds'
  // worth of looks.
  const absl::Time churn_end = absl::Now() + absl::Seconds(2);
  uint64_t seed = 1000000;
  while (absl::Now() < churn_end) {
    std::vector<TestBlock> extra(64);
    for (TestBlock& block : extra) {
      block.seed = ++seed;
      block.size = 1;
    }
    POOLD_ASSERT_OK(client_->AllocateAll(extra, kWindow));
    std::vector<uint64_t> handles;
    for (const TestBlock& block : extra) handles.push_back(block.handle);
    POOLD_ASSERT_OK(client_->FreeAll(handles, kWindow));
  }
  // The look after the last free.
  const absl::Time last_free = absl::Now();
  v1::GetStatsResponse stats = Stats();
  while (
      absl::FromUnixSeconds(stats.auto_defrag().last_decision_at().seconds()) +
          absl::Nanoseconds(stats.auto_defrag().last_decision_at().nanos()) <
      last_free) {
    ASSERT_LT(absl::Now(), last_free + kPatience)
        << stats.auto_defrag().DebugString();
    absl::SleepFor(absl::Milliseconds(20));  // polling, not synchronisation
    stats = Stats();
  }
  EXPECT_GT(stats.total().fragmentation_ratio(), 0.5);
  EXPECT_LT(stats.total().reclaimable_bytes(), kMiB);
  EXPECT_EQ(stats.auto_defrag().state(), v1::AutoDefragStats::STATE_IDLE);
  EXPECT_EQ(stats.auto_defrag().runs(), 0u);
  EXPECT_FALSE(stats.auto_defrag().last_decision_ran());
  EXPECT_THAT(stats.auto_defrag().last_decision(),
              ::testing::AnyOf(HasSubstr("below the 1.0 MiB minimum"),
                               HasSubstr("nothing to reclaim")));
  EXPECT_EQ(stats.recent_defragmentations_size(), 0) << poold_->Log();

  // Left alone, the server looks no more: over two seconds it uses a tiny
  // share of a core (gRPC's own timers and the idle heap trim).
  const absl::Duration cpu_before = ProcessCpuTime(poold_->pid());
  absl::SleepFor(absl::Seconds(2));  // the measured window
  const absl::Duration cpu = ProcessCpuTime(poold_->pid()) - cpu_before;
  // A looking or running policy would use far more; sanitizers slow gRPC's
  // own idle work down several times.
  EXPECT_LT(cpu,
            kSanitizerBuild ? absl::Milliseconds(500) : absl::Milliseconds(100))
      << cpu;
  const v1::GetStatsResponse later = Stats();
  EXPECT_EQ(later.auto_defrag().runs(), 0u);
  EXPECT_EQ(later.auto_defrag().last_decision_at().seconds(),
            stats.auto_defrag().last_decision_at().seconds());
  EXPECT_EQ(later.auto_defrag().last_decision_at().nanos(),
            stats.auto_defrag().last_decision_at().nanos());
  POOLD_ASSERT_OK(client_->VerifyAll(blocks, kWindow));
}

// An automatic run held to 0.1% of a core takes a minute or more; a
// TriggerDefragmentation sent meanwhile does not wait for it: the automatic
// run ends PREEMPTED, the RPC's own run does the whole job and answers with
// its report (ORIGIN_RPC, complete), and the history lists both in order.
TEST_F(AutoDefragE2eTest, ATriggeredDefragmentationPreemptsAnAutomaticRun) {
  ASSERT_NO_FATAL_FAILURE(
      Start({"--auto_defrag_min_cpu=0.001", "--auto_defrag_max_cpu=0.001",
             "--cache_decay=0"}));
  FragmentedData data;
  POOLD_ASSERT_OK(BuildFragmented(*client_, kLargeSetSmallBytes / 2,
                                  kLargeSetMediumBytes / 2, 80, &data));
  v1::GetStatsResponse stats = Stats();
  const absl::Time give_up = absl::Now() + kPatience;
  while (stats.auto_defrag().state() != v1::AutoDefragStats::STATE_RUNNING) {
    ASSERT_LT(absl::Now(), give_up) << stats.auto_defrag().DebugString();
    absl::SleepFor(absl::Milliseconds(20));  // polling, not synchronisation
    stats = Stats();
  }
  EXPECT_GT(stats.total().reclaimable_bytes(), 64 * kMiB);

  v1::DefragReport report;
  const grpc::Status status = client_->Defragment({}, &report);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(report.origin(), v1::DefragReport::ORIGIN_RPC);
  EXPECT_EQ(report.stop_reason(), v1::DefragReport::STOP_REASON_FINISHED);
  EXPECT_TRUE(report.complete());
  EXPECT_GT(report.bytes_reclaimed(), 0u);

  stats = Stats();
  std::string history_text;
  for (const v1::DefragReport& each : stats.recent_defragmentations()) {
    absl::StrAppend(&history_text, v1::DefragReport::Origin_Name(each.origin()),
                    " ", v1::DefragReport::StopReason_Name(each.stop_reason()),
                    " reclaimed ", each.bytes_reclaimed(), "\n");
  }
  SCOPED_TRACE(absl::StrCat("history:\n", history_text, "auto_defrag: ",
                            stats.auto_defrag().DebugString()));
  EXPECT_EQ(stats.total().reclaimable_bytes(), 0u);
  EXPECT_EQ(stats.worker().defragmentations(), 1u);
  const auto& history = stats.recent_defragmentations();
  ASSERT_GE(history.size(), 2);
  // The last entry is the RPC's; the one before it the automatic run it cut
  // short (earlier automatic runs, if any, come before).
  const v1::DefragReport& preempted = history[history.size() - 2];
  const v1::DefragReport& requested = history[history.size() - 1];
  EXPECT_EQ(preempted.origin(), v1::DefragReport::ORIGIN_AUTOMATIC);
  EXPECT_EQ(preempted.stop_reason(), v1::DefragReport::STOP_REASON_PREEMPTED);
  EXPECT_FALSE(preempted.complete());
  EXPECT_EQ(requested.origin(), v1::DefragReport::ORIGIN_RPC);
  EXPECT_EQ(requested.bytes_reclaimed(), report.bytes_reclaimed());
  EXPECT_THAT(poold_->Log(), HasSubstr("origin=automatic"));
  POOLD_ASSERT_OK(client_->VerifyAll(data.survivors, kWindow));
}

}  // namespace
}  // namespace poold::testing
