// CallerIdentity: identities from the TLS auth context, owner masks,
// operator check and limiter keys.
#include "server/caller_identity.h"

#include <memory>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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

std::string CallerIdentity::AddressWithoutPort(absl::string_view peer) {
  if (!absl::StartsWith(peer, "ipv4:") && !absl::StartsWith(peer, "ipv6:")) {
    return std::string(peer);
  }
  const size_t colon = peer.rfind(':');
  // ipv6:[::1]:5 -> the colon after ']'; ipv4:1.2.3.4:5 -> the last one.
  if (colon == absl::string_view::npos || colon < 5) return std::string(peer);
  return std::string(peer.substr(0, colon));
}

Caller CallerIdentity::Of(grpc::CallbackServerContext& context) const {
  if (!identities_) {
    Caller caller;
    caller.limiter_key = AddressWithoutPort(context.peer());
    caller.local = absl::StartsWith(caller.limiter_key, "unix:");
    return caller;
  }
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  return Of(auth.get(), context.peer());
}

Caller CallerIdentity::Of(const grpc::AuthContext* auth,
                          absl::string_view peer) const {
  Caller caller;
  caller.local = absl::StartsWith(peer, "unix:");
  if (!identities_ || auth == nullptr || !auth->IsPeerAuthenticated()) {
    caller.limiter_key = AddressWithoutPort(peer);
    return caller;
  }
  // The peer identity gRPC chose (the SANs, or the common name without
  // them): what the certificate says its holder is.
  std::vector<std::string> names;
  for (const grpc::string_ref& name : auth->GetPeerIdentity()) {
    names.emplace_back(name.data(), name.size());
  }
  const std::string identity = absl::StrJoin(names, ",");
  caller.owner = OwnerMask(identity);
  caller.limiter_key = absl::StrCat("identity:", identity);
  // An operator is named as the authorization policy names principals: a
  // URI or DNS SAN, or the subject.
  for (const char* property :
       {GRPC_PEER_URI_PROPERTY_NAME, GRPC_PEER_DNS_PROPERTY_NAME,
        GRPC_X509_SUBJECT_PROPERTY_NAME, GRPC_X509_CN_PROPERTY_NAME}) {
    for (const grpc::string_ref& value : auth->FindPropertyValues(property)) {
      if (operators_.contains(absl::string_view(value.data(), value.size()))) {
        caller.is_operator = true;
      }
    }
  }
  return caller;
}

}  // namespace poold
