// Tests of the automatic defragmentation policy, as the pure functions it is.
#include "worker/auto_defrag_policy.h"

#include <cstdint>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

using pools::DefragReport;
using pools::DefragStopReason;
using pools::FragmentationStats;
using pools::PoolKind;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kMiB = uint64_t{1} << 20;
const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

AutoDefragOptions On() {
  AutoDefragOptions options;
  options.enabled = true;
  options.min_reclaimable_bytes = 4 * kMiB;
  options.start_fragmentation = 0.10;
  options.stop_fragmentation = 0.05;
  options.min_cpu_share = 0.01;
  options.max_cpu_share = 0.25;
  options.interval = absl::Seconds(1);
  options.max_backoff = absl::Seconds(16);
  return options;
}

// Pool statistics with `live` and `resident` bytes and `reclaimable` in the
// small and medium pools (split 1:3), none in the large one.
AutoDefragInput Input(uint64_t live, uint64_t resident, uint64_t reclaimable,
                      uint64_t mutations = 1) {
  AutoDefragInput input;
  input.now = kNow;
  input.mutations = mutations;
  FragmentationStats& small = input.stats.pools[0].stats;
  FragmentationStats& medium = input.stats.pools[1].stats;
  small.reclaimable_bytes = reclaimable / 4;
  medium.reclaimable_bytes = reclaimable - reclaimable / 4;
  small.live_bytes = live / 2;
  medium.live_bytes = live - live / 2;
  small.resident_bytes = resident / 2;
  medium.resident_bytes = resident - resident / 2;
  for (const pools::PoolStats& pool : input.stats.pools) {
    input.stats.total.Add(pool.stats);
  }
  return input;
}

FragmentationStats Total(uint64_t live, uint64_t resident,
                         uint64_t reclaimable) {
  return Input(live, resident, reclaimable).stats.total;
}

DefragReport Report(DefragStopReason reason, uint64_t reclaimed) {
  DefragReport report;
  report.stop_reason = reason;
  report.bytes_reclaimed = reclaimed;
  return report;
}

TEST(AutoDefragPolicyTest, DisabledNeverLooksNorRuns) {
  AutoDefragOptions options = On();
  options.enabled = false;
  AutoDefragHistory history;
  EXPECT_FALSE(AutoDefragWantsLook(options, history, 5, kNow));
  const AutoDefragDecision d = DecideAutoDefrag(
      options, history, Input(100 * kMiB, 200 * kMiB, 90 * kMiB));
  EXPECT_FALSE(d.run);
  EXPECT_EQ(d.state, AutoDefragState::kDisabled);
  EXPECT_EQ(d.next_look, absl::InfiniteFuture());
  EXPECT_THAT(d.reason, HasSubstr("--auto_defrag=false"));
}

TEST(AutoDefragPolicyTest, RunsWhenFragmentedAndWorthIt) {
  AutoDefragHistory history;
  ASSERT_TRUE(AutoDefragWantsLook(On(), history, 1, kNow));
  // 40 MiB resident for 30 MiB live: 25% fragmentation, 9 MiB reclaimable.
  const AutoDefragDecision d =
      DecideAutoDefrag(On(), history, Input(30 * kMiB, 40 * kMiB, 9 * kMiB));
  EXPECT_TRUE(d.run);
  EXPECT_EQ(d.state, AutoDefragState::kRunning);
  EXPECT_THAT(d.pools, ElementsAre(PoolKind::kSmall, PoolKind::kMedium));
  EXPECT_EQ(d.aimed_bytes, 9 * kMiB);
  // 25% is past twice the 10% start threshold: the ceiling.
  EXPECT_DOUBLE_EQ(d.cpu_share, 0.25);
  EXPECT_EQ(d.decided_at, kNow);
  EXPECT_EQ(d.next_look, kNow + absl::Seconds(1));
  EXPECT_EQ(d.reason,
            "fragmentation 25.0% at or above the 10.0% start threshold and "
            "9.0 MiB reclaimable (minimum 4.0 MiB): defragmenting "
            "small,medium at 25.0% of a core");
}

