// End-to-end tests of remote access done safely, against the real poold
// binary with certificates made by openssl at test time
// (make_test_certs.sh): TLS and mutual TLS on the TCP listener, certificate
// rotation without a restart, operators and block ownership by identity,
// the unknown-handle limit that slows guessers, the refusal of plaintext on
// addresses other than loopback, and start-up errors for bad files.
#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "glog/logging.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/e2e/poold_process.h"

namespace poold {
namespace {

using ::poold::testing::PooldProcess;
using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

// The folder with the test certificates, made once per test binary.
const std::string& CertDir() {
  static const std::string* dir = [] {
    char pattern[] = "/tmp/poold-certs-XXXXXX";
    CHECK(mkdtemp(pattern) != nullptr);
    const std::string command =
        absl::StrCat(POOLD_MAKE_TEST_CERTS, " ", pattern);
    CHECK_EQ(std::system(command.c_str()), 0) << command;
    return new std::string(pattern);
  }();
  return *dir;
}

std::string Cert(absl::string_view name) {
  return absl::StrCat(CertDir(), "/", name);
}

// Client credentials trusting `ca`, with the certificate `client` (none
// when empty).
std::shared_ptr<grpc::ChannelCredentials> TlsClient(
    absl::string_view ca, absl::string_view client = "") {
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFile(Cert(absl::StrCat(ca, ".pem")));
  if (!client.empty()) {
    ssl.pem_cert_chain = ReadFile(Cert(absl::StrCat(client, ".pem")));
    ssl.pem_private_key = ReadFile(Cert(absl::StrCat(client, ".key")));
  }
  return grpc::SslCredentials(ssl);
}

std::unique_ptr<v1::PoolService::Stub> Stub(
    const std::string& target,
    std::shared_ptr<grpc::ChannelCredentials> credentials) {
  return v1::PoolService::NewStub(
      grpc::CreateChannel(target, std::move(credentials)));
}

// TLS flags for poold: its certificate, and for mutual TLS the client CA.
std::vector<std::string> ServerTls(bool mutual) {
  std::vector<std::string> flags = {
      absl::StrCat("--tls_cert_file=", Cert("server.pem")),
      absl::StrCat("--tls_key_file=", Cert("server.key"))};
  if (mutual) {
    flags.push_back(absl::StrCat("--tls_client_ca_file=", Cert("ca.pem")));
    flags.push_back("--tls_require_client_cert");
  }
  return flags;
}

grpc::Status Allocate(v1::PoolService::Stub& stub, const std::string& data,
                      uint64_t* handle) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::AllocateRequest request;
  request.set_size(data.size());
  request.set_data(data);
  v1::AllocateResponse response;
  grpc::Status status = stub.Allocate(&context, request, &response);
  *handle = response.handle();
  return status;
}

grpc::Status Read(v1::PoolService::Stub& stub, uint64_t handle,
                  std::string* data = nullptr) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::ReadRequest request;
  request.set_handle(handle);
  v1::ReadResponse response;
  grpc::Status status = stub.Read(&context, request, &response);
  if (data != nullptr) *data = response.data();
  return status;
}

grpc::Status Free(v1::PoolService::Stub& stub, uint64_t handle) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::FreeRequest request;
  request.set_handle(handle);
  v1::FreeResponse response;
  return stub.Free(&context, request, &response);
}

grpc::Status Defragment(v1::PoolService::Stub& stub) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  v1::TriggerDefragmentationRequest request;
  v1::DefragReport report;
  return stub.TriggerDefragmentation(&context, request, &report);
}

grpc::Status Stats(v1::PoolService::Stub& stub,
                   v1::GetStatsResponse* response) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  v1::GetStatsRequest request;
  return stub.GetStats(&context, request, response);
}

std::unique_ptr<PooldProcess> StartTls(bool mutual,
                                       std::vector<std::string> more = {},
                                       bool unix_socket = false) {
  PooldProcess::Options options;
  options.extra_flags = ServerTls(mutual);
  options.extra_flags.insert(options.extra_flags.end(), more.begin(),
                             more.end());
  options.unix_socket = unix_socket;
  options.tcp_credentials = TlsClient("ca", mutual ? "ops" : "");
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  CHECK(poold.ok()) << poold.status();
  return *std::move(poold);
}

