// Tests of CallerIdentity: limiter keys from peer strings, owner masks,
// identities of authenticated peers (stable across the order of their
// names), operators named only by SANs, and anonymous callers.
#include "server/caller_identity.h"

#include <map>
#include <string>
#include <vector>

#include "grpc/grpc_security_constants.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

// An AuthContext holding given properties (gRPC's own needs a connection).
class FakeAuthContext final : public grpc::AuthContext {
 public:
  FakeAuthContext(bool authenticated,
                  std::multimap<std::string, std::string> properties)
      : authenticated_(authenticated), properties_(std::move(properties)) {}

  bool IsPeerAuthenticated() const override { return authenticated_; }
  std::vector<grpc::string_ref> GetPeerIdentity() const override {
    return FindPropertyValues(GRPC_X509_SAN_PROPERTY_NAME);
  }
  std::string GetPeerIdentityPropertyName() const override {
    return GRPC_X509_SAN_PROPERTY_NAME;
  }
  std::vector<grpc::string_ref> FindPropertyValues(
      const std::string& name) const override {
    std::vector<grpc::string_ref> values;
    auto [first, last] = properties_.equal_range(name);
    for (auto it = first; it != last; ++it) values.emplace_back(it->second);
    return values;
  }
  grpc::AuthPropertyIterator begin() const override { return Iterator(); }
  grpc::AuthPropertyIterator end() const override { return Iterator(); }
  void AddProperty(const std::string& key,
                   const grpc::string_ref& value) override {
    properties_.emplace(key, std::string(value.data(), value.size()));
  }
  bool SetPeerIdentityPropertyName(const std::string&) override {
    return false;
  }

 private:
  struct Iterator : grpc::AuthPropertyIterator {
    Iterator() = default;
  };
  bool authenticated_;
  std::multimap<std::string, std::string> properties_;
};

TEST(CallerIdentityTest, ClientAddress) {
  EXPECT_EQ(CallerIdentity::ClientAddress("ipv4:10.0.0.7:41234"),
            "ipv4:10.0.0.7");
  // An IPv6 client is its /64: it may hold all of it.
  EXPECT_EQ(CallerIdentity::ClientAddress("ipv6:[2001:db8:1:2:3:4:5:6]:5"),
            "ipv6:2001:db8:1:2::/64");
  EXPECT_EQ(CallerIdentity::ClientAddress("ipv6:%5B2001:db8:1:2::9%5D:5"),
            "ipv6:2001:db8:1:2::/64");
  EXPECT_EQ(CallerIdentity::ClientAddress("ipv6:[::1]:5"), "ipv6:::/64");
  EXPECT_EQ(CallerIdentity::ClientAddress("unix:/run/poold.sock"),
            "unix:/run/poold.sock");
  EXPECT_EQ(CallerIdentity::ClientAddress("unix:"), "unix:");
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

TEST(CallerIdentityTest, TheIdentityIsTheUriSanWhateverTheOrder) {
  const FakeAuthContext ab(true, {{GRPC_PEER_URI_PROPERTY_NAME, "spiffe://b"},
                                  {GRPC_PEER_URI_PROPERTY_NAME, "spiffe://a"},
                                  {GRPC_PEER_DNS_PROPERTY_NAME, "x.example"}});
  const FakeAuthContext ba(true, {{GRPC_PEER_URI_PROPERTY_NAME, "spiffe://a"},
                                  {GRPC_PEER_URI_PROPERTY_NAME, "spiffe://b"}});
  EXPECT_EQ(CallerIdentity::IdentityOf(ab), "spiffe://a");
  EXPECT_EQ(CallerIdentity::IdentityOf(ba), "spiffe://a");
  const FakeAuthContext dns(true, {{GRPC_PEER_DNS_PROPERTY_NAME, "b.example"},
                                   {GRPC_PEER_DNS_PROPERTY_NAME, "a.example"}});
  EXPECT_EQ(CallerIdentity::IdentityOf(dns), "dns:a.example b.example");
  const FakeAuthContext subject(true,
                                {{GRPC_X509_SUBJECT_PROPERTY_NAME, "CN=x"}});
  EXPECT_EQ(CallerIdentity::IdentityOf(subject), "subject:CN=x");

  CallerIdentity identities(true, {});
  const Caller caller = identities.Of(&ab, "ipv4:10.0.0.7:1");
  EXPECT_EQ(caller.owner, identities.OwnerMask("spiffe://a"));
  EXPECT_EQ(caller.limiter_key, "identity:spiffe://a");
  EXPECT_FALSE(caller.is_operator);
}

TEST(CallerIdentityTest, OperatorsAreNamedBySansNotByCommonNames) {
  CallerIdentity identities(true, {"spiffe://ops", "ops.example", "ops"});
  const FakeAuthContext uri(true,
                            {{GRPC_PEER_URI_PROPERTY_NAME, "spiffe://ops"}});
  const FakeAuthContext dns(true,
                            {{GRPC_PEER_DNS_PROPERTY_NAME, "ops.example"}});
  const FakeAuthContext cn(true, {{GRPC_PEER_URI_PROPERTY_NAME, "spiffe://app"},
                                  {GRPC_X509_CN_PROPERTY_NAME, "ops"},
                                  {GRPC_X509_SUBJECT_PROPERTY_NAME, "ops"}});
  EXPECT_TRUE(identities.Of(&uri, "ipv4:1.2.3.4:5").is_operator);
  EXPECT_TRUE(identities.Of(&dns, "ipv4:1.2.3.4:5").is_operator);
  EXPECT_FALSE(identities.Of(&cn, "ipv4:1.2.3.4:5").is_operator);
  // Not authenticated: no operator, whatever the context holds.
  const FakeAuthContext unverified(
      false, {{GRPC_PEER_URI_PROPERTY_NAME, "spiffe://ops"}});
  EXPECT_FALSE(identities.Of(&unverified, "ipv4:1.2.3.4:5").is_operator);
}

TEST(CallerIdentityTest, CallersWithoutACertificate) {
  CallerIdentity identities(true, {"spiffe://ops"});
  const Caller tcp = identities.Of(nullptr, "ipv4:10.0.0.7:41234");
  // Their own owner, apart from identities and from the unix socket.
  EXPECT_EQ(tcp.owner,
            identities.OwnerMask(CallerIdentity::kAnonymousIdentity));
  EXPECT_FALSE(tcp.is_operator);
  EXPECT_FALSE(tcp.local);
  EXPECT_EQ(tcp.limiter_key, "ipv4:10.0.0.7");
  const Caller local = identities.Of(nullptr, "unix:/run/poold.sock");
  EXPECT_TRUE(local.local);
  EXPECT_EQ(local.owner, 0u);
  // Without mutual TLS, nobody has an owner.
  CallerIdentity none(false, {});
  EXPECT_EQ(none.Of(nullptr, "ipv4:10.0.0.7:1").owner, 0u);
}

}  // namespace
}  // namespace poold