TEST(AutoDefragPolicyTest, BudgetRisesFromFloorToCeilingWithFragmentation) {
  AutoDefragHistory history;
  // 10% fragmentation: the floor; 15%: half way; 20% and more: the ceiling.
  EXPECT_NEAR(
      DecideAutoDefrag(On(), history, Input(89 * kMiB, 100 * kMiB, 8 * kMiB))
          .cpu_share,
      0.01 + 0.24 * 0.1, 1e-9);
  EXPECT_NEAR(
      DecideAutoDefrag(On(), history, Input(85 * kMiB, 100 * kMiB, 8 * kMiB))
          .cpu_share,
      0.13, 1e-9);
  EXPECT_NEAR(
      DecideAutoDefrag(On(), history, Input(50 * kMiB, 100 * kMiB, 8 * kMiB))
          .cpu_share,
      0.25, 1e-9);
}

TEST(AutoDefragPolicyTest, TooLittleToReclaimIsNoRunAndSaysWhy) {
  AutoDefragHistory history;
  // Heavily fragmented, but compaction could return only 3 MiB: fragmentation
  // it cannot fix (a page per size class, metadata) does not start a run.
  const AutoDefragDecision d =
      DecideAutoDefrag(On(), history, Input(10 * kMiB, 20 * kMiB, 3 * kMiB));
  EXPECT_FALSE(d.run);
  EXPECT_EQ(d.state, AutoDefragState::kIdle);
  EXPECT_EQ(d.reason,
            "reclaimable 3.0 MiB below the 4.0 MiB minimum (fragmentation "
            "50.0%)");
  const AutoDefragDecision none =
      DecideAutoDefrag(On(), history, Input(10 * kMiB, 20 * kMiB, 0));
  EXPECT_FALSE(none.run);
  EXPECT_EQ(none.reason, "nothing to reclaim (fragmentation 50.0%)");
}

TEST(AutoDefragPolicyTest, BelowTheStartThresholdIsNoRun) {
  AutoDefragHistory history;
  const AutoDefragDecision d = DecideAutoDefrag(
      On(), history, Input(920 * kMiB, 1000 * kMiB, 50 * kMiB));
  EXPECT_FALSE(d.run);
  EXPECT_EQ(d.reason,
            "fragmentation 8.0% below the 10.0% start threshold (reclaimable "
            "50.0 MiB)");
}

TEST(AutoDefragPolicyTest, AnIdleServerIsNotLookedAtAgain) {
  AutoDefragHistory history;
  DecideAutoDefrag(On(), history, Input(90 * kMiB, 100 * kMiB, 1 * kMiB, 7));
  EXPECT_FALSE(AutoDefragWantsLook(On(), history, 7, kNow + absl::Hours(1)));
  EXPECT_TRUE(AutoDefragWantsLook(On(), history, 8, kNow + absl::Seconds(1)));
}

TEST(AutoDefragPolicyTest, StopsBelowTheStopThreshold) {
  EXPECT_EQ(AutoDefragStopReason(On(), Total(90 * kMiB, 100 * kMiB, 0)), "");
  EXPECT_EQ(AutoDefragStopReason(On(), Total(96 * kMiB, 100 * kMiB, 0)),
            "fragmentation 4.0% below the 5.0% stop threshold");
}

TEST(AutoDefragPolicyTest, ARunThatPaysKeepsLookingAtTheInterval) {
  AutoDefragHistory history;
  RecordAutoDefragRun(
      On(), history, Report(DefragStopReason::kFinished, 9 * kMiB), 9 * kMiB,
      Total(30 * kMiB, 31 * kMiB, 0), absl::ZeroDuration(), kNow);
  EXPECT_EQ(history.runs, 1u);
  EXPECT_EQ(history.poor_runs, 0);
  EXPECT_TRUE(AutoDefragWantsLook(On(), history, 2, kNow + absl::Seconds(1)));
}

