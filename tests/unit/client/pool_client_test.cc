// Tests of PoolClient against an in-process test service: each method sends
// what it should, returns what the server answers, keeps error codes and
// sets a deadline; Create validates; Connect tells "cannot connect" apart.
#include "client/pool_client.h"

#include <unistd.h>

#include <chrono>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/client/test_pool_service.h"

namespace poold::client {
namespace {

using ::grpc::health::v1::HealthCheckResponse;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using testing::TestServer;

class PoolClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.ok());
    absl::StatusOr<PoolClient> client = PoolClient::Create(server_.target());
    ASSERT_TRUE(client.ok()) << client.status();
    client_.emplace(*std::move(client));
    ASSERT_TRUE(client_->Connect(absl::Seconds(10)).ok());
  }

  TestServer server_;
  std::optional<PoolClient> client_;
};

TEST(PoolClientCreateTest, ValidatesTargetAndOptions) {
  EXPECT_EQ(PoolClient::Create("").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PoolClient::Create("unix:").status().code(),
            absl::StatusCode::kInvalidArgument);
  PoolClient::Options options;
  options.timeout = absl::ZeroDuration();
  EXPECT_EQ(PoolClient::Create("127.0.0.1:1", options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = PoolClient::Options();
  options.max_message_bytes = 0;
  EXPECT_EQ(PoolClient::Create("127.0.0.1:1", options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(PoolClient::Create("unix:/tmp/x.sock").ok());
}

TEST(PoolClientConnectTest, NothingListeningIsUnavailableWithTheReason) {
  const std::string path =
      ::testing::TempDir() + "/poolctl-no-such-" + std::to_string(getpid());
  absl::StatusOr<PoolClient> client = PoolClient::Create("unix:" + path);
  ASSERT_TRUE(client.ok());
  const absl::Status status = client->Connect(absl::Seconds(10));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(status.message(), HasSubstr("cannot connect to unix:" + path));
  EXPECT_THAT(status.message(), HasSubstr("No such file"));
}

TEST_F(PoolClientTest, AllocateReadWriteFree) {
  absl::StatusOr<v1::AllocateResponse> block = client_->Allocate(8, "abc");
  ASSERT_TRUE(block.ok()) << block.status();
  EXPECT_EQ(block->block_size(), 8u);
  EXPECT_EQ(block->pool(), v1::POOL_SMALL);
  EXPECT_EQ(client_->Read(block->handle()).value(),
            std::string("abc\0\0\0\0\0", 8));
  ASSERT_TRUE(client_->Write(block->handle(), 5, "xyz").ok());
  EXPECT_EQ(client_->Read(block->handle(), 3, 5).value(),
            std::string("\0\0xyz", 5));
  ASSERT_TRUE(client_->Free(block->handle()).ok());
  EXPECT_THAT(server_.service().Blocks(), IsEmpty());
}

TEST_F(PoolClientTest, ABatchAnswersEachOperationInOrder) {
  v1::BatchRequest request;
  request.add_operations()->mutable_allocate()->set_data("hey");
  request.add_operations()->mutable_read()->set_handle(42);
  request.add_operations()->mutable_free()->set_handle(1000);  // the first
  absl::StatusOr<v1::BatchResponse> answer = client_->Batch(request);
  ASSERT_TRUE(answer.ok()) << answer.status();
  ASSERT_EQ(answer->results_size(), 3);
  EXPECT_EQ(answer->results(0).code(), 0);
  EXPECT_EQ(answer->results(0).allocate().handle(), 1000u);
  EXPECT_EQ(answer->results(1).code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(answer->results(1).message(), "no block with handle 42");
  EXPECT_EQ(answer->results(2).code(), 0);
  EXPECT_THAT(server_.service().Blocks(), IsEmpty());
  server_.service().FailWith(
      grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "queue full"));
  EXPECT_EQ(client_->Batch(request).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST_F(PoolClientTest, SizeZeroWithDataIsTheDataLength) {
  absl::StatusOr<v1::AllocateResponse> block = client_->Allocate(0, "hello");
  ASSERT_TRUE(block.ok()) << block.status();
  EXPECT_EQ(block->block_size(), 5u);
}

TEST_F(PoolClientTest, ServerErrorsKeepTheirCodeAndMessage) {
  absl::StatusOr<std::string> read = client_->Read(42);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(read.status().message(), "no block with handle 42");
  EXPECT_EQ(client_->Free(42).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->Write(42, 0, "x").code(), absl::StatusCode::kNotFound);
  const uint64_t handle = client_->Allocate(4).value().handle();
  EXPECT_EQ(client_->Write(handle, 3, "xy").code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(client_->Allocate(0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(PoolClientTest, StatsAnalyzeDefragSendTheirArguments) {
  ASSERT_TRUE(client_->GetStats(true).ok());
  EXPECT_TRUE(server_.service().last_stats_request().include_classes());
  ASSERT_TRUE(client_->GetStats().ok());
  EXPECT_FALSE(server_.service().last_stats_request().include_classes());
  EXPECT_FALSE(server_.service().last_stats_request().include_defrag_history());
  ASSERT_TRUE(client_->GetStats(false, true).ok());
  EXPECT_TRUE(server_.service().last_stats_request().include_defrag_history());

  const v1::Pool pools[] = {v1::POOL_SMALL, v1::POOL_LARGE};
  absl::StatusOr<v1::FragmentationReport> report =
      client_->AnalyzeFragmentation(pools);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_THAT(server_.service().last_analyze_request().pools(),
              ElementsAre(v1::POOL_SMALL, v1::POOL_LARGE));
  EXPECT_EQ(report->pools_size(), 2);

  absl::StatusOr<v1::DefragReport> defrag = client_->TriggerDefragmentation();
  ASSERT_TRUE(defrag.ok()) << defrag.status();
  EXPECT_TRUE(defrag->complete());
  EXPECT_THAT(server_.service().last_defrag_request().pools(), IsEmpty());
}

TEST_F(PoolClientTest, EveryCallHasItsOwnDeadline) {
  client_->set_timeout(absl::Seconds(7));
  const auto before = std::chrono::system_clock::now();
  ASSERT_TRUE(client_->GetStats().ok());
  const auto deadline = server_.service().last_deadline();
  EXPECT_GT(deadline, before + std::chrono::seconds(6));
  EXPECT_LT(deadline, before + std::chrono::seconds(8));
}

TEST_F(PoolClientTest, HealthAnswersTheServingStatus) {
  EXPECT_EQ(client_->Health().value(), HealthCheckResponse::SERVING);
  server_.SetServing(false);
  EXPECT_EQ(client_->Health().value(), HealthCheckResponse::NOT_SERVING);
  EXPECT_EQ(client_->Health("no.such.Service").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(PoolClientTest, UnavailableFromTheServerIsAnRpcError) {
  server_.service().FailWith(
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down"));
  const absl::Status status = client_->GetStats().status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(status.message(), "server is shutting down");
  // The connection itself is fine.
  EXPECT_TRUE(client_->Connect(absl::Seconds(1)).ok());
}

TEST_F(PoolClientTest, BlocksOfSixtyFourMiBFitInOneMessage) {
  const std::string data(64 << 20, 'z');
  absl::StatusOr<v1::AllocateResponse> block = client_->Allocate(0, data);
  ASSERT_TRUE(block.ok()) << block.status();
  absl::StatusOr<std::string> read = client_->Read(block->handle());
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->size(), data.size());
}

}  // namespace
}  // namespace poold::client
