// Tests of request validation and of the proto <-> engine conversions.
#include "server/proto_convert.h"

#include <chrono>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::UnorderedElementsAre;

constexpr uint64_t kMaxBlock = 1 << 20;

// ---- Pools ----------------------------------------------------------------

TEST(PoolConvertTest, RoundTripsEveryPool) {
  for (pools::PoolKind pool : pools::kAllPools) {
    absl::StatusOr<pools::PoolKind> back = PoolFromProto(PoolToProto(pool));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, pool);
  }
  EXPECT_EQ(PoolToProto(pools::PoolKind::kSmall), v1::POOL_SMALL);
  EXPECT_EQ(PoolToProto(pools::PoolKind::kMedium), v1::POOL_MEDIUM);
  EXPECT_EQ(PoolToProto(pools::PoolKind::kLarge), v1::POOL_LARGE);
}

TEST(PoolConvertTest, UnspecifiedAndUnknownAreInvalid) {
  EXPECT_EQ(PoolFromProto(v1::POOL_UNSPECIFIED).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PoolFromProto(4).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PoolFromProto(-1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

google::protobuf::RepeatedField<int> PoolList(std::vector<int> values) {
  google::protobuf::RepeatedField<int> field;
  for (int v : values) field.Add(v);
  return field;
}

TEST(PoolConvertTest, EmptyListMeansAllPools) {
  absl::StatusOr<std::vector<pools::PoolKind>> list =
      PoolListFromProto(PoolList({}));
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(*list,
              ElementsAre(pools::PoolKind::kSmall, pools::PoolKind::kMedium,
                          pools::PoolKind::kLarge));
}

TEST(PoolConvertTest, DuplicatesCountOnceInCanonicalOrder) {
  absl::StatusOr<std::vector<pools::PoolKind>> list = PoolListFromProto(
      PoolList({v1::POOL_LARGE, v1::POOL_SMALL, v1::POOL_LARGE}));
  ASSERT_TRUE(list.ok());
  EXPECT_THAT(*list,
              ElementsAre(pools::PoolKind::kSmall, pools::PoolKind::kLarge));
}

TEST(PoolConvertTest, BadEntryNamesItsIndex) {
  absl::StatusOr<std::vector<pools::PoolKind>> unspecified =
      PoolListFromProto(PoolList({v1::POOL_SMALL, v1::POOL_UNSPECIFIED}));
  EXPECT_EQ(unspecified.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unspecified.status().message(), HasSubstr("pools[1]"));

  absl::StatusOr<std::vector<pools::PoolKind>> unknown =
      PoolListFromProto(PoolList({7}));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(), HasSubstr("unknown pool value 7"));
}

// ---- Requests ---------------------------------------------------------------

TEST(AllocateValidationTest, SizeZeroWithoutDataIsInvalid) {
  v1::AllocateRequest request;
  EXPECT_EQ(AllocateOpFromProto(request, kMaxBlock).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AllocateValidationTest, SizeZeroTakesTheDataLength) {
  v1::AllocateRequest request;
  request.set_data("hello");
  absl::StatusOr<AllocateOp> op = AllocateOpFromProto(request, kMaxBlock);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->size, 5u);
  EXPECT_EQ(op->data, "hello");
  // A view into the request, not a copy.
  EXPECT_EQ(op->data.data(), request.data().data());
}

TEST(AllocateValidationTest, DataLongerThanSizeIsInvalid) {
  v1::AllocateRequest request;
  request.set_size(3);
  request.set_data("hello");
  absl::StatusOr<AllocateOp> op = AllocateOpFromProto(request, kMaxBlock);
  EXPECT_EQ(op.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(op.status().message(), HasSubstr("longer than size"));
}

TEST(AllocateValidationTest, DataShorterThanSizeIsFine) {
  v1::AllocateRequest request;
  request.set_size(100);
  request.set_data("abc");
  absl::StatusOr<AllocateOp> op = AllocateOpFromProto(request, kMaxBlock);
  ASSERT_TRUE(op.ok());
  EXPECT_EQ(op->size, 100u);
  EXPECT_EQ(op->data, "abc");
}

TEST(AllocateValidationTest, SizeLimit) {
  v1::AllocateRequest request;
  request.set_size(kMaxBlock);
  EXPECT_TRUE(AllocateOpFromProto(request, kMaxBlock).ok());

  request.set_size(kMaxBlock + 1);
  absl::StatusOr<AllocateOp> op = AllocateOpFromProto(request, kMaxBlock);
  EXPECT_EQ(op.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(op.status().message(), HasSubstr("--max_block_bytes"));

  request.set_size(UINT64_MAX);
  EXPECT_EQ(AllocateOpFromProto(request, kMaxBlock).status().code(),
            absl::StatusCode::kInvalidArgument);

  // Size 0: the data length counts against the limit.
  v1::AllocateRequest by_data;
  by_data.set_data(std::string(17, 'x'));
  EXPECT_EQ(AllocateOpFromProto(by_data, 16).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(AllocateOpFromProto(by_data, 17).ok());
}

TEST(HandleValidationTest, HandleZeroIsNotFound) {
  EXPECT_EQ(ValidateHandle(0).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(ValidateHandle(1).ok());

  EXPECT_EQ(WriteOpFromProto(v1::WriteRequest()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(ReadOpFromProto(v1::ReadRequest()).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(FreeOpFromProto(v1::FreeRequest()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(RequestConvertTest, CopiesInputsAndViewsData) {
  v1::WriteRequest write;
  write.set_handle(42);
  write.set_offset(7);
  write.set_data("payload");
  absl::StatusOr<WriteOp> write_op = WriteOpFromProto(write);
  ASSERT_TRUE(write_op.ok());
  EXPECT_EQ(write_op->handle, 42u);
  EXPECT_EQ(write_op->offset, 7u);
  EXPECT_EQ(write_op->data.data(), write.data().data());

  v1::ReadRequest read;
  read.set_handle(43);
  read.set_offset(2);
  read.set_length(0);
  absl::StatusOr<ReadOp> read_op = ReadOpFromProto(read);
  ASSERT_TRUE(read_op.ok());
  EXPECT_EQ(read_op->handle, 43u);
  EXPECT_EQ(read_op->offset, 2u);
  EXPECT_EQ(read_op->length, 0u);

  v1::FreeRequest free_request;
  free_request.set_handle(44);
  EXPECT_EQ(FreeOpFromProto(free_request)->handle, 44u);

  v1::GetStatsRequest stats;
  stats.set_include_classes(true);
  EXPECT_TRUE(StatsOpFromProto(stats)->include_classes);
}

TEST(RequestConvertTest, AnalyzeAndDefragPoolLists) {
  v1::AnalyzeFragmentationRequest analyze;
  absl::StatusOr<AnalyzeOp> all = AnalyzeOpFromProto(analyze);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->pools.size(), 3u);
  analyze.add_pools(v1::POOL_UNSPECIFIED);
  EXPECT_EQ(AnalyzeOpFromProto(analyze).status().code(),
            absl::StatusCode::kInvalidArgument);

  v1::TriggerDefragmentationRequest defrag;
  defrag.add_pools(v1::POOL_MEDIUM);
  defrag.add_pools(v1::POOL_MEDIUM);
  absl::StatusOr<DefragOp> medium = DefragOpFromProto(defrag);
  ASSERT_TRUE(medium.ok());
  EXPECT_THAT(medium->pools, ElementsAre(pools::PoolKind::kMedium));
  defrag.add_pools(static_cast<v1::Pool>(9));
  EXPECT_EQ(DefragOpFromProto(defrag).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Responses --------------------------------------------------------------

// Stats with every field distinct, so a swapped field shows.
pools::FragmentationStats DistinctStats(uint64_t base) {
  pools::FragmentationStats s;
  s.live_bytes = base + 1;
  s.allocated_bytes = base + 2;
  s.resident_bytes = base + 30;
  s.metadata_bytes = base + 4;
  s.free_bytes = base + 5;
  s.blocks = base + 6;
  s.spans = base + 7;
  s.partial_spans = base + 8;
  s.empty_spans = base + 9;
  s.reclaimable_bytes = base + 10;
  s.free_extents = base + 11;
  s.largest_free_extent_bytes = base + 12;
  s.unpurged_bytes = base + 13;
  return s;
}

void ExpectStatsEq(const v1::FragmentationStats& proto,
                   const pools::FragmentationStats& s) {
  EXPECT_EQ(proto.live_bytes(), s.live_bytes);
  EXPECT_EQ(proto.allocated_bytes(), s.allocated_bytes);
  EXPECT_EQ(proto.resident_bytes(), s.resident_bytes);
  EXPECT_EQ(proto.metadata_bytes(), s.metadata_bytes);
  EXPECT_EQ(proto.free_bytes(), s.free_bytes);
  EXPECT_EQ(proto.blocks(), s.blocks);
  EXPECT_EQ(proto.spans(), s.spans);
  EXPECT_EQ(proto.partial_spans(), s.partial_spans);
  EXPECT_EQ(proto.empty_spans(), s.empty_spans);
  EXPECT_DOUBLE_EQ(proto.fragmentation_ratio(), s.FragmentationRatio());
  EXPECT_EQ(proto.reclaimable_bytes(), s.reclaimable_bytes);
  EXPECT_EQ(proto.free_extents(), s.free_extents);
  EXPECT_EQ(proto.largest_free_extent_bytes(), s.largest_free_extent_bytes);
  EXPECT_EQ(proto.unpurged_bytes(), s.unpurged_bytes);
}

TEST(ResponseConvertTest, FragmentationStatsEveryField) {
  pools::FragmentationStats stats = DistinctStats(100);
  v1::FragmentationStats proto;
  FragmentationStatsToProto(stats, &proto);
  ExpectStatsEq(proto, stats);
  EXPECT_DOUBLE_EQ(proto.fragmentation_ratio(), 1.0 - 101.0 / 130.0);

  v1::FragmentationStats empty;
  FragmentationStatsToProto(pools::FragmentationStats(), &empty);
  EXPECT_EQ(empty.fragmentation_ratio(), 0.0);
}

TEST(ResponseConvertTest, BlockInfo) {
  pools::BlockInfo info{.handle = 77,
                        .pool = pools::PoolKind::kMedium,
                        .size = 2000,
                        .slot_bytes = 2048};
  v1::AllocateResponse response;
  BlockInfoToProto(info, &response);
  EXPECT_EQ(response.handle(), 77u);
  EXPECT_EQ(response.pool(), v1::POOL_MEDIUM);
  EXPECT_EQ(response.block_size(), 2000u);
  EXPECT_EQ(response.slot_bytes(), 2048u);
}

TEST(ResponseConvertTest, StatsSnapshot) {
  StatsSnapshot snapshot;
  for (pools::PoolKind pool : pools::kAllPools) {
    pools::PoolStats& entry = snapshot.pools.pools[pools::PoolIndex(pool)];
    entry.pool = pool;
    entry.stats = DistinctStats(1000 * (pools::PoolIndex(pool) + 1));
  }
  snapshot.pools.pools[0].classes.push_back(
      {.slot_bytes = 16, .stats = DistinctStats(5)});
  snapshot.pools.total = DistinctStats(9000);
  snapshot.worker.queue_depth = 3;
  snapshot.worker.channel_capacity = 1024;
  snapshot.worker.completed_of(CommandType::kRead) = 12;
  snapshot.worker.completed_of(CommandType::kTriggerDefragmentation) = 2;
  snapshot.worker.refused = 4;
  snapshot.worker.defragmentations = 2;
  snapshot.worker.total_bytes_reclaimed = 8192;
  snapshot.worker.heap_trims = 5;
  snapshot.worker.heap_bytes_released = 6 << 20;
  snapshot.process = {.rss_bytes = 30 << 20,
                      .rss_anon_bytes = 14 << 20,
                      .rss_file_bytes = 16 << 20,
                      .heap_in_use_bytes = 3 << 20,
                      .heap_free_bytes = 1 << 20};

  v1::GetStatsResponse response;
  StatsSnapshotToProto(snapshot, &response);
  ASSERT_EQ(response.pools_size(), 3);
  EXPECT_EQ(response.pools(0).pool(), v1::POOL_SMALL);
  EXPECT_EQ(response.pools(1).pool(), v1::POOL_MEDIUM);
  EXPECT_EQ(response.pools(2).pool(), v1::POOL_LARGE);
  ExpectStatsEq(response.pools(1).stats(), DistinctStats(2000));
  ASSERT_EQ(response.pools(0).classes_size(), 1);
  EXPECT_EQ(response.pools(0).classes(0).slot_bytes(), 16u);
  ExpectStatsEq(response.pools(0).classes(0).stats(), DistinctStats(5));
  EXPECT_EQ(response.pools(1).classes_size(), 0);
  ExpectStatsEq(response.total(), DistinctStats(9000));

  const v1::WorkerStats& worker = response.worker();
  EXPECT_EQ(worker.queue_depth(), 3u);
  EXPECT_EQ(worker.channel_capacity(), 1024u);
  EXPECT_EQ(worker.commands_refused(), 4u);
  EXPECT_EQ(worker.defragmentations(), 2u);
  EXPECT_EQ(worker.total_bytes_reclaimed(), 8192u);
  EXPECT_EQ(worker.heap_trims(), 5u);
  EXPECT_EQ(worker.heap_bytes_released(), 6u << 20);
  const v1::ProcessStats& process = response.process();
  EXPECT_EQ(process.rss_bytes(), 30u << 20);
  EXPECT_EQ(process.rss_anon_bytes(), 14u << 20);
  EXPECT_EQ(process.rss_file_bytes(), 16u << 20);
  EXPECT_EQ(process.heap_in_use_bytes(), 3u << 20);
  EXPECT_EQ(process.heap_free_bytes(), 1u << 20);
  // Beside the pools: the total's resident bytes.
  EXPECT_EQ(process.pools_resident_bytes(),
            snapshot.pools.total.resident_bytes);
  EXPECT_EQ(process.outside_pools_bytes(),
            (30u << 20) - snapshot.pools.total.resident_bytes);
  EXPECT_THAT(
      worker.commands_completed(),
      UnorderedElementsAre(
          Pair("Allocate", 0), Pair("Write", 0), Pair("Read", 12),
          Pair("Free", 0), Pair("GetStats", 0), Pair("AnalyzeFragmentation", 0),
          Pair("TriggerDefragmentation", 2), Pair("Batch", 0)));
}

TEST(ResponseConvertTest, HistogramBucketsInSeconds) {
  LatencyHistogram histogram;
  histogram.Record(absl::Nanoseconds(900));  // <= 1 us
  histogram.Record(absl::Microseconds(1));   // <= 1 us (bounds include)
  histogram.Record(absl::Microseconds(30));  // <= 50 us
  histogram.Record(absl::Seconds(60));       // above every bound
  v1::Histogram proto;
  HistogramToProto(histogram, &proto);
  ASSERT_EQ(proto.bounds_seconds_size(), 22);
  EXPECT_DOUBLE_EQ(proto.bounds_seconds(0), 1e-6);
  EXPECT_DOUBLE_EQ(proto.bounds_seconds(21), 10.0);
  ASSERT_EQ(proto.counts_size(), 23);
  EXPECT_EQ(proto.counts(0), 2u);
  EXPECT_EQ(proto.counts(5), 1u);  // 50 us
  EXPECT_EQ(proto.counts(22), 1u);
  EXPECT_EQ(proto.count(), 4u);
  EXPECT_NEAR(proto.sum_seconds(), 60.0000319, 1e-9);
}

TEST(ResponseConvertTest, LatencyPerMethodAndDefragByOrigin) {
  WorkerStats stats;
  stats.queue_wait[static_cast<size_t>(CommandType::kRead)].Record(
      absl::Microseconds(3));
  stats.service_time[static_cast<size_t>(CommandType::kRead)].Record(
      absl::Microseconds(7));
  DefragOriginStats& automatic =
      stats.by_origin[static_cast<size_t>(pools::DefragOrigin::kAutomatic)];
  automatic.runs = 2;
  automatic.bytes_reclaimed = 4096;
  automatic.pool_outcomes[pools::PoolIndex(pools::PoolKind::kMedium)]
                         [static_cast<size_t>(pools::DefragOutcome::kFailed)] =
      1;
  automatic.slices.Record(absl::Milliseconds(1));
  v1::WorkerStats proto;
  WorkerStatsToProto(stats, &proto);
  ASSERT_EQ(proto.latency_size(), 8);
  const v1::CommandLatency& read = proto.latency(2);
  EXPECT_EQ(read.method(), "Read");
  EXPECT_EQ(read.queue_wait().count(), 1u);
  EXPECT_EQ(read.service().count(), 1u);
  EXPECT_EQ(proto.latency(0).service().count(), 0u);
  ASSERT_EQ(proto.defrag_by_origin_size(), 3);
  const v1::DefragOriginStats& origin = proto.defrag_by_origin(2);
  EXPECT_EQ(origin.origin(), v1::DefragReport::ORIGIN_AUTOMATIC);
  EXPECT_EQ(origin.runs(), 2u);
  EXPECT_EQ(origin.bytes_reclaimed(), 4096u);
  ASSERT_EQ(origin.pool_outcomes_size(), 1);
  EXPECT_EQ(origin.pool_outcomes(0).pool(), v1::POOL_MEDIUM);
  EXPECT_EQ(origin.pool_outcomes(0).outcome(),
            v1::PoolDefragReport::OUTCOME_FAILED);
  EXPECT_EQ(origin.pool_outcomes(0).count(), 1u);
  EXPECT_EQ(origin.slice_duration().count(), 1u);
  EXPECT_EQ(proto.defrag_by_origin(0).origin(), v1::DefragReport::ORIGIN_RPC);
}

TEST(ResponseConvertTest, AnalysesWithTotals) {
  std::vector<pools::PoolAnalysis> analyses(2);
  analyses[0] = {.pool = pools::PoolKind::kSmall,
                 .stats = DistinctStats(0),
                 .blocks_to_move = 3,
                 .bytes_to_move = 300,
                 .spans_to_release = 1,
                 .bytes_to_reclaim = 4096,
                 .ratio_after = 0.25};
  analyses[1] = {.pool = pools::PoolKind::kLarge,
                 .stats = DistinctStats(10),
                 .blocks_to_move = 0,
                 .bytes_to_move = 0,
                 .spans_to_release = 2,
                 .bytes_to_reclaim = 65536,
                 .ratio_after = 0.5};
  v1::FragmentationReport report;
  PoolAnalysesToProto(analyses, &report);
  ASSERT_EQ(report.pools_size(), 2);
  EXPECT_EQ(report.pools(0).pool(), v1::POOL_SMALL);
  EXPECT_EQ(report.pools(0).projected_blocks_moved(), 3u);
  EXPECT_EQ(report.pools(0).projected_bytes_moved(), 300u);
  EXPECT_EQ(report.pools(0).projected_spans_released(), 1u);
  EXPECT_EQ(report.pools(0).projected_bytes_reclaimed(), 4096u);
  EXPECT_DOUBLE_EQ(report.pools(0).projected_fragmentation_ratio(), 0.25);
  EXPECT_EQ(report.pools(1).pool(), v1::POOL_LARGE);
  ExpectStatsEq(report.pools(1).stats(), DistinctStats(10));

  pools::FragmentationStats total = DistinctStats(0);
  total.Add(DistinctStats(10));
  ExpectStatsEq(report.total(), total);
  EXPECT_EQ(report.projected_blocks_moved(), 3u);
  EXPECT_EQ(report.projected_bytes_moved(), 300u);
  EXPECT_EQ(report.projected_bytes_reclaimed(), 4096u + 65536u);
}

TEST(ResponseConvertTest, DefragReportEveryField) {
  pools::DefragReport report;
  pools::PoolDefragReport pool;
  pool.pool = pools::PoolKind::kMedium;
  pool.outcome = pools::DefragOutcome::kPartial;
  pool.reason = "deadline";
  pool.before = DistinctStats(100);
  pool.after = DistinctStats(50);
  pool.blocks_moved = 7;
  pool.bytes_moved = 7000;
  pool.spans_released = 2;
  pool.bytes_reclaimed = 8192;
  pool.duration = absl::Milliseconds(1500);
  report.pools.push_back(pool);
  report.bytes_reclaimed = 8192;
  report.bytes_moved = 7000;
  report.blocks_moved = 7;
  report.spans_released = 2;
  report.pools_cleaned = 1;
  report.pools_skipped = 2;
  report.pools_partial = 3;
  report.pools_failed = 4;
  report.slices = 11;
  report.max_slice = absl::Microseconds(250);
  report.duration = absl::Seconds(3);
  report.rss_before_bytes = 1 << 20;
  report.rss_after_bytes = 1 << 19;
  report.heap_released_bytes = 3 << 20;
  report.pools_resident_before_bytes = 9 << 20;
  report.pools_resident_after_bytes = 5 << 20;
  report.complete = false;

  v1::DefragReport proto;
  DefragReportToProto(report, &proto);
  ASSERT_EQ(proto.pools_size(), 1);
  const v1::PoolDefragReport& p = proto.pools(0);
  EXPECT_EQ(p.pool(), v1::POOL_MEDIUM);
  EXPECT_EQ(p.outcome(), v1::PoolDefragReport::OUTCOME_PARTIAL);
  EXPECT_EQ(p.reason(), "deadline");
  ExpectStatsEq(p.before(), DistinctStats(100));
  ExpectStatsEq(p.after(), DistinctStats(50));
  EXPECT_EQ(p.blocks_moved(), 7u);
  EXPECT_EQ(p.bytes_moved(), 7000u);
  EXPECT_EQ(p.spans_released(), 2u);
  EXPECT_EQ(p.bytes_reclaimed(), 8192u);
  EXPECT_EQ(p.duration().seconds(), 1);
  EXPECT_EQ(p.duration().nanos(), 500000000);

  EXPECT_EQ(proto.bytes_reclaimed(), 8192u);
  EXPECT_EQ(proto.bytes_moved(), 7000u);
  EXPECT_EQ(proto.blocks_moved(), 7u);
  EXPECT_EQ(proto.spans_released(), 2u);
  EXPECT_EQ(proto.pools_cleaned(), 1u);
  EXPECT_EQ(proto.pools_skipped(), 2u);
  EXPECT_EQ(proto.pools_partial(), 3u);
  EXPECT_EQ(proto.pools_failed(), 4u);
  EXPECT_EQ(proto.slices(), 11u);
  EXPECT_EQ(proto.max_slice_duration().seconds(), 0);
  EXPECT_EQ(proto.max_slice_duration().nanos(), 250000);
  EXPECT_EQ(proto.duration().seconds(), 3);
  EXPECT_EQ(proto.rss_before_bytes(), 1u << 20);
  EXPECT_EQ(proto.rss_after_bytes(), 1u << 19);
  EXPECT_EQ(proto.heap_released_bytes(), 3u << 20);
  EXPECT_EQ(proto.pools_resident_before_bytes(), 9u << 20);
  EXPECT_EQ(proto.pools_resident_after_bytes(), 5u << 20);
  EXPECT_FALSE(proto.complete());
}

TEST(ResponseConvertTest, EveryOutcome) {
  EXPECT_EQ(DefragOutcomeToProto(pools::DefragOutcome::kCleaned),
            v1::PoolDefragReport::OUTCOME_CLEANED);
  EXPECT_EQ(DefragOutcomeToProto(pools::DefragOutcome::kSkipped),
            v1::PoolDefragReport::OUTCOME_SKIPPED);
  EXPECT_EQ(DefragOutcomeToProto(pools::DefragOutcome::kPartial),
            v1::PoolDefragReport::OUTCOME_PARTIAL);
  EXPECT_EQ(DefragOutcomeToProto(pools::DefragOutcome::kFailed),
            v1::PoolDefragReport::OUTCOME_FAILED);
}

// ---- Time -------------------------------------------------------------------

TEST(TimeConvertTest, DurationSignsAndSaturation) {
  google::protobuf::Duration d;
  DurationToProto(absl::Milliseconds(-1500), &d);
  EXPECT_EQ(d.seconds(), -1);
  EXPECT_EQ(d.nanos(), -500000000);

  DurationToProto(absl::ZeroDuration(), &d);
  EXPECT_EQ(d.seconds(), 0);
  EXPECT_EQ(d.nanos(), 0);

  DurationToProto(absl::InfiniteDuration(), &d);
  EXPECT_EQ(d.seconds(), 315576000000);
  EXPECT_EQ(d.nanos(), 999999999);

  DurationToProto(-absl::InfiniteDuration(), &d);
  EXPECT_EQ(d.seconds(), -315576000000);
  EXPECT_EQ(d.nanos(), -999999999);
}

TEST(TimeConvertTest, GrpcDeadline) {
  EXPECT_EQ(DeadlineFromGrpc(std::chrono::system_clock::time_point::max()),
            absl::InfiniteFuture());
  absl::Time t = absl::FromUnixSeconds(1700000000) + absl::Microseconds(5);
  EXPECT_EQ(DeadlineFromGrpc(absl::ToChronoTime(t)), t);
}

}  // namespace
}  // namespace poold