TEST(AutoDefragPolicyTest, RunsThatReturnLittleBackOffExponentially) {
  AutoDefragHistory history;
  // Allocations during the runs used the room: each returned 1 of 8 MiB.
  absl::Time now = kNow;
  const absl::Duration expected[] = {absl::Seconds(2), absl::Seconds(4),
                                     absl::Seconds(8), absl::Seconds(16),
                                     absl::Seconds(16)};
  for (absl::Duration wait : expected) {
    // (The looks below find the waste where the run left it: not growing.)
    RecordAutoDefragRun(
        On(), history, Report(DefragStopReason::kFinished, 1 * kMiB), 8 * kMiB,
        Total(34 * kMiB, 40 * kMiB, 6 * kMiB), absl::ZeroDuration(), now);
    EXPECT_EQ(history.backoff_until, now + wait);
    // It still looks (15% fragmentation, below twice the start threshold),
    // but runs nothing before the back-off ends.
    AutoDefragInput look = Input(34 * kMiB, 40 * kMiB, 6 * kMiB);
    look.now = now + wait / 2;
    const AutoDefragDecision d = DecideAutoDefrag(On(), history, look);
    EXPECT_FALSE(d.run);
    EXPECT_EQ(d.state, AutoDefragState::kBackingOff);
    EXPECT_EQ(d.next_look, std::min(look.now + absl::Seconds(1), now + wait));
    EXPECT_THAT(d.reason,
                HasSubstr("poor run(s) in a row: the last returned 1.0 MiB "
                          "of the 8.0 MiB it aimed at"));
    now += wait;
    EXPECT_TRUE(AutoDefragWantsLook(On(), history, 100, now));
  }
  EXPECT_EQ(history.poor_runs, 5);
  AutoDefragInput later = Input(34 * kMiB, 40 * kMiB, 6 * kMiB);
  later.now = now;
  EXPECT_TRUE(DecideAutoDefrag(On(), history, later).run);
  // A run that pays ends the back-off.
  RecordAutoDefragRun(
      On(), history, Report(DefragStopReason::kFinished, 9 * kMiB), 9 * kMiB,
      Total(30 * kMiB, 31 * kMiB, 0), absl::ZeroDuration(), now);
  EXPECT_EQ(history.poor_runs, 0);
  EXPECT_TRUE(AutoDefragWantsLook(On(), history, 101, now));
}

TEST(AutoDefragPolicyTest, ClientsThatRefragmentAsFastAsItCleansBackItOff) {
  AutoDefragHistory history;
  // Decided at 20% fragmentation.
  ASSERT_TRUE(
      DecideAutoDefrag(On(), history, Input(32 * kMiB, 40 * kMiB, 8 * kMiB))
          .run);
  // It returned all it aimed at, but fragmentation is back above where it
  // started, with plenty reclaimable again.
  RecordAutoDefragRun(
      On(), history, Report(DefragStopReason::kFinished, 9 * kMiB), 9 * kMiB,
      Total(30 * kMiB, 40 * kMiB, 9 * kMiB), absl::ZeroDuration(), kNow);
  EXPECT_EQ(history.poor_runs, 1);
  // 25% fragmentation, past twice the start threshold, but no higher than
  // the run left it: it keeps backing off.
  const AutoDefragDecision d =
      DecideAutoDefrag(On(), history, Input(30 * kMiB, 40 * kMiB, 9 * kMiB));
  EXPECT_FALSE(d.run);
  EXPECT_EQ(d.state, AutoDefragState::kBackingOff);
  EXPECT_EQ(d.reason,
            "backing off after 1 poor run(s) in a row: the last returned "
            "9.0 MiB but clients refragmented as fast: fragmentation right "
            "after it was 25.0% (20.0% when it started) with 9.0 MiB "
            "reclaimable");
}

