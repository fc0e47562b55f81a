// CallerIdentity: identities from the TLS auth context, owner masks,
// operator check and limiter keys.
#include "server/caller_identity.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "grpc/grpc_security_constants.h"

namespace poold {

CallerIdentity::CallerIdentity(bool identities,
                               const std::vector<std::string>& operators)
    : identities_(identities), operators_(operators.begin(), operators.end()) {
  absl::BitGen gen;
  key_ =
      pools::SipKey{absl::Uniform<uint64_t>(gen), absl::Uniform<uint64_t>(gen)};
}

uint32_t CallerIdentity::OwnerMask(absl::string_view identity) const {
  const uint32_t mask =
      static_cast<uint32_t>(pools::SipHash13(key_, identity) >> 32);
  return mask == 0 ? 1 : mask;
}

std::string CallerIdentity::ClientAddress(absl::string_view peer) {
  const bool v4 = absl::StartsWith(peer, "ipv4:");
  const bool v6 = absl::StartsWith(peer, "ipv6:");
  if (!v4 && !v6) return std::string(peer);  // unix sockets and the rest
  absl::string_view host = peer.substr(5);
  const size_t colon = host.rfind(':');
  if (colon == absl::string_view::npos) return std::string(peer);
  host = host.substr(0, colon);  // without the port
  if (v4) return absl::StrCat("ipv4:", host);
  // "[2001:db8::1]" or "%5B2001:db8::1%5D": one client may hold a whole /64.
  if (absl::ConsumePrefix(&host, "[")) {
    absl::ConsumeSuffix(&host, "]");
  } else if (absl::ConsumePrefix(&host, "%5B")) {
    absl::ConsumeSuffix(&host, "%5D");
  }
  in6_addr address;
  if (inet_pton(AF_INET6, std::string(host).c_str(), &address) != 1) {
    return std::string(peer);
  }
  std::memset(&address.s6_addr[8], 0, 8);
  char text[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, &address, text, sizeof(text));
  return absl::StrCat("ipv6:", text, "/64");
}

Caller CallerIdentity::Of(grpc::CallbackServerContext& context) const {
  if (!identities_) {
    Caller caller;
    caller.limiter_key = ClientAddress(context.peer());
    caller.local = absl::StartsWith(caller.limiter_key, "unix:");
    return caller;
  }
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  return Of(auth.get(), context.peer());
}

std::string CallerIdentity::IdentityOf(const grpc::AuthContext& auth) {
  auto values = [&auth](const char* property) {
    std::vector<std::string> out;
    for (const grpc::string_ref& value : auth.FindPropertyValues(property)) {
      out.emplace_back(value.data(), value.size());
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  // What a certificate's holder is, stable across renewals that keep its
  // names: its URI SAN (a SPIFFE ID), else its DNS SANs, else its subject.
  if (std::vector<std::string> uris = values(GRPC_PEER_URI_PROPERTY_NAME);
      !uris.empty()) {
    return uris.front();
  }
  if (std::vector<std::string> dns = values(GRPC_PEER_DNS_PROPERTY_NAME);
      !dns.empty()) {
    return absl::StrCat("dns:", absl::StrJoin(dns, " "));
  }
  std::vector<std::string> subject = values(GRPC_X509_SUBJECT_PROPERTY_NAME);
  return absl::StrCat("subject:", subject.empty() ? "" : subject.front());
}

Caller CallerIdentity::Of(const grpc::AuthContext* auth,
                          absl::string_view peer) const {
  Caller caller;
  caller.local = absl::StartsWith(peer, "unix:");
  if (!identities_ || auth == nullptr || !auth->IsPeerAuthenticated()) {
    caller.limiter_key = ClientAddress(peer);
    // Under mutual TLS, TCP clients without a certificate share an owner of
    // their own, apart from the pod's unix socket clients (owner 0).
    if (identities_ && !caller.local) {
      caller.owner = OwnerMask(kAnonymousIdentity);
    }
    return caller;
  }
  const std::string identity = IdentityOf(*auth);
  caller.owner = OwnerMask(identity);
  caller.limiter_key = absl::StrCat("identity:", identity);
  // Operators are named by a URI or DNS SAN, which the CA vouches for (not
  // by a common name, which certificate policies seldom restrict).
  for (const char* property :
       {GRPC_PEER_URI_PROPERTY_NAME, GRPC_PEER_DNS_PROPERTY_NAME}) {
    for (const grpc::string_ref& value : auth->FindPropertyValues(property)) {
      if (operators_.contains(absl::string_view(value.data(), value.size()))) {
        caller.is_operator = true;
      }
    }
  }
  return caller;
}

}  // namespace poold
