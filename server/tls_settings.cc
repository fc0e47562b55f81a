// TlsSettings: checks of the TLS files at start (with OpenSSL, which gRPC
// itself uses), the credentials that serve them, and the plaintext rule.
#include "server/tls_settings.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <system_error>

#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace poold {
namespace {

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Deleter {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyDeleter>;

// OpenSSL's last error, as text (and the queue emptied).
std::string OpenSslError() {
  const unsigned long code = ERR_peek_last_error();
  ERR_clear_error();
  if (code == 0) return "no PEM block of that kind";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

absl::Status FileError(absl::string_view flag, const std::string& file,
                       absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("--", flag, "=", file, ": ", what));
}

// The whole of `file`, or why it cannot be read.
absl::StatusOr<std::string> ReadFile(absl::string_view flag,
                                     const std::string& file) {
  errno = 0;
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return FileError(flag, file,
                     absl::StrCat("cannot be read: ",
                                  std::error_code(errno ? errno : ENOENT,
                                                  std::generic_category())
                                      .message()));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return FileError(flag, file, "cannot be read");
  return contents.str();
}

BioPtr MemoryBio(const std::string& pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

}  // namespace

absl::Status ValidateTlsSettings(const TlsSettings& settings) {
  if (!settings.enabled()) {
    if (!settings.client_ca_file.empty() || settings.require_client_cert) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file and --tls_require_client_cert need "
          "--tls_cert_file and --tls_key_file (the server's own certificate)");
    }
    return absl::OkStatus();
  }
  if (settings.cert_file.empty() || settings.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file go together: give both, or "
        "neither for plaintext");
  }
  if (settings.require_client_cert && settings.client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_require_client_cert needs --tls_client_ca_file: the CAs that "
        "sign the client certificates");
  }
  if (settings.reload_interval < kMinTlsReloadInterval) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_reload_interval must be at least ",
                     absl::FormatDuration(kMinTlsReloadInterval)));
  }
  ERR_clear_error();

  absl::StatusOr<std::string> cert_pem =
      ReadFile("tls_cert_file", settings.cert_file);
  if (!cert_pem.ok()) return cert_pem.status();
  X509Ptr cert(
      PEM_read_bio_X509(MemoryBio(*cert_pem).get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return FileError(
        "tls_cert_file", settings.cert_file,
        absl::StrCat("is not a PEM certificate (", OpenSslError(), ")"));
  }

  absl::StatusOr<std::string> key_pem =
      ReadFile("tls_key_file", settings.key_file);
  if (!key_pem.ok()) return key_pem.status();
  // No passphrase callback: an encrypted key fails here, as it would in gRPC.
  KeyPtr key(PEM_read_bio_PrivateKey(MemoryBio(*key_pem).get(), nullptr,
                                     nullptr, const_cast<char*>("")));
  if (key == nullptr) {
    return FileError("tls_key_file", settings.key_file,
                     absl::StrCat("is not an unencrypted PEM private key (",
                                  OpenSslError(), ")"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    ERR_clear_error();
    return FileError("tls_key_file", settings.key_file,
                     absl::StrCat("is not the key of the certificate in --"
                                  "tls_cert_file=",
                                  settings.cert_file));
  }

  if (!settings.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca_pem =
        ReadFile("tls_client_ca_file", settings.client_ca_file);
    if (!ca_pem.ok()) return ca_pem.status();
    BioPtr bio = MemoryBio(*ca_pem);
    int certificates = 0;
    while (
        X509Ptr ca{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)}) {
      ++certificates;
    }
    ERR_clear_error();  // the read past the last certificate
    if (certificates == 0) {
      return FileError("tls_client_ca_file", settings.client_ca_file,
                       "holds no PEM certificate");
    }
  }
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> MakeTlsServerCredentials(
    const TlsSettings& settings) {
  const auto interval =
      static_cast<unsigned int>(absl::ToInt64Seconds(settings.reload_interval));
  auto provider =
      std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
          settings.key_file, settings.cert_file, settings.client_ca_file,
          interval);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (settings.asks_client_cert()) {
    options.watch_root_certs();
    options.set_cert_request_type(
        settings.require_client_cert
            ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
            : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

bool IsLoopbackHost(absl::string_view host) {
  if (absl::AsciiStrToLower(host) == "localhost") return true;
  const std::string text(host);
  in_addr v4;
  if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  in6_addr v6;
  if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    // ::ffff:127.x.y.z
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;  // empty (every interface), a name, or anything else
}

absl::Status CheckPlaintextListener(absl::string_view host, bool tls,
                                    bool allow_insecure_remote) {
  if (tls || allow_insecure_remote || IsLoopbackHost(host)) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "refusing to serve plaintext on \"",
      host.empty() ? "every interface" : host,
      "\", which other machines can reach: anyone there could read, "
      "overwrite and free every block. Enable TLS with --tls_cert_file and "
      "--tls_key_file (and --tls_client_ca_file with "
      "--tls_require_client_cert for mutual TLS), listen on loopback, or "
      "give --allow_insecure_remote if the network itself is trusted"));
}

}  // namespace poold