// A change of the clients' sizes can outrun a back-off: once fragmentation
// climbs past twice the start threshold and above where the poor run left
// it, a run starts at the CPU ceiling before the back-off ends.
TEST(AutoDefragPolicyTest, FragmentationClimbingPastTheCeilingEndsABackOff) {
  AutoDefragHistory history;
  ASSERT_TRUE(
      DecideAutoDefrag(On(), history, Input(34 * kMiB, 40 * kMiB, 6 * kMiB))
          .run);
  // 15% when decided, 17.5% after: poor.
  RecordAutoDefragRun(
      On(), history, Report(DefragStopReason::kFinished, 5 * kMiB), 6 * kMiB,
      Total(33 * kMiB, 40 * kMiB, 6 * kMiB), absl::ZeroDuration(), kNow);
  ASSERT_EQ(history.poor_runs, 1);
  ASSERT_GT(history.backoff_until, kNow + absl::Milliseconds(500));
  // Half a second later, still backing off, but fragmentation is at 30%.
  EXPECT_TRUE(AutoDefragWantsLook(On(), history, 5, kNow));
  AutoDefragInput look = Input(28 * kMiB, 40 * kMiB, 11 * kMiB);
  look.now = kNow + absl::Milliseconds(500);
  const AutoDefragDecision d = DecideAutoDefrag(On(), history, look);
  EXPECT_TRUE(d.run);
  EXPECT_EQ(d.state, AutoDefragState::kRunning);
  EXPECT_DOUBLE_EQ(d.cpu_share, 0.25);
  EXPECT_THAT(d.reason,
              HasSubstr("backing off ended early: fragmentation 30.0% rose "
                        "past twice the start threshold (20.0%) and above the "
                        "17.5% the last poor run left"));
  // At 19%, below the ceiling, the back-off holds.
  AutoDefragInput lower = Input(33200 * 1024, 40 * kMiB, 7 * kMiB);
  lower.now = kNow + absl::Milliseconds(500);
  history.looked = false;
  EXPECT_FALSE(DecideAutoDefrag(On(), history, lower).run);
}

// A look during a back-off records the allocation count; once the back-off
// ends, the next look happens even if clients made no change since (the
// fragmentation left behind is still there to clean). Found by the
// end-to-end test: a run decided in the middle of a client's frees counted
// as poor, and the server then stayed fragmented for good.
TEST(AutoDefragPolicyTest, TheFirstLookAfterABackOffNeedsNoNewChange) {
  AutoDefragHistory history;
  ASSERT_TRUE(
      DecideAutoDefrag(On(), history, Input(34 * kMiB, 40 * kMiB, 6 * kMiB, 7))
          .run);
  RecordAutoDefragRun(
      On(), history, Report(DefragStopReason::kFinished, 5 * kMiB), 6 * kMiB,
      Total(33 * kMiB, 40 * kMiB, 6 * kMiB), absl::ZeroDuration(), kNow);
  ASSERT_EQ(history.poor_runs, 1);
  // The look right after the run, within the back-off: no run.
  AutoDefragInput look = Input(33 * kMiB, 40 * kMiB, 6 * kMiB, 9);
  look.now = kNow;
  ASSERT_FALSE(DecideAutoDefrag(On(), history, look).run);
  // No change since: no look while the back-off lasts, one once it ends.
  EXPECT_FALSE(AutoDefragWantsLook(On(), history, 9,
                                   history.backoff_until - absl::Seconds(1)));
  EXPECT_TRUE(AutoDefragWantsLook(On(), history, 9, history.backoff_until));
  look.now = history.backoff_until;
  EXPECT_TRUE(DecideAutoDefrag(On(), history, look).run);
  // That look ran: later ones wait for changes again.
  EXPECT_FALSE(
      AutoDefragWantsLook(On(), history, 9, look.now + absl::Seconds(5)));
}

