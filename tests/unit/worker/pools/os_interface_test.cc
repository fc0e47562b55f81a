// Tests of OsInterface::System() against the real kernel (residency through
// mincore, errors with the call's name and errno text) and of
// FaultInjectingOs (which call fails, how, and that nothing else changes).
#include "worker/pools/os_interface.h"

#include <cerrno>
#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/pools/fault_injecting_os.h"
#include "worker/pools/os_memory.h"

namespace poold::pools {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr uint64_t kBytes = 16 * 4096;

TEST(OsInterfaceTest, CommitMakesResidentAndPurgeReturnsZeroedPages) {
  OsInterface& os = OsInterface::System();
  absl::StatusOr<char*> base = os.Reserve(kBytes);
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(OsMemory::ResidentBytesIn(*base, kBytes), 0u);
  ASSERT_TRUE(os.Commit(*base, kBytes).ok());
  EXPECT_EQ(OsMemory::ResidentBytesIn(*base, kBytes), kBytes);
  std::memset(*base, 0x5a, kBytes);
  ASSERT_TRUE(os.Purge(*base, kBytes / 2).ok());
  EXPECT_EQ(OsMemory::ResidentBytesIn(*base, kBytes), kBytes / 2);
  EXPECT_EQ((*base)[0], 0);
  EXPECT_EQ((*base)[kBytes - 1], 0x5a);
  EXPECT_TRUE(os.Unmap(*base, kBytes).ok());
}

TEST(OsInterfaceTest, AFailedCallSaysWhichAndWhy) {
  OsInterface& os = OsInterface::System();
  absl::StatusOr<char*> base = os.Reserve(kBytes);
  ASSERT_TRUE(base.ok()) << base.status();
  // madvise needs a page-aligned start: the kernel answers EINVAL.
  const absl::Status purge = os.Purge(*base + 1, 4096);
  EXPECT_EQ(purge.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(purge.message(),
              AllOf(HasSubstr("madvise(MADV_DONTNEED) of 4096 bytes"),
                    HasSubstr(std::strerror(EINVAL))));
  const absl::Status unmap = os.Unmap(*base + 1, 4096);
  EXPECT_THAT(unmap.message(), HasSubstr("munmap of 4096 bytes failed"));
  EXPECT_TRUE(os.Unmap(*base, kBytes).ok());
}

TEST(FaultInjectingOsTest, FailsOnlyTheNthCallOfItsKind) {
  FaultInjectingOs os;
  absl::StatusOr<char*> base = os.Reserve(kBytes);
  ASSERT_TRUE(base.ok()) << base.status();
  ASSERT_TRUE(os.Commit(*base, kBytes).ok());
  std::memset(*base, 0x5a, kBytes);
  os.FailAt(OsCall::kPurge, 2, EIO);
  EXPECT_TRUE(os.Commit(*base, 4096).ok());  // another kind: not counted
  EXPECT_TRUE(os.Purge(*base, 4096).ok());
  const absl::Status failed = os.Purge(*base + 4096, 4096);
  EXPECT_EQ(failed.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(failed.message(),
              AllOf(HasSubstr("madvise(MADV_DONTNEED) of 4096 bytes failed"),
                    HasSubstr(std::strerror(EIO)), HasSubstr("injected")));
  // The failed call never reached the OS: the page is resident, unchanged.
  EXPECT_EQ(OsMemory::ResidentBytesIn(*base + 4096, 4096), 4096u);
  EXPECT_EQ((*base)[4096], 0x5a);
  EXPECT_TRUE(os.Purge(*base + 4096, 4096).ok());  // only the 2nd fails
  EXPECT_EQ(os.calls(OsCall::kPurge), 3u);
  EXPECT_EQ(os.calls(OsCall::kCommit), 2u);
  EXPECT_EQ(os.failures(), 1u);
  EXPECT_TRUE(os.Unmap(*base, kBytes).ok());
}

TEST(FaultInjectingOsTest, RepeatsUntilHealed) {
  FaultInjectingOs os;
  os.FailAt(OsCall::kReserve, 1, ENOMEM, /*repeat=*/true);
  for (int i = 0; i < 3; ++i) {
    const absl::StatusOr<char*> base = os.Reserve(kBytes);
    EXPECT_EQ(base.status().code(), absl::StatusCode::kResourceExhausted);
  }
  os.Heal();
  absl::StatusOr<char*> base = os.Reserve(kBytes);
  ASSERT_TRUE(base.ok()) << base.status();
  EXPECT_EQ(os.failures(), 3u);
  EXPECT_TRUE(os.Unmap(*base, kBytes).ok());
}

TEST(OsFaultSpecTest, ReadsPoolCallCountAndRepeat) {
  absl::StatusOr<OsFaultSpec> spec = ParseOsFaultSpec("medium:purge:3");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pool, PoolKind::kMedium);
  EXPECT_EQ(spec->call, OsCall::kPurge);
  EXPECT_EQ(spec->nth, 3u);
  EXPECT_FALSE(spec->repeat);
  spec = ParseOsFaultSpec("large:map:1:always");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->pool, PoolKind::kLarge);
  EXPECT_EQ(spec->call, OsCall::kReserve);
  EXPECT_TRUE(spec->repeat);
  for (const char* bad : {"", "medium", "medium:purge", "huge:purge:1",
                          "small:mmap:1", "small:purge:0", "small:purge:x",
                          "small:purge:1:often", "small:purge:1:always:x"}) {
    EXPECT_EQ(ParseOsFaultSpec(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

}  // namespace
}  // namespace poold::pools
