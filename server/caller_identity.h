// CallerIdentity: who a call comes from, as poold's handle rules see it.
// Under mutual TLS a client is its certificate's identity: the blocks it
// allocates are its own (their handles carry its owner mask, see
// OwnerMask), and the identities listed as operators may reach every
// block. Every client also has a limiter key: its identity, or its address
// without the port (so reconnecting does not refill its unknown-handle
// budget).
#ifndef POOLD_SERVER_CALLER_IDENTITY_H_
#define POOLD_SERVER_CALLER_IDENTITY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/auth_context.h"
#include "grpcpp/server_context.h"
#include "worker/pools/sip_hash.h"

namespace poold {

struct Caller {
  // XORed into the upper 32 bits (the tag) of the handles this caller
  // allocates and names; 0 without identities (no mutual TLS) and for unix
  // socket clients.
  uint32_t owner = 0;
  // May name blocks of any owner (--operator_identities).
  bool is_operator = false;
  // Over the unix socket (trusted by its file mode; no identity).
  bool local = false;
  // "identity:" and the identity, or the client's address (ClientAddress).
  std::string limiter_key;
};

class CallerIdentity {
 public:
  // `identities`: whether calls may carry TLS client certificates (mutual
  // TLS configured); without them every caller is anonymous and no auth
  // context is read. `operators`: identities with access to every block.
  // The owner masks are keyed with a random per-process key.
  CallerIdentity(bool identities, const std::vector<std::string>& operators);

  // Whether callers may have identities (mutual TLS).
  bool enabled() const { return identities_; }

  // Who `context`'s call comes from.
  Caller Of(grpc::CallbackServerContext& context) const;

  // Only the owner mask of `context`'s caller (0 at once without
  // identities).
  uint32_t OwnerOf(grpc::CallbackServerContext& context) const {
    return identities_ ? Of(context).owner : 0;
  }

  // The same, from an auth context and a peer string (for tests).
  Caller Of(const grpc::AuthContext* auth, absl::string_view peer) const;

  // The owner mask of `identity` (never 0).
  uint32_t OwnerMask(absl::string_view identity) const;

  // The limiter key of a client without an identity: "ipv4:10.0.0.7:41234"
  // -> "ipv4:10.0.0.7"; "ipv6:[2001:db8::1]:5" -> "ipv6:2001:db8::/64" (one
  // host may hold a whole /64); anything else (unix sockets) as it is.
  static std::string ClientAddress(absl::string_view peer);

  // The identity of an authenticated peer: its URI SAN (the lowest, if
  // several), else "dns:" and its DNS SANs, else "subject:" and its subject.
  static std::string IdentityOf(const grpc::AuthContext& auth);

  // The owner of TCP clients without a certificate under mutual TLS.
  static constexpr char kAnonymousIdentity[] = "(no client certificate)";

 private:
  const bool identities_;
  absl::flat_hash_set<std::string> operators_;
  pools::SipKey key_;
};

}  // namespace poold

#endif  // POOLD_SERVER_CALLER_IDENTITY_H_