// Under a churn that keeps changing sizes, a run that leaves fragmentation
// lower than it found it is worth its CPU even when fragmentation is still
// above the start threshold: the next run follows at once. (Backing off
// there let the server's RSS climb by a third at the next change of sizes
// in churn_bench.)
TEST(AutoDefragPolicyTest, ARunThatGainsGroundOnTheClientsIsNotPoor) {
  AutoDefragHistory history;
  // Decided at 30% fragmentation; after it, 20%: still above the 10% start
  // threshold with 8 MiB reclaimable, but lower.
  ASSERT_TRUE(
      DecideAutoDefrag(On(), history, Input(28 * kMiB, 40 * kMiB, 12 * kMiB))
          .run);
  RecordAutoDefragRun(
      On(), history, Report(DefragStopReason::kFinished, 10 * kMiB), 12 * kMiB,
      Total(32 * kMiB, 40 * kMiB, 8 * kMiB), absl::ZeroDuration(), kNow);
  EXPECT_EQ(history.poor_runs, 0);
  EXPECT_EQ(history.backoff_until, absl::InfinitePast());
  EXPECT_TRUE(AutoDefragWantsLook(On(), history, 5, kNow));
  const AutoDefragDecision d =
      DecideAutoDefrag(On(), history, Input(32 * kMiB, 40 * kMiB, 8 * kMiB));
  EXPECT_TRUE(d.run);
  EXPECT_EQ(d.state, AutoDefragState::kRunning);
}

TEST(AutoDefragPolicyTest, ReachingTheStopThresholdEarlyIsNotPoor) {
  AutoDefragHistory history;
  RecordAutoDefragRun(On(), history,
                      Report(DefragStopReason::kTargetReached, 1 * kMiB),
                      8 * kMiB, Total(96 * kMiB, 100 * kMiB, 3 * kMiB),
                      absl::ZeroDuration(), kNow);
  EXPECT_EQ(history.poor_runs, 0);
}

TEST(AutoDefragPolicyTest, ARunThatGaveWayResumesDownToTheStopThreshold) {
  AutoDefragHistory history;
  RecordAutoDefragRun(
      On(), history, Report(DefragStopReason::kPreempted, 1 * kMiB), 8 * kMiB,
      Total(92 * kMiB, 100 * kMiB, 7 * kMiB), absl::ZeroDuration(), kNow);
  EXPECT_EQ(history.poor_runs, 0);
  EXPECT_TRUE(history.unfinished);
  // 8% is below the start threshold but above the stop one: it goes on.
  EXPECT_TRUE(
      AutoDefragWantsLook(On(), history, history.mutations_at_last_look, kNow));
  const AutoDefragDecision d =
      DecideAutoDefrag(On(), history, Input(92 * kMiB, 100 * kMiB, 7 * kMiB));
  EXPECT_TRUE(d.run);
  EXPECT_THAT(d.reason, HasSubstr("at or above the 5.0% stop threshold"));
}

// The same statistics as Input(), seen at `now`.
AutoDefragInput InputAt(absl::Time now, uint64_t live, uint64_t resident,
                        uint64_t reclaimable, uint64_t mutations = 1) {
  AutoDefragInput input = Input(live, resident, reclaimable, mutations);
  input.now = now;
  return input;
}