TEST(TlsE2eTest, ServesTlsAndRefusesPlaintextAndStrangers) {
  std::unique_ptr<PooldProcess> poold = StartTls(/*mutual=*/false);
  const std::string target = poold->tcp_target();

  auto tls = Stub(target, TlsClient("ca"));
  uint64_t handle = 0;
  ASSERT_TRUE(Allocate(*tls, "over TLS", &handle).ok());
  std::string data;
  ASSERT_TRUE(Read(*tls, handle, &data).ok());
  EXPECT_EQ(data, "over TLS");

  // A plaintext client on the TLS port gets no answer.
  auto plain = Stub(target, grpc::InsecureChannelCredentials());
  EXPECT_EQ(Read(*plain, handle).error_code(), grpc::StatusCode::UNAVAILABLE);
  // A client that trusts another CA refuses poold's certificate.
  auto wrong_ca = Stub(target, TlsClient("other-ca"));
  EXPECT_EQ(Read(*wrong_ca, handle).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

TEST(TlsE2eTest, MutualTlsRefusesClientsWithoutAValidCertificate) {
  std::unique_ptr<PooldProcess> poold = StartTls(/*mutual=*/true);
  const std::string target = poold->tcp_target();
  uint64_t handle = 0;
  auto app = Stub(target, TlsClient("ca", "app"));
  ASSERT_TRUE(Allocate(*app, "mine", &handle).ok());

  auto anonymous = Stub(target, TlsClient("ca"));
  EXPECT_EQ(Read(*anonymous, handle).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // A certificate of a CA poold does not trust.
  auto stranger = Stub(target, TlsClient("ca", "stranger"));
  EXPECT_EQ(Read(*stranger, handle).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(Read(*app, handle).ok());
}

TEST(TlsE2eTest, BlocksBelongToTheirIdentityAndControlToOperators) {
  std::unique_ptr<PooldProcess> poold = StartTls(
      /*mutual=*/true, {"--operator_identities=spiffe://poold.test/ops"},
      /*unix_socket=*/true);
  const std::string target = poold->tcp_target();
  auto app = Stub(target, TlsClient("ca", "app"));
  auto app2 = Stub(target, TlsClient("ca", "app2"));
  auto ops = Stub(target, TlsClient("ca", "ops"));

  uint64_t handle = 0;
  ASSERT_TRUE(Allocate(*app, "app's block", &handle).ok());
  std::string data;
  ASSERT_TRUE(Read(*app, handle, &data).ok());
  EXPECT_EQ(data, "app's block");

  // Another identity does not find it, and cannot free it.
  EXPECT_EQ(Read(*app2, handle).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Free(*app2, handle).error_code(), grpc::StatusCode::NOT_FOUND);
  // The operator does.
  ASSERT_TRUE(Read(*ops, handle, &data).ok());
  EXPECT_EQ(data, "app's block");

  // Control is for operators (and the pod's own unix socket).
  grpc::Status denied = Defragment(*app);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.error_message(), HasSubstr("spiffe://poold.test/app"));
  v1::GetStatsResponse stats;
  EXPECT_EQ(Stats(*app, &stats).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(Defragment(*ops).ok());
  auto local = Stub(poold->unix_target(), grpc::InsecureChannelCredentials());
  EXPECT_TRUE(Defragment(*local).ok());
  // The pod's own unix socket clients are not an identity's owner either.
  EXPECT_EQ(Read(*local, handle).error_code(), grpc::StatusCode::NOT_FOUND);

  // The block is still app's, intact, after all of that.
  ASSERT_TRUE(Read(*app, handle, &data).ok());
  EXPECT_EQ(data, "app's block");
  EXPECT_TRUE(Free(*app, handle).ok());
  EXPECT_EQ(Read(*ops, handle).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST(TlsE2eTest, AGuesserIsSlowedAndNeverReadsAnotherBlock) {
  PooldProcess::Options options;
  options.extra_flags = {"--max_unknown_handles_per_second=50"};
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  ASSERT_TRUE(poold.ok()) << poold.status();
  auto owner = Stub((*poold)->tcp_target(), grpc::InsecureChannelCredentials());
  std::vector<uint64_t> handles(64);
  for (uint64_t& handle : handles) {
    ASSERT_TRUE(Allocate(*owner, "secret", &handle).ok());
  }

  // The guesser knows the index bits (the lower half) of real handles and
  // tries tags at random, 8 calls at a time (calls sent at once must not
  // outrun the budget).
  auto guesser =
      Stub((*poold)->tcp_target(), grpc::InsecureChannelCredentials());
  constexpr int kThreads = 8;
  constexpr int kGuessesPerThread = 375;
  std::atomic<int> not_found{0};
  std::atomic<int> refused{0};
  std::atomic<int> read_a_block{0};
  std::atomic<int> other{0};
  const absl::Time start = absl::Now();
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      absl::BitGen gen;
      for (int i = 0; i < kGuessesPerThread; ++i) {
        const uint64_t guess =
            (handles[(t * kGuessesPerThread + i) % handles.size()] &
             0xFFFFFFFFu) |
            (absl::Uniform<uint64_t>(gen) << 32);
        const grpc::Status status = Read(*guesser, guess);
        if (status.ok()) {
          ++read_a_block;
        } else if (status.error_code() == grpc::StatusCode::NOT_FOUND) {
          ++not_found;
        } else if (status.error_code() ==
                       grpc::StatusCode::RESOURCE_EXHAUSTED &&
                   absl::StrContains(status.error_message(),
                                     "--max_unknown_handles_per_second")) {
          ++refused;
        } else {
          ++other;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  EXPECT_EQ(read_a_block.load(), 0) << "read another client's block";
  EXPECT_EQ(other.load(), 0);
  // A burst of 500 (ten seconds' worth), then 50 per second, plus the
  // calls in flight when the first unknown handle was counted: far below
  // one guess per millisecond.
  EXPECT_LE(not_found.load(), 500 + 50 * seconds + kThreads);
  EXPECT_GT(refused.load(), 0);
  EXPECT_EQ(not_found.load() + refused.load(), kThreads * kGuessesPerThread);
  std::printf("guesser: %d looked up, %d refused in %.2f s (%.1f lookups/s)\n",
              not_found.load(), refused.load(), seconds,
              not_found.load() / seconds);

  v1::GetStatsResponse stats;
  ASSERT_TRUE(Stats(*owner, &stats).ok());
  EXPECT_EQ(stats.transport().unknown_handle_answers(),
            static_cast<uint64_t>(not_found.load()));
  EXPECT_EQ(stats.transport().unknown_handle_refusals(),
            static_cast<uint64_t>(refused.load()));
  EXPECT_THAT((*poold)->Log(), HasSubstr("unknown handles"));
}

// The subject of the certificate `poold` serves to a new connection.
std::string ServedSubject(const std::string& target) {
  const std::string command = absl::StrCat(
      "openssl s_client -connect ", target,
      " -servername localhost </dev/null 2>/dev/null | openssl x509 -noout "
      "-subject 2>/dev/null");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string out;
  char buffer[256];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) out += buffer;
  pclose(pipe);
  return out;
}

TEST(TlsE2eTest, RotatedCertificatesServeNewConnectionsWithoutARestart) {
  // poold reads copies that the test then replaces, as a Secret's
  // update would.
  const std::string dir = absl::StrCat(CertDir(), "/rotating");
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(Cert("server.pem"), dir + "/tls.crt",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(Cert("server.key"), dir + "/tls.key",
                             std::filesystem::copy_options::overwrite_existing);
  PooldProcess::Options options;
  options.extra_flags = {absl::StrCat("--tls_cert_file=", dir, "/tls.crt"),
                         absl::StrCat("--tls_key_file=", dir, "/tls.key"),
                         "--tls_reload_interval=1s"};
  options.tcp_credentials = TlsClient("ca");
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Start(options);
  ASSERT_TRUE(poold.ok()) << poold.status();
  const std::string target = (*poold)->tcp_target();
  ASSERT_THAT(ServedSubject(target), HasSubstr("poold server one"));

  // Replace both files, each by a rename (atomic).
  std::filesystem::copy_file(Cert("server2.key"), dir + "/tls.key.new");
  std::filesystem::copy_file(Cert("server2.pem"), dir + "/tls.crt.new");
  std::filesystem::rename(dir + "/tls.key.new", dir + "/tls.key");
  std::filesystem::rename(dir + "/tls.crt.new", dir + "/tls.crt");

  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::string subject;
  while (absl::Now() < deadline) {
    subject = ServedSubject(target);
    if (absl::StrContains(subject, "poold server two")) break;
    absl::SleepFor(absl::Milliseconds(200));  // polling, bounded above
  }
  EXPECT_THAT(subject, HasSubstr("poold server two"));
  // The same process still serves, over TLS.
  auto tls = Stub(target, TlsClient("ca"));
  uint64_t handle = 0;
  EXPECT_TRUE(Allocate(*tls, "after rotation", &handle).ok());
}

// Runs poold with `flags` (no waiting) and returns its exit code and log.
std::pair<int, std::string> RunPoold(std::vector<std::string> flags,
                                     std::string listen = "127.0.0.1:0") {
  PooldProcess::Options options;
  options.listen = std::move(listen);
  options.extra_flags = std::move(flags);
  absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
      PooldProcess::Spawn(options);
  CHECK(poold.ok()) << poold.status();
  absl::StatusOr<int> code = (*poold)->WaitForExit(absl::Seconds(30));
  CHECK(code.ok()) << code.status();
  return {*code, (*poold)->Log()};
}

TEST(TlsE2eTest, PlaintextOnEveryInterfaceIsRefusedUnlessAllowed) {
  auto [code, log] = RunPoold({}, "0.0.0.0:0");
  EXPECT_NE(code, 0);
  EXPECT_THAT(log, HasSubstr("refusing to serve plaintext"));
  EXPECT_THAT(log, HasSubstr("--tls_cert_file"));
  EXPECT_THAT(log, HasSubstr("--allow_insecure_remote"));

  PooldProcess::Options options;
  options.listen = "0.0.0.0:0";
  options.extra_flags = {"--allow_insecure_remote"};
  absl::StatusOr<std::unique_ptr<PooldProcess>> allowed =
      PooldProcess::Start(options);
  ASSERT_TRUE(allowed.ok()) << allowed.status();
}

TEST(TlsE2eTest, BadTlsFilesStopPooldNamingTheFlagAndTheFile) {
  {
    auto [code, log] =
        RunPoold({absl::StrCat("--tls_cert_file=", Cert("server.pem")),
                  absl::StrCat("--tls_key_file=", Cert("app.key"))});
    EXPECT_NE(code, 0);
    EXPECT_THAT(log,
                HasSubstr(absl::StrCat("--tls_key_file=", Cert("app.key"))));
    EXPECT_THAT(log, HasSubstr("is not the key of the certificate"));
  }
  {
    const std::string missing = Cert("missing.pem");
    auto [code, log] =
        RunPoold({absl::StrCat("--tls_cert_file=", missing),
                  absl::StrCat("--tls_key_file=", Cert("server.key"))});
    EXPECT_NE(code, 0);
    EXPECT_THAT(log, HasSubstr(absl::StrCat("--tls_cert_file=", missing,
                                            ": cannot be read")));
  }
  {
    auto [code, log] =
        RunPoold({absl::StrCat("--tls_cert_file=", Cert("server.pem")),
                  absl::StrCat("--tls_key_file=", Cert("server.key")),
                  absl::StrCat("--tls_client_ca_file=", Cert("server.key"))});
    EXPECT_NE(code, 0);
    EXPECT_THAT(log, HasSubstr("--tls_client_ca_file"));
    EXPECT_THAT(log, HasSubstr("holds no PEM certificate"));
  }
}

TEST(TlsE2eTest, PoolctlWorksOverMutualTls) {
  std::unique_ptr<PooldProcess> poold = StartTls(/*mutual=*/true);
  const std::string base = absl::StrCat(
      POOLCTL_BINARY_PATH, " --target=", poold->tcp_target(),
      " --tls_ca_file=", Cert("ca.pem"), " --tls_server_name=localhost");
  const std::string with_cert =
      absl::StrCat(base, " --tls_cert_file=", Cert("app.pem"),
                   " --tls_key_file=", Cert("app.key"));
  EXPECT_EQ(std::system((with_cert + " health >/dev/null").c_str()), 0);
  EXPECT_EQ(std::system((with_cert + " stats >/dev/null").c_str()), 0);
  // Without a client certificate the handshake fails: not 0.
  EXPECT_NE(std::system((base + " health >/dev/null 2>&1").c_str()), 0);
}

}  // namespace
}  // namespace poold
