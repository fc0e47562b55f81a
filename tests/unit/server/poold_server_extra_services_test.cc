// Tests of PooldServer::Options::extra_services: a service added by the
// caller answers on the same server and listeners as PoolService, and a null
// service is refused.
#include <chrono>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "noop.grpc.pb.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "server/poold_server.h"
#include "tests/bench/noop_service.h"

namespace poold {
namespace {

using ::testing::HasSubstr;

std::chrono::system_clock::time_point Deadline() {
  return std::chrono::system_clock::now() + std::chrono::seconds(10);
}

TEST(PooldServerExtraServicesTest, ExtraServiceAnswersBesidePoolService) {
  bench::NoopService noop;  // outlives the server
  PooldServer::Options options;
  options.listen = "127.0.0.1:0";
  options.shutdown_grace = absl::Seconds(1);
  options.extra_services = {&noop};
  absl::StatusOr<std::unique_ptr<PooldServer>> server =
      PooldServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel((*server)->targets()[0],
                                     grpc::InsecureChannelCredentials());

  // The extra service answers...
  auto noop_stub = bench::v1::Noop::NewStub(channel);
  grpc::ClientContext ping_context;
  ping_context.set_deadline(Deadline());
  bench::v1::PingRequest ping;
  ping.set_response_bytes(100);
  bench::v1::PingResponse pong;
  grpc::Status status = noop_stub->Ping(&ping_context, ping, &pong);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(pong.payload().size(), 100u);

  // ...and PoolService still does, on the same connection.
  auto pool_stub = v1::PoolService::NewStub(channel);
  grpc::ClientContext allocate_context;
  allocate_context.set_deadline(Deadline());
  v1::AllocateRequest allocate;
  allocate.set_data("hello");
  v1::AllocateResponse block;
  status = pool_stub->Allocate(&allocate_context, allocate, &block);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(block.block_size(), 5u);

  (*server)->Shutdown();
}

TEST(PooldServerExtraServicesTest, NullServiceIsRefused) {
  PooldServer::Options options;
  options.listen = "127.0.0.1:0";
  options.extra_services = {nullptr};
  EXPECT_THAT(PooldServer::ValidateOptions(options).message(),
              HasSubstr("extra_services"));
  EXPECT_FALSE(PooldServer::Start(options).ok());
}

TEST(PooldServerExtraServicesTest, NoneByDefault) {
  EXPECT_TRUE(PooldServer::Options().extra_services.empty());
}

}  // namespace
}  // namespace poold