TEST(AutoDefragPolicyTest, LooksSoonerWhileWasteGrows) {
  AutoDefragHistory history;
  // 14 MiB of waste for 256 MiB live: below the 10% start threshold, which
  // 256 MiB reaches at 28.4 MiB of waste. Nothing is known of its growth.
  AutoDefragDecision d = DecideAutoDefrag(
      On(), history, InputAt(kNow, 256 * kMiB, 270 * kMiB, 10 * kMiB, 1));
  EXPECT_FALSE(d.run);
  EXPECT_EQ(d.next_look, kNow + absl::Seconds(1));
  // A second later 24 MiB: growing 10 MiB/s, 4.4 MiB of room left. The next
  // look comes when half of it would be used: in 0.22 s.
  const absl::Time second = kNow + absl::Seconds(1);
  d = DecideAutoDefrag(On(), history,
                       InputAt(second, 256 * kMiB, 280 * kMiB, 20 * kMiB, 2));
  EXPECT_FALSE(d.run);
  EXPECT_DOUBLE_EQ(history.waste_growth_per_second, 10.0 * kMiB);
  const double room = 256.0 * kMiB * 0.1 / 0.9 - 24.0 * kMiB;
  EXPECT_NEAR(absl::ToDoubleSeconds(d.next_look - second),
              room / (10.0 * kMiB) / 2, 1e-6);
  EXPECT_THAT(d.reason, HasSubstr("waste growing 10.0 MiB/s"));
  // Waste that jumps by 2 MiB in 10 ms: the next look is no sooner than the
  // 100 ms minimum.
  const absl::Time third = second + absl::Milliseconds(10);
  d = DecideAutoDefrag(On(), history,
                       InputAt(third, 256 * kMiB, 282 * kMiB, 22 * kMiB, 3));
  EXPECT_EQ(d.next_look, third + absl::Milliseconds(100));
  // That 200 MiB/s burst followed by a second without growth: a quiet
  // window alone does not forget it; the estimate halves per interval.
  const absl::Time fourth = third + absl::Seconds(1);
  d = DecideAutoDefrag(On(), history,
                       InputAt(fourth, 256 * kMiB, 282 * kMiB, 22 * kMiB, 4));
  EXPECT_DOUBLE_EQ(history.waste_growth_per_second, 100.0 * kMiB);
  EXPECT_EQ(d.next_look, fourth + absl::Milliseconds(100));
  // Waste that stays still for a minute: back to the interval.
  const absl::Time fifth = fourth + absl::Minutes(1);
  d = DecideAutoDefrag(On(), history,
                       InputAt(fifth, 256 * kMiB, 282 * kMiB, 22 * kMiB, 5));
  EXPECT_EQ(history.waste_growth_per_second, 0);
  EXPECT_EQ(d.next_look, fifth + absl::Seconds(1));
  EXPECT_THAT(d.reason, Not(HasSubstr("growing")));
}

TEST(AutoDefragPolicyTest, BelowTheMinimumReclaimableLooksWhenItWouldBeMet) {
  AutoDefragHistory history;
  // Past the start threshold, but 1 MiB reclaimable of the 4 MiB minimum,
  // growing 1 MiB/s with the waste: the next look in 1.5 s, capped at 1 s;
  // at 10 MiB/s, in 0.15 s.
  DecideAutoDefrag(On(), history,
                   InputAt(kNow, 80 * kMiB, 100 * kMiB, 1 * kMiB, 1));
  const absl::Time later = kNow + absl::Seconds(1);
  AutoDefragDecision d = DecideAutoDefrag(
      On(), history, InputAt(later, 80 * kMiB, 101 * kMiB, 1 * kMiB, 2));
  EXPECT_FALSE(d.run);
  EXPECT_EQ(d.next_look, later + absl::Seconds(1));
  const absl::Time then = later + absl::Seconds(1);
  d = DecideAutoDefrag(On(), history,
                       InputAt(then, 80 * kMiB, 111 * kMiB, 1 * kMiB, 3));
  EXPECT_NEAR(absl::ToDoubleSeconds(d.next_look - then), 0.15, 1e-6);
}

