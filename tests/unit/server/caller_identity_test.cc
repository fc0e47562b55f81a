// Tests of CallerIdentity: limiter keys from peer strings, owner masks, and
// anonymous callers when identities are off.
#include "server/caller_identity.h"

#include "gtest/gtest.h"

namespace poold {
namespace {

TEST(CallerIdentityTest, AddressWithoutPort) {
  EXPECT_EQ(CallerIdentity::AddressWithoutPort("ipv4:10.0.0.7:41234"),
            "ipv4:10.0.0.7");
  EXPECT_EQ(CallerIdentity::AddressWithoutPort("ipv6:[::1]:5"), "ipv6:[::1]");
  EXPECT_EQ(CallerIdentity::AddressWithoutPort("ipv6:%5B::1%5D:5"),
            "ipv6:%5B::1%5D");
  EXPECT_EQ(CallerIdentity::AddressWithoutPort("unix:/run/poold.sock"),
            "unix:/run/poold.sock");
  EXPECT_EQ(CallerIdentity::AddressWithoutPort("unix:"), "unix:");
}

TEST(CallerIdentityTest, OwnerMasksDifferByIdentityAndProcess) {
  CallerIdentity one(true, {});
  CallerIdentity two(true, {});
  EXPECT_EQ(one.OwnerMask("spiffe://a"), one.OwnerMask("spiffe://a"));
  EXPECT_NE(one.OwnerMask("spiffe://a"), one.OwnerMask("spiffe://b"));
  EXPECT_NE(one.OwnerMask("spiffe://a"), 0u);
  // Keyed per process: another process gives other masks.
  EXPECT_NE(one.OwnerMask("spiffe://a"), two.OwnerMask("spiffe://a"));
}

TEST(CallerIdentityTest, WithoutAnAuthenticatedPeerACallerIsAnonymous) {
  CallerIdentity identities(true, {"spiffe://ops"});
  const Caller tcp = identities.Of(nullptr, "ipv4:10.0.0.7:41234");
  EXPECT_EQ(tcp.owner, 0u);
  EXPECT_FALSE(tcp.is_operator);
  EXPECT_FALSE(tcp.local);
  EXPECT_EQ(tcp.limiter_key, "ipv4:10.0.0.7");
  const Caller local = identities.Of(nullptr, "unix:/run/poold.sock");
  EXPECT_TRUE(local.local);
  EXPECT_EQ(local.owner, 0u);
}

}  // namespace
}  // namespace poold
