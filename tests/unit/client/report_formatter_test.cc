// Tests of ReportFormatter: the tables hold the numbers in human units, and
// the JSON output parses back into the same message.
#include "client/report_formatter.h"

#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace poold::client {
namespace {

using ::google::protobuf::util::JsonStringToMessage;
using ::google::protobuf::util::MessageDifferencer;
using ::testing::HasSubstr;
using ::testing::Not;

v1::FragmentationStats MakeStats(uint64_t live, uint64_t resident,
                                 uint64_t blocks) {
  v1::FragmentationStats stats;
  stats.set_live_bytes(live);
  stats.set_allocated_bytes(live + live / 8);
  stats.set_resident_bytes(resident);
  stats.set_metadata_bytes(4096);
  stats.set_free_bytes(resident - live);
  stats.set_blocks(blocks);
  stats.set_spans(10);
  stats.set_partial_spans(7);
  stats.set_empty_spans(1);
  stats.set_fragmentation_ratio(1.0 - static_cast<double>(live) /
                                          static_cast<double>(resident));
  stats.set_reclaimable_bytes(resident / 2);
  return stats;
}

v1::GetStatsResponse MakeGetStats() {
  v1::GetStatsResponse response;
  response.mutable_transport()->set_unknown_handle_answers(7);
  response.mutable_transport()->set_unknown_handle_refusals(2);
  response.mutable_transport()->set_connections_open(3);
  response.mutable_transport()->set_connections_accepted(40);
  response.mutable_transport()->set_connections_refused(5);
  response.mutable_transport()->set_max_connections(1024);
  v1::PoolStats* small = response.add_pools();
  small->set_pool(v1::POOL_SMALL);
  *small->mutable_stats() = MakeStats(1 << 20, 10 << 20, 8000);
  v1::SizeClassStats* size_class = small->add_classes();
  size_class->set_slot_bytes(128);
  *size_class->mutable_stats() = MakeStats(1 << 20, 10 << 20, 8000);
  v1::PoolStats* medium = response.add_pools();
  medium->set_pool(v1::POOL_MEDIUM);
  v1::PoolStats* large = response.add_pools();
  large->set_pool(v1::POOL_LARGE);
  large->mutable_stats()->set_free_extents(3);
  large->mutable_stats()->set_largest_free_extent_bytes(1 << 20);
  *response.mutable_total() = MakeStats(1 << 20, 10 << 20, 8000);
  response.mutable_worker()->set_channel_capacity(1024);
  (*response.mutable_worker()->mutable_commands_completed())["Allocate"] =
      80000;
  (*response.mutable_worker()->mutable_commands_completed())["Free"] = 72000;
  response.mutable_worker()->set_heap_trims(3);
  response.mutable_worker()->set_heap_bytes_released(5 << 20);
  v1::ProcessStats* process = response.mutable_process();
  process->set_rss_bytes(30 << 20);
  process->set_pools_resident_bytes(10 << 20);
  process->set_outside_pools_bytes(20 << 20);
  process->set_rss_anon_bytes(14 << 20);
  process->set_rss_file_bytes(16 << 20);
  process->set_heap_in_use_bytes(2 << 20);
  process->set_heap_free_bytes(1 << 20);
  return response;
}

template <typename Message>
Message ParseJson(const std::string& json) {
  Message message;
  const auto status = JsonStringToMessage(json, &message);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json;
  return message;
}

TEST(ParseOutputFormatTest, Names) {
  EXPECT_EQ(ParseOutputFormat("table").value(), OutputFormat::kTable);
  EXPECT_EQ(ParseOutputFormat("JSON").value(), OutputFormat::kJson);
  EXPECT_EQ(ParseOutputFormat("xml").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ReportFormatterTest, StatsTable) {
  const std::string text =
      ReportFormatter(OutputFormat::kTable).Stats(MakeGetStats()).value();
  EXPECT_THAT(text, HasSubstr("pool "));
  EXPECT_THAT(text, HasSubstr("reclaimable"));
  EXPECT_THAT(text, HasSubstr("small "));
  EXPECT_THAT(text, HasSubstr("medium "));
  EXPECT_THAT(text, HasSubstr("total "));
  EXPECT_THAT(text, HasSubstr("1.0 MiB"));   // live
  EXPECT_THAT(text, HasSubstr("10.0 MiB"));  // resident
  EXPECT_THAT(text, HasSubstr("90.0%"));     // fragmentation
  EXPECT_THAT(text, HasSubstr("3 free extents (largest 1.0 MiB)"));
  EXPECT_THAT(text, HasSubstr("queue 0 of 1024"));
  EXPECT_THAT(text, HasSubstr("heap trims 3 (returned 5.0 MiB)"));
  EXPECT_THAT(text, HasSubstr("tcp connections: 3 open of 1024 allowed, 40 "
                              "accepted, 5 refused"));
  EXPECT_THAT(text, HasSubstr("unknown handles 7 (2 calls refused for "
                              "naming too many)"));
  EXPECT_THAT(text,
              HasSubstr("process: RSS 30.0 MiB = pools 10.0 MiB + outside the "
                        "pools 20.0 MiB (anonymous 14.0 MiB, code and files "
                        "16.0 MiB; malloc heap in use 2.0 MiB, free 1.0 "
                        "MiB)"));
  EXPECT_THAT(text, HasSubstr("completed: Allocate 80000, Free 72000"));
  EXPECT_THAT(text, HasSubstr("small pool, by size class:"));
  EXPECT_THAT(text, HasSubstr("128 B "));
}

TEST(WatchRateLineTest, RatesPerRpcMostFirstAndReclaimedPerSecond) {
  v1::GetStatsResponse before;
  before.mutable_taken_at()->set_seconds(100);
  (*before.mutable_worker()->mutable_commands_completed())["Read"] = 1000;
  (*before.mutable_worker()->mutable_commands_completed())["Allocate"] = 10;
  before.mutable_worker()->set_total_bytes_reclaimed(1 << 20);
  v1::GetStatsResponse after = before;
  after.mutable_taken_at()->set_seconds(102);
  (*after.mutable_worker()->mutable_commands_completed())["Read"] = 4000;
  (*after.mutable_worker()->mutable_commands_completed())["Allocate"] = 610;
  (*after.mutable_worker()->mutable_commands_completed())["Free"] = 1;
  after.mutable_worker()->set_total_bytes_reclaimed(5 << 20);
  EXPECT_EQ(
      WatchRateLine(before, after),
      "rates over 2.00 s: Read 1500/s, Allocate 300/s, Free 1/s; reclaimed "
      "2.0 MiB/s\n");
  EXPECT_EQ(WatchRateLine(after, after), "");
  v1::GetStatsResponse later = after;
  later.mutable_taken_at()->set_seconds(103);
  EXPECT_EQ(WatchRateLine(after, later),
            "rates over 1.00 s: no requests; reclaimed 0 B/s\n");
}

TEST(ReportFormatterTest, StatsShowTheMemoryLimitOnlyOnceReached) {
  v1::GetStatsResponse stats = MakeGetStats();
  const ReportFormatter formatter(OutputFormat::kTable);
  EXPECT_THAT(formatter.Stats(stats).value(), Not(HasSubstr("memory limit:")));
  stats.mutable_worker()->set_memory_limit_defragmentations(2);
  stats.mutable_worker()->set_allocations_waiting_for_room(5);
  EXPECT_THAT(formatter.Stats(stats).value(),
              HasSubstr("memory limit: 2 defragmentations to make room, 5 "
                        "allocations waiting for room\n"));
}

TEST(ReportFormatterTest, StatsShowPoolFailuresOnlyWhenThereWereSome) {
  v1::GetStatsResponse stats = MakeGetStats();
  const ReportFormatter formatter(OutputFormat::kTable);
  EXPECT_THAT(formatter.Stats(stats).value(), Not(HasSubstr("FAILED")));
  stats.mutable_pools(0)->set_defrag_failures(2);
  stats.mutable_pools(0)->set_last_defrag_failure("madvise failed");
  EXPECT_THAT(formatter.Stats(stats).value(),
              HasSubstr(" pool: FAILED in 2 defragmentations; last: madvise "
                        "failed\n"));
}

TEST(ReportFormatterTest, StatsWithoutClassesHasNoClassTables) {
  v1::GetStatsResponse stats = MakeGetStats();
  stats.mutable_pools(0)->clear_classes();
  EXPECT_THAT(ReportFormatter(OutputFormat::kTable).Stats(stats).value(),
              Not(HasSubstr("by size class")));
}

TEST(ReportFormatterTest, StatsJsonRoundTrips) {
  const v1::GetStatsResponse stats = MakeGetStats();
  const std::string json =
      ReportFormatter(OutputFormat::kJson).Stats(stats).value();
  EXPECT_THAT(json, HasSubstr("\"fragmentationRatio\""));
  EXPECT_THAT(json, HasSubstr("\"POOL_SMALL\""));
  // Zero fields are printed too, for scripts.
  EXPECT_THAT(json, HasSubstr("\"unpurgedBytes\": \"0\""));
  EXPECT_TRUE(
      MessageDifferencer::Equals(ParseJson<v1::GetStatsResponse>(json), stats));
}

v1::FragmentationReport MakeAnalysis() {
  v1::FragmentationReport report;
  v1::PoolAnalysis* small = report.add_pools();
  small->set_pool(v1::POOL_SMALL);
  *small->mutable_stats() = MakeStats(1 << 20, 4 << 20, 8000);
  small->set_projected_blocks_moved(500);
  small->set_projected_bytes_moved(64000);
  small->set_projected_spans_released(40);
  small->set_projected_bytes_reclaimed(2 << 20);
  small->set_projected_fragmentation_ratio(0.5);
  *report.mutable_total() = small->stats();
  report.set_projected_blocks_moved(500);
  report.set_projected_bytes_moved(64000);
  report.set_projected_bytes_reclaimed(2 << 20);
  return report;
}

TEST(ReportFormatterTest, AnalysisTable) {
  const std::string text =
      ReportFormatter(OutputFormat::kTable).Analysis(MakeAnalysis()).value();
  EXPECT_THAT(text, HasSubstr("frag after"));
  EXPECT_THAT(text, HasSubstr("75.0%"));     // now: 1 - 1/4
  EXPECT_THAT(text, HasSubstr("50.0%"));     // after: 1 - 1/(4-2)
  EXPECT_THAT(text, HasSubstr("62.5 KiB"));  // bytes to move
  EXPECT_THAT(text, HasSubstr("would move 500 blocks (62.5 KiB) and return "
                              "2.0 MiB to the OS"));
}

TEST(ReportFormatterTest, AnalysisWithNothingToReclaim) {
  v1::FragmentationReport report;
  report.add_pools()->set_pool(v1::POOL_LARGE);
  EXPECT_THAT(ReportFormatter(OutputFormat::kTable).Analysis(report).value(),
              HasSubstr("would reclaim nothing"));
}

TEST(ReportFormatterTest, AnalysisJsonRoundTrips) {
  const v1::FragmentationReport report = MakeAnalysis();
  const std::string json =
      ReportFormatter(OutputFormat::kJson).Analysis(report).value();
  EXPECT_TRUE(MessageDifferencer::Equals(
      ParseJson<v1::FragmentationReport>(json), report));
}

v1::DefragReport MakeDefrag() {
  v1::DefragReport report;
  v1::PoolDefragReport* small = report.add_pools();
  small->set_pool(v1::POOL_SMALL);
  small->set_outcome(v1::PoolDefragReport::OUTCOME_CLEANED);
  *small->mutable_before() = MakeStats(1 << 20, 10 << 20, 8000);
  *small->mutable_after() = MakeStats(1 << 20, 2 << 20, 8000);
  small->set_blocks_moved(7000);
  small->set_bytes_moved(900000);
  small->set_spans_released(120);
  small->set_bytes_reclaimed(8 << 20);
  small->mutable_duration()->set_nanos(12300000);
  v1::PoolDefragReport* medium = report.add_pools();
  medium->set_pool(v1::POOL_MEDIUM);
  medium->set_outcome(v1::PoolDefragReport::OUTCOME_SKIPPED);
  medium->set_reason("nothing to gain");
  report.set_bytes_reclaimed(8 << 20);
  report.set_bytes_moved(900000);
  report.set_blocks_moved(7000);
  report.set_spans_released(120);
  report.set_pools_cleaned(1);
  report.set_pools_skipped(1);
  report.set_slices(14);
  report.mutable_max_slice_duration()->set_nanos(1100000);
  report.mutable_duration()->set_nanos(13000000);
  report.set_rss_before_bytes(40 << 20);
  report.set_rss_after_bytes(32 << 20);
  report.set_pools_resident_before_bytes(20 << 20);
  report.set_pools_resident_after_bytes(12 << 20);
  report.set_heap_released_bytes(1 << 20);
  report.set_complete(true);
  return report;
}

TEST(ReportFormatterTest, DefragTable) {
  const std::string text =
      ReportFormatter(OutputFormat::kTable).Defrag(MakeDefrag()).value();
  EXPECT_THAT(text, HasSubstr("cleaned"));
  EXPECT_THAT(text, HasSubstr("90.0% -> 50.0%"));
  EXPECT_THAT(text, HasSubstr("7000"));
  EXPECT_THAT(text, HasSubstr("878.9 KiB"));  // bytes moved
  EXPECT_THAT(text, HasSubstr("8.0 MiB"));    // reclaimed
  EXPECT_THAT(text, HasSubstr("12.3 ms"));
  EXPECT_THAT(text, HasSubstr("skipped"));
  EXPECT_THAT(text, HasSubstr("nothing to gain"));
  EXPECT_THAT(text, HasSubstr("pools: 1 cleaned, 1 skipped, 0 partial, 0 "
                              "failed"));
  EXPECT_THAT(text, HasSubstr("process RSS: 40.0 MiB -> 32.0 MiB (pools 20.0 "
                              "MiB -> 12.0 MiB; heap trim returned 1.0 MiB)"));
  EXPECT_THAT(text, HasSubstr("slices: 14, longest 1.1 ms"));
  EXPECT_THAT(text, HasSubstr("complete"));
  EXPECT_THAT(text, Not(HasSubstr("INCOMPLETE")));
}

TEST(ReportFormatterTest, DefragIncomplete) {
  v1::DefragReport report = MakeDefrag();
  report.set_complete(false);
  report.set_stop_reason(v1::DefragReport::STOP_REASON_DEADLINE);
  EXPECT_THAT(ReportFormatter(OutputFormat::kTable).Defrag(report).value(),
              HasSubstr("INCOMPLETE: stopped early (deadline)"));
}

TEST(ReportFormatterTest, StatsSayWhatAutomaticDefragmentationDoesAndWhy) {
  v1::GetStatsResponse stats = MakeGetStats();
  v1::AutoDefragStats* auto_defrag = stats.mutable_auto_defrag();
  auto_defrag->set_state(v1::AutoDefragStats::STATE_IDLE);
  auto_defrag->set_last_decision(
      "reclaimable 3.1 MiB below the 4.0 MiB minimum (fragmentation 12.0%)");
  auto_defrag->mutable_last_decision_at()->set_seconds(1796457541);
  auto_defrag->mutable_next_look_at()->set_seconds(1796457542);
  auto_defrag->set_runs(3);
  auto_defrag->set_bytes_reclaimed(12 << 20);
  auto_defrag->mutable_cpu_time()->set_nanos(45000000);
  stats.mutable_worker()->set_defragmentations(1);
  stats.mutable_worker()->set_automatic_defragmentations(3);
  stats.mutable_worker()->set_memory_limit_defragmentations(2);
  const ReportFormatter formatter(OutputFormat::kTable);
  std::string text = formatter.Stats(stats).value();
  EXPECT_THAT(text, HasSubstr("defragmentations: 1 requested, 3 automatic, 2 "
                              "for the memory limit"));
  EXPECT_THAT(text, HasSubstr("automatic defragmentation: idle\n"));
  EXPECT_THAT(text,
              HasSubstr("last decision (2026-12-05 07:59:01.000 UTC): no run, "
                        "reclaimable 3.1 MiB below the 4.0 MiB minimum "
                        "(fragmentation 12.0%)\n"));
  EXPECT_THAT(text, HasSubstr("next look: at 2026-12-05 07:59:02.000 UTC or "
                              "the first Allocate or Free after it\n"));
  // Once the snapshot is taken after it, the look is due: it waits for a
  // change.
  stats.mutable_taken_at()->set_seconds(1796457542);
  EXPECT_THAT(formatter.Stats(stats).value(),
              HasSubstr("next look: at the next Allocate or Free (due since "
                        "2026-12-05 07:59:02.000 UTC)\n"));
  stats.mutable_taken_at()->set_seconds(1796457541);
  EXPECT_THAT(text, HasSubstr("runs 3, reclaimed 12.0 MiB, worker CPU time "
                              "45.0 ms\n"));

  auto_defrag->set_state(v1::AutoDefragStats::STATE_RUNNING);
  auto_defrag->set_cpu_share(0.1);
  auto_defrag->set_last_decision_ran(true);
  text = formatter.Stats(stats).value();
  EXPECT_THAT(text, HasSubstr("automatic defragmentation: running within "
                              "10.0% of a core\n"));
  EXPECT_THAT(text, HasSubstr("UTC): run, reclaimable"));
  EXPECT_THAT(text, HasSubstr("next look: when the run ends"));

  auto_defrag->set_state(v1::AutoDefragStats::STATE_BACKING_OFF);
  auto_defrag->set_poor_runs(2);
  EXPECT_THAT(formatter.Stats(stats).value(),
              HasSubstr("backing off (2 poor runs in a row)"));

  auto_defrag->set_state(v1::AutoDefragStats::STATE_DISABLED);
  text = formatter.Stats(stats).value();
  EXPECT_THAT(text, HasSubstr("automatic defragmentation: disabled"));
  EXPECT_THAT(text, Not(HasSubstr("last decision")));

  // A server from before automatic defragmentation does not report it.
  stats.clear_auto_defrag();
  text = formatter.Stats(stats).value();
  EXPECT_THAT(text, HasSubstr("automatic defragmentation: not reported by this "
                              "server\n"));
  EXPECT_THAT(text, Not(HasSubstr("last decision")));
}

TEST(ReportFormatterTest, StatsListRecentDefragmentationsWithTheirOrigin) {
  v1::GetStatsResponse stats = MakeGetStats();
  const ReportFormatter formatter(OutputFormat::kTable);
  EXPECT_THAT(formatter.Stats(stats).value(),
              Not(HasSubstr("recent defragmentations")));
  v1::DefragReport* automatic = stats.add_recent_defragmentations();
  *automatic = MakeDefrag();
  automatic->set_origin(v1::DefragReport::ORIGIN_AUTOMATIC);
  automatic->set_stop_reason(v1::DefragReport::STOP_REASON_PREEMPTED);
  automatic->mutable_started_at()->set_seconds(1796457541);
  v1::DefragReport* rpc = stats.add_recent_defragmentations();
  *rpc = MakeDefrag();
  rpc->set_origin(v1::DefragReport::ORIGIN_RPC);
  rpc->set_stop_reason(v1::DefragReport::STOP_REASON_FINISHED);
  rpc->mutable_started_at()->set_seconds(1796457542);
  const std::string text = formatter.Stats(stats).value();
  EXPECT_THAT(text, HasSubstr("recent defragmentations, oldest first:"));
  const size_t first = text.find("07:59:01.000 UTC  automatic  preempted");
  const size_t second = text.find("07:59:02.000 UTC  rpc        finished");
  ASSERT_NE(first, std::string::npos) << text;
  ASSERT_NE(second, std::string::npos) << text;
  EXPECT_LT(first, second);
  EXPECT_THAT(text, HasSubstr("small cleaned, medium skipped"));
  EXPECT_THAT(text, HasSubstr("40.0 MiB -> 32.0 MiB"));
}

TEST(ReportFormatterTest, DefragJsonRoundTrips) {
  const v1::DefragReport report = MakeDefrag();
  const std::string json =
      ReportFormatter(OutputFormat::kJson).Defrag(report).value();
  EXPECT_THAT(json, HasSubstr("\"OUTCOME_CLEANED\""));
  EXPECT_THAT(json, HasSubstr("\"0.013s\""));
  EXPECT_TRUE(
      MessageDifferencer::Equals(ParseJson<v1::DefragReport>(json), report));
}

TEST(ReportFormatterTest, Allocation) {
  v1::AllocateResponse block;
  block.set_handle(12345678901234ull);
  block.set_pool(v1::POOL_MEDIUM);
  block.set_block_size(5000);
  block.set_slot_bytes(5120);
  const std::string table =
      ReportFormatter(OutputFormat::kTable).Allocation(block).value();
  EXPECT_EQ(table,
            "handle          pool       size     slot\n"
            "12345678901234  medium  4.9 KiB  5.0 KiB\n");
  const std::string json =
      ReportFormatter(OutputFormat::kJson).Allocation(block).value();
  EXPECT_THAT(json, HasSubstr("\"12345678901234\""));
  EXPECT_TRUE(
      MessageDifferencer::Equals(ParseJson<v1::AllocateResponse>(json), block));
}

TEST(ReportFormatterTest, ReadIsRawInTableModeAndBase64InJson) {
  const std::string bytes("hi\0\xff", 4);
  EXPECT_EQ(ReportFormatter(OutputFormat::kTable).Read(bytes).value(), bytes);
  const std::string json =
      ReportFormatter(OutputFormat::kJson).Read(bytes).value();
  EXPECT_EQ(ParseJson<v1::ReadResponse>(json).data(), bytes);
}

TEST(ReportFormatterTest, WriteAndFree) {
  EXPECT_EQ(ReportFormatter(OutputFormat::kTable).Write(42, 6, 5).value(),
            "wrote 5 B at offset 6 of block 42\n");
  EXPECT_EQ(ReportFormatter(OutputFormat::kTable).Free(42).value(),
            "freed block 42\n");
  ParseJson<v1::WriteResponse>(
      ReportFormatter(OutputFormat::kJson).Write(42, 6, 5).value());
  ParseJson<v1::FreeResponse>(
      ReportFormatter(OutputFormat::kJson).Free(42).value());
}

TEST(ReportFormatterTest, Health) {
  using ::grpc::health::v1::HealthCheckResponse;
  EXPECT_EQ(ReportFormatter(OutputFormat::kTable)
                .Health(HealthCheckResponse::NOT_SERVING)
                .value(),
            "NOT_SERVING\n");
  EXPECT_EQ(
      ParseJson<HealthCheckResponse>(ReportFormatter(OutputFormat::kJson)
                                         .Health(HealthCheckResponse::SERVING)
                                         .value())
          .status(),
      HealthCheckResponse::SERVING);
}

LoadSummary MakeLoad() {
  LoadSummary summary;
  summary.blocks_allocated = 100000;
  summary.bytes_allocated = 12500000;
  summary.slot_bytes_allocated = 13600000;
  summary.blocks_by_pool[v1::POOL_SMALL] = 100000;
  summary.blocks_freed = 90000;
  summary.bytes_freed = 11250000;
  summary.kept_handles.assign(10000, 7);
  summary.bytes_kept = 1250000;
  summary.allocate_time = absl::Seconds(2);
  summary.free_time = absl::Milliseconds(1500);
  return summary;
}

TEST(ReportFormatterTest, LoadTable) {
  const std::string text =
      ReportFormatter(OutputFormat::kTable).Load(MakeLoad()).value();
  EXPECT_THAT(text, HasSubstr("allocated  100000"));
  EXPECT_THAT(text, HasSubstr("11.9 MiB"));
  EXPECT_THAT(text, HasSubstr("50000/s"));
  EXPECT_THAT(text, HasSubstr("60000/s"));
  EXPECT_THAT(text, HasSubstr("kept"));
  EXPECT_THAT(text, HasSubstr("blocks allocated per pool: small 100000"));
}

TEST(ReportFormatterTest, LoadJson) {
  const std::string json =
      ReportFormatter(OutputFormat::kJson).Load(MakeLoad()).value();
  const google::protobuf::Struct parsed =
      ParseJson<google::protobuf::Struct>(json);
  EXPECT_EQ(parsed.fields().at("blocksAllocated").number_value(), 100000);
  EXPECT_EQ(parsed.fields().at("blocksFreed").number_value(), 90000);
  EXPECT_EQ(parsed.fields().at("blocksKept").number_value(), 10000);
  EXPECT_EQ(parsed.fields().at("freeSeconds").number_value(), 1.5);
  EXPECT_EQ(parsed.fields()
                .at("blocksByPool")
                .struct_value()
                .fields()
                .at("small")
                .number_value(),
            100000);
}

}  // namespace
}  // namespace poold::client
