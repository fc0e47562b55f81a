// TlsSettings: how poold's TCP listener speaks TLS (certificate, key, the CA
// that signs client certificates, whether one is required), the checks
// made on those files at start, the gRPC credentials that serve them and
// reload them when they change, and the rule that keeps plaintext off
// addresses other than loopback.
#ifndef POOLD_SERVER_TLS_SETTINGS_H_
#define POOLD_SERVER_TLS_SETTINGS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/security/server_credentials.h"

namespace poold {

struct TlsSettings {
  // PEM certificate chain and private key of the server (--tls_cert_file,
  // --tls_key_file); both empty: no TLS.
  std::string cert_file;
  std::string key_file;
  // PEM bundle of the CAs whose client certificates are accepted
  // (--tls_client_ca_file); empty: clients are not asked for one.
  std::string client_ca_file;
  // A client without a valid certificate is refused in the handshake
  // (--tls_require_client_cert); needs client_ca_file.
  bool require_client_cert = false;
  // How often gRPC rereads the three files (--tls_reload_interval); new
  // connections get the new certificate.
  absl::Duration reload_interval = absl::Seconds(10);

  bool enabled() const { return !cert_file.empty() || !key_file.empty(); }
  bool asks_client_cert() const { return !client_ca_file.empty(); }
};

// Shortest reload_interval (gRPC counts it in whole seconds).
inline constexpr absl::Duration kMinTlsReloadInterval = absl::Seconds(1);

// OK when `settings` can serve TLS: the flags go together (a certificate
// with its key; a client CA and a required client certificate only with
// them), every file is readable PEM, the key is the certificate's, and the
// CA bundle holds at least one certificate. Otherwise INVALID_ARGUMENT
// naming the flag, the file and what is wrong with it. No TLS at all: OK.
absl::Status ValidateTlsSettings(const TlsSettings& settings);

// Server credentials that serve `settings` (which passed
// ValidateTlsSettings and asks for TLS) and reread its files every
// reload_interval, through gRPC's file-watching certificate provider.
std::shared_ptr<grpc::ServerCredentials> MakeTlsServerCredentials(
    const TlsSettings& settings);

// True when `host` (as in --listen, without brackets) names only the
// loopback interface: localhost, 127.0.0.0/8, ::1. An empty host, 0.0.0.0
// and :: mean every interface.
bool IsLoopbackHost(absl::string_view host);

// OK unless poold would serve plaintext where another machine can reach it:
// `host` not loopback, no TLS, and not `allow_insecure_remote`. Then
// FAILED_PRECONDITION saying how to enable TLS or to allow it.
absl::Status CheckPlaintextListener(absl::string_view host, bool tls,
                                    bool allow_insecure_remote);

}  // namespace poold

#endif  // POOLD_SERVER_TLS_SETTINGS_H_
