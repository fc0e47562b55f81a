// Tests of TlsSettings' rules that need no certificate files: which flags go
// together, and which listen hosts may serve plaintext. (The files
// themselves are checked end to end, in tls_e2e_test, with certificates
// openssl makes.)
#include "server/tls_settings.h"

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

using ::testing::HasSubstr;

TEST(TlsSettingsTest, LoopbackHosts) {
  for (const char* host : {"localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3",
                           "::1", "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(IsLoopbackHost(host)) << host;
  }
  for (const char* host :
       {"", "0.0.0.0", "::", "10.0.0.7", "128.0.0.1", "::ffff:10.0.0.1",
        "fe80::1", "example.com", "localhost.example.com"}) {
    EXPECT_FALSE(IsLoopbackHost(host)) << host;
  }
}

TEST(TlsSettingsTest, PlaintextOnlyOnLoopbackUnlessAllowed) {
  EXPECT_TRUE(CheckPlaintextListener("127.0.0.1", false, false).ok());
  EXPECT_TRUE(CheckPlaintextListener("10.0.0.7", true, false).ok());
  EXPECT_TRUE(CheckPlaintextListener("", false, true).ok());
  const absl::Status refused = CheckPlaintextListener("", false, false);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), HasSubstr("every interface"));
  EXPECT_THAT(refused.message(), HasSubstr("--tls_cert_file"));
  EXPECT_THAT(refused.message(), HasSubstr("--allow_insecure_remote"));
  EXPECT_THAT(CheckPlaintextListener("10.0.0.7", false, false).message(),
              HasSubstr("\"10.0.0.7\""));
}

TEST(TlsSettingsTest, FlagsThatMustGoTogether) {
  EXPECT_TRUE(ValidateTlsSettings(TlsSettings()).ok());
  TlsSettings only_cert;
  only_cert.cert_file = "/x.pem";
  EXPECT_THAT(ValidateTlsSettings(only_cert).message(),
              HasSubstr("go together"));
  TlsSettings ca_without_tls;
  ca_without_tls.client_ca_file = "/ca.pem";
  EXPECT_THAT(ValidateTlsSettings(ca_without_tls).message(),
              HasSubstr("need --tls_cert_file"));
  TlsSettings required_without_ca;
  required_without_ca.cert_file = "/x.pem";
  required_without_ca.key_file = "/x.key";
  required_without_ca.require_client_cert = true;
  EXPECT_THAT(ValidateTlsSettings(required_without_ca).message(),
              HasSubstr("needs --tls_client_ca_file"));
  TlsSettings fast_reload;
  fast_reload.cert_file = "/x.pem";
  fast_reload.key_file = "/x.key";
  fast_reload.reload_interval = absl::Milliseconds(100);
  EXPECT_THAT(ValidateTlsSettings(fast_reload).message(),
              HasSubstr("--tls_reload_interval"));
  TlsSettings missing;
  missing.cert_file = "/nonexistent/x.pem";
  missing.key_file = "/nonexistent/x.key";
  const absl::Status unreadable = ValidateTlsSettings(missing);
  EXPECT_EQ(unreadable.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unreadable.message(),
              HasSubstr("--tls_cert_file=/nonexistent/x.pem: cannot be read: "
                        "No such file or directory"));
}

}  // namespace
}  // namespace poold