TEST(AutoDefragPolicyTest, ClientsWastingFastGetABudgetThatOutpacesThem) {
  AutoDefragHistory history;
  // A run returned 100 MiB in 0.5 s of CPU: 200 MiB per CPU second.
  RecordAutoDefragRun(On(), history,
                      Report(DefragStopReason::kFinished, 100 * kMiB),
                      100 * kMiB, Total(250 * kMiB, 270 * kMiB, 0),
                      absl::Milliseconds(500), kNow);
  EXPECT_DOUBLE_EQ(history.reclaimed_per_cpu_second, 200.0 * kMiB);
  // A second later waste grew from 20 to 30 MiB: 10.7% fragmentation, just
  // past the start threshold, would get 2.7% of a core. Reclaiming 4 times
  // as fast as the clients waste takes 4 x 10 / 200 = 20%.
  const absl::Time later = kNow + absl::Seconds(1);
  AutoDefragDecision d = DecideAutoDefrag(
      On(), history, InputAt(later, 250 * kMiB, 280 * kMiB, 20 * kMiB, 2));
  ASSERT_TRUE(d.run);
  EXPECT_NEAR(d.cpu_share, 0.20, 1e-9);
  EXPECT_THAT(d.reason, HasSubstr("waste growing 10.0 MiB/s"));
  // Faster growth is held to the ceiling.
  RecordAutoDefragRun(
      On(), history, Report(DefragStopReason::kFinished, 10 * kMiB), 10 * kMiB,
      Total(250 * kMiB, 270 * kMiB, 0), absl::Milliseconds(100), later);
  // (200 + 100) / 2: the rate is averaged over recent runs.
  EXPECT_DOUBLE_EQ(history.reclaimed_per_cpu_second, 150.0 * kMiB);
  const absl::Time then = later + absl::Seconds(1);
  d = DecideAutoDefrag(On(), history,
                       InputAt(then, 250 * kMiB, 300 * kMiB, 40 * kMiB, 3));
  ASSERT_TRUE(d.run);
  EXPECT_DOUBLE_EQ(d.cpu_share, 0.25);
}

TEST(AutoDefragPolicyTest, BeforeAnyRunTheReclaimRateIsAssumed) {
  AutoDefragHistory history;
  DecideAutoDefrag(On(), history,
                   InputAt(kNow, 250 * kMiB, 270 * kMiB, 10 * kMiB, 1));
  // 8 MiB/s of growth at the assumed 256 MiB per CPU second: 12.5%.
  const absl::Time later = kNow + absl::Seconds(1);
  const AutoDefragDecision d = DecideAutoDefrag(
      On(), history, InputAt(later, 250 * kMiB, 278 * kMiB, 18 * kMiB, 2));
  ASSERT_TRUE(d.run);
  EXPECT_NEAR(d.cpu_share,
              kGrowthMargin * 8 * kMiB / kAssumedReclaimedPerCpuSecond, 1e-9);
}

TEST(AutoDefragPolicyTest, OptionsAreChecked) {
  EXPECT_EQ(AutoDefragOptionsError(On()), "");
  AutoDefragOptions o = On();
  o.stop_fragmentation = 0.2;
  EXPECT_THAT(AutoDefragOptionsError(o), HasSubstr("stop_fragmentation"));
  o = On();
  o.start_fragmentation = 1.5;
  EXPECT_THAT(AutoDefragOptionsError(o), HasSubstr("start_fragmentation"));
  o = On();
  o.min_cpu_share = 0;
  EXPECT_THAT(AutoDefragOptionsError(o), HasSubstr("min_cpu"));
  o = On();
  o.max_cpu_share = 2;
  EXPECT_THAT(AutoDefragOptionsError(o), HasSubstr("max_cpu"));
  o = On();
  o.min_interval = absl::Seconds(2);
  EXPECT_THAT(AutoDefragOptionsError(o), HasSubstr("min_interval"));
  o.min_interval = absl::ZeroDuration();
  EXPECT_THAT(AutoDefragOptionsError(o), HasSubstr("min_interval"));
}

TEST(AutoDefragPolicyTest, HumanBytes) {
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(3 * kMiB + kMiB / 10), "3.1 MiB");
  EXPECT_EQ(HumanBytes(uint64_t{5} << 30), "5.0 GiB");
}

}  // namespace
}  // namespace poold
