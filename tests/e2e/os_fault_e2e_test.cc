// End-to-end test of a pool whose calls to the OS fail, against the real
// poold started with the testing-only --testing_os_fault: a defragmentation
// answers OK with that pool FAILED and why, the other pools are still
// defragmented, every block reads back unchanged, and the failure is logged.
#include <cstdint>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/e2e/defrag_test_support.h"
#include "tests/e2e/pool_test_client.h"
#include "tests/e2e/poold_process.h"

namespace poold::testing {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

using OsFaultE2eTest = DefragE2eTest;

TEST_F(OsFaultE2eTest, APoolWhosePurgesFailIsReportedAndTheOthersAreCleaned) {
  ASSERT_NO_FATAL_FAILURE(
      Start({"--testing_os_fault=medium:purge:1:always", "--cache_decay=1h"}));
  EXPECT_THAT(poold_->Log(),
              HasSubstr("TESTING ONLY (--testing_os_fault=medium:purge:1:"
                        "always)"));
  FragmentedData data;
  POOLD_ASSERT_OK(BuildFragmented(*client_, (uint64_t{8} << 20) / kDataScale,
                                  (uint64_t{32} << 20) / kDataScale, 80,
                                  &data));

  v1::DefragReport report;
  const grpc::Status status = client_->Defragment({}, &report);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(report.pools_failed(), 1u) << report.DebugString();
  bool saw_medium = false;
  bool saw_small = false;
  for (const v1::PoolDefragReport& pool : report.pools()) {
    if (pool.pool() == v1::POOL_MEDIUM) {
      saw_medium = true;
      EXPECT_EQ(pool.outcome(), v1::PoolDefragReport::OUTCOME_FAILED);
      EXPECT_THAT(pool.reason(), AllOf(HasSubstr("madvise(MADV_DONTNEED)"),
                                       HasSubstr("Input/output error"),
                                       HasSubstr("every block is in place")));
      // Nothing counted as returned that the OS kept.
      EXPECT_EQ(pool.bytes_reclaimed(),
                pool.before().resident_bytes() - pool.after().resident_bytes());
      EXPECT_GT(pool.after().reclaimable_bytes(), 0u);
    } else if (pool.pool() == v1::POOL_SMALL) {
      saw_small = true;
      EXPECT_EQ(pool.outcome(), v1::PoolDefragReport::OUTCOME_CLEANED)
          << pool.reason();
      EXPECT_EQ(pool.after().reclaimable_bytes(), 0u);
      EXPECT_GT(pool.bytes_reclaimed(), 0u);
    }
  }
  EXPECT_TRUE(saw_medium && saw_small) << report.DebugString();
  POOLD_ASSERT_OK(client_->VerifyAll(data.survivors, kWindow));
  EXPECT_THAT(poold_->Log(),
              HasSubstr("defragmentation of the medium pool failed"));

  // The server goes on serving, and its statistics say which pool failed
  // and why.
  v1::GetStatsResponse stats;
  ASSERT_TRUE(client_->GetStats(false, &stats).ok());
  for (const v1::PoolStats& pool : stats.pools()) {
    SCOPED_TRACE(v1::Pool_Name(pool.pool()));
    if (pool.pool() == v1::POOL_MEDIUM) {
      EXPECT_EQ(pool.defrag_failures(), 1u);
      EXPECT_THAT(pool.last_defrag_failure(),
                  HasSubstr("madvise(MADV_DONTNEED)"));
    } else {
      EXPECT_EQ(pool.defrag_failures(), 0u);
      EXPECT_EQ(pool.last_defrag_failure(), "");
    }
  }
}

}  // namespace
}  // namespace poold::testing
