// Tests of PooldServer in-process: option validation, start on a free port,
// health, and shutdown.
#include "server/poold_server.h"

#include <limits>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace poold {
namespace {

using ::grpc::health::v1::Health;
using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;
using ::testing::HasSubstr;

absl::Status Validate(const PooldServer::Options& options) {
  return PooldServer::ValidateOptions(options);
}

// The connection limit fits under the open-files limit, keeping half of it
// (at most 256 descriptors) for poold's own.
TEST(PooldServerTest, TheConnectionLimitFitsTheOpenFilesLimit) {
  EXPECT_EQ(PooldServer::EffectiveMaxConnections(1024, 1048576), 1024u);
  EXPECT_EQ(PooldServer::EffectiveMaxConnections(1024, 1024), 768u);
  EXPECT_EQ(PooldServer::EffectiveMaxConnections(1024, 128), 64u);
  EXPECT_EQ(PooldServer::EffectiveMaxConnections(0, 4096), 3840u);
  EXPECT_EQ(PooldServer::EffectiveMaxConnections(10, 1), 1u);
  EXPECT_EQ(PooldServer::EffectiveMaxConnections(0, uint64_t{1} << 40),
            std::numeric_limits<uint32_t>::max());
}

TEST(PooldServerOptionsTest, DefaultsAreValid) {
  EXPECT_TRUE(Validate(PooldServer::Options()).ok());
}

TEST(PooldServerOptionsTest, RejectsOptionsThatCannotWork) {
  PooldServer::Options options;
  options.listen = "";
  EXPECT_THAT(Validate(options).message(), HasSubstr("nothing to listen on"));

  options = PooldServer::Options();
  options.listen = "no-port";
  EXPECT_THAT(Validate(options).message(), HasSubstr("--listen"));

  options = PooldServer::Options();
  options.unix_socket = "/" + std::string(300, 's');
  EXPECT_THAT(Validate(options).message(), HasSubstr("--unix_socket"));

  options = PooldServer::Options();
  options.channel_capacity = 0;
  EXPECT_THAT(Validate(options).message(), HasSubstr("--channel_capacity"));
  options.channel_capacity = PooldServer::kMaxChannelCapacity + 1;
  EXPECT_THAT(Validate(options).message(), HasSubstr("--channel_capacity"));

  options = PooldServer::Options();
  options.metrics_listen = "no-port";
  EXPECT_THAT(Validate(options).message(), HasSubstr("--metrics_listen"));
  options.metrics_listen = "127.0.0.1:0";
  EXPECT_TRUE(Validate(options).ok());

  options = PooldServer::Options();
  options.testing_slice_pause = absl::Milliseconds(-1);
  EXPECT_THAT(Validate(options).message(),
              HasSubstr("--testing_defrag_slice_pause"));
  options.testing_slice_pause = absl::Seconds(2);
  EXPECT_THAT(Validate(options).message(),
              HasSubstr("--testing_defrag_slice_pause"));

  options = PooldServer::Options();
  options.testing_os_fault = "medium:purge";
  EXPECT_THAT(Validate(options).message(), HasSubstr("--testing_os_fault"));
  options.testing_os_fault = "medium:purge:1:always";
  EXPECT_TRUE(Validate(options).ok());

  options = PooldServer::Options();
  options.max_block_bytes = 0;
  EXPECT_THAT(Validate(options).message(), HasSubstr("--max_block_bytes"));

  options = PooldServer::Options();
  options.max_message_bytes = options.max_block_bytes;
  EXPECT_THAT(Validate(options).message(), HasSubstr("--max_message_bytes"));
  options.max_message_bytes = uint64_t{1} << 32;
  EXPECT_THAT(Validate(options).message(), HasSubstr("--max_message_bytes"));

  options = PooldServer::Options();
  options.shutdown_grace = absl::Seconds(-1);
  EXPECT_THAT(Validate(options).message(), HasSubstr("--shutdown_grace"));

  options = PooldServer::Options();
  options.max_concurrent_streams = 0;
  EXPECT_THAT(Validate(options).message(),
              HasSubstr("--max_concurrent_streams"));

  options = PooldServer::Options();
  options.max_metadata_bytes = PooldServer::kMinMetadataBytes - 1;
  EXPECT_THAT(Validate(options).message(), HasSubstr("--max_metadata_bytes"));
  options.max_metadata_bytes = PooldServer::kMaxMetadataBytes + 1;
  EXPECT_THAT(Validate(options).message(), HasSubstr("--max_metadata_bytes"));

  options = PooldServer::Options();
  options.grpc_memory_bytes = 2 * options.max_message_bytes - 1;
  EXPECT_THAT(Validate(options).message(), HasSubstr("--grpc_memory_bytes"));
  options.grpc_memory_bytes = 0;  // no quota
  EXPECT_TRUE(Validate(options).ok());

  options = PooldServer::Options();
  options.keepalive_time = absl::ZeroDuration();
  EXPECT_THAT(Validate(options).message(), HasSubstr("--keepalive_time"));
  options = PooldServer::Options();
  options.max_connection_idle = absl::Seconds(-1);
  EXPECT_THAT(Validate(options).message(), HasSubstr("--max_connection_idle"));
  options.max_connection_idle = absl::InfiniteDuration();
  EXPECT_TRUE(Validate(options).ok());

  options = PooldServer::Options();
  options.listener_check_interval = absl::Seconds(-1);
  EXPECT_THAT(Validate(options).message(),
              HasSubstr("--listener_check_interval"));
  options.listener_check_interval = absl::Milliseconds(300);
  EXPECT_THAT(Validate(options).message(),
              HasSubstr("--listener_check_interval"));
  options.listener_check_interval = absl::ZeroDuration();
  EXPECT_TRUE(Validate(options).ok());

  options = PooldServer::Options();
  options.listen = "0.0.0.0:0";
  EXPECT_EQ(Validate(options).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(Validate(options).message(),
              HasSubstr("--listen=0.0.0.0:0: refusing to serve plaintext"));
  options.allow_insecure_remote = true;
  EXPECT_TRUE(Validate(options).ok());
  options = PooldServer::Options();
  options.listen = "";
  options.unix_socket = "/tmp/x.sock";
  options.tls.cert_file = "/x.pem";
  options.tls.key_file = "/x.key";
  EXPECT_THAT(Validate(options).message(), HasSubstr("--listen is empty"));
  options = PooldServer::Options();
  options.operator_identities = {"spiffe://ops"};
  EXPECT_THAT(Validate(options).message(),
              HasSubstr("--operator_identities needs mutual TLS"));
  options = PooldServer::Options();
  options.max_unknown_handles_per_second = -1;
  EXPECT_THAT(Validate(options).message(),
              HasSubstr("--max_unknown_handles_per_second"));
  options.max_unknown_handles_per_second =
      std::numeric_limits<double>::infinity();
  EXPECT_THAT(Validate(options).message(),
              HasSubstr("--max_unknown_handles_per_second"));

  options = PooldServer::Options();
  options.max_concurrent_streams = uint32_t{1} << 31;
  EXPECT_THAT(Validate(options).message(),
              HasSubstr("--max_concurrent_streams"));

  options = PooldServer::Options();
  options.heap_arenas = PooldServer::kMaxHeapArenas + 1;
  EXPECT_THAT(Validate(options).message(), HasSubstr("--heap_arenas"));
  options.heap_arenas = 0;  // glibc's default
  EXPECT_TRUE(Validate(options).ok());

  options = PooldServer::Options();
  options.listen = "";
  options.unix_socket = "/tmp/poold.sock";
  EXPECT_TRUE(Validate(options).ok());
}

HealthCheckResponse::ServingStatus CheckHealth(const std::string& target,
                                               const std::string& service,
                                               grpc::Status* status) {
  auto stub = Health::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  *status = stub->Check(&context, request, &response);
  return response.status();
}

TEST(PooldServerTest, ServesHealthOnAFreePortUntilShutdown) {
  PooldServer::Options options;
  options.listen = "127.0.0.1:0";
  options.shutdown_grace = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<PooldServer>> server =
      PooldServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_EQ((*server)->targets().size(), 1u);
  const std::string target = (*server)->targets()[0];
  EXPECT_THAT(target, HasSubstr("127.0.0.1:"));
  EXPECT_NE(target, "127.0.0.1:0");

  grpc::Status status;
  EXPECT_EQ(CheckHealth(target, "", &status), HealthCheckResponse::SERVING);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(CheckHealth(target, "poold.v1.PoolService", &status),
            HealthCheckResponse::SERVING);
  EXPECT_TRUE(status.ok());
  CheckHealth(target, "no.such.Service", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);

  (*server)->Shutdown();
  (*server)->Shutdown();  // idempotent
  CheckHealth(target, "", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST(PooldServerTest, SecondServerOnTheSamePortFails) {
  PooldServer::Options options;
  options.listen = "127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<PooldServer>> first =
      PooldServer::Start(options);
  ASSERT_TRUE(first.ok()) << first.status();
  options.listen = (*first)->targets()[0];
  absl::StatusOr<std::unique_ptr<PooldServer>> second =
      PooldServer::Start(options);
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(second.status().message(), HasSubstr("cannot listen on"));
  EXPECT_THAT(second.status().message(), HasSubstr("in use"));
}

}  // namespace
}  // namespace poold
