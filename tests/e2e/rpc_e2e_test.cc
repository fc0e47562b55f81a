// End-to-end tests of the PoolService RPCs against the real poold: every RPC
// reaches the engine, request validation, and RESOURCE_EXHAUSTED when the
// worker's channel is full.
#include <signal.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/e2e/poold_process.h"

namespace poold::testing {
namespace {

using ::testing::HasSubstr;

class RpcTest : public ::testing::Test {
 protected:
  void Start(PooldProcess::Options options) {
    absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
        PooldProcess::Start(options);
    ASSERT_TRUE(poold.ok()) << poold.status();
    poold_ = *std::move(poold);
    stub_ = v1::PoolService::NewStub(poold_->NewChannel());
  }

  void TearDown() override {
    // Close our connection first: an idle client learns of the server's
    // GOAWAY only at its next poll, which would slow the shutdown down.
    stub_.reset();
    if (poold_ != nullptr) {
      absl::StatusOr<int> code = poold_->Stop();
      EXPECT_TRUE(code.ok()) << code.status();
      EXPECT_EQ(code.value_or(-1), 0) << poold_->Log();
    }
  }

  static void SetDeadline(grpc::ClientContext* context) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
  }

  std::unique_ptr<PooldProcess> poold_;
  std::unique_ptr<v1::PoolService::Stub> stub_;
};

TEST_F(RpcTest, EveryRpcIsServedByTheEngine) {
  ASSERT_NO_FATAL_FAILURE(Start({}));
  std::vector<std::pair<std::string, grpc::Status>> results;
  {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::AllocateRequest request;
    request.set_size(100);
    request.set_data("hello");
    v1::AllocateResponse response;
    results.emplace_back("Allocate", stub_->Allocate(&c, request, &response));
  }
  {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::WriteRequest request;
    request.set_handle(1);
    request.set_data("x");
    v1::WriteResponse response;
    results.emplace_back("Write", stub_->Write(&c, request, &response));
  }
  {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::ReadRequest request;
    request.set_handle(1);
    v1::ReadResponse response;
    results.emplace_back("Read", stub_->Read(&c, request, &response));
  }
  {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::FreeRequest request;
    request.set_handle(1);
    v1::FreeResponse response;
    results.emplace_back("Free", stub_->Free(&c, request, &response));
  }
  {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::GetStatsRequest request;
    v1::GetStatsResponse response;
    results.emplace_back("GetStats", stub_->GetStats(&c, request, &response));
  }
  {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::AnalyzeFragmentationRequest request;
    v1::FragmentationReport response;
    results.emplace_back("AnalyzeFragmentation",
                         stub_->AnalyzeFragmentation(&c, request, &response));
  }
  {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::TriggerDefragmentationRequest request;
    request.add_pools(v1::POOL_LARGE);
    v1::DefragReport response;
    results.emplace_back("TriggerDefragmentation",
                         stub_->TriggerDefragmentation(&c, request, &response));
  }
  for (const auto& [rpc, status] : results) {
    // Handle 1 was never issued: the data RPCs on it are NOT_FOUND.
    if (rpc == "Write" || rpc == "Read" || rpc == "Free") {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << rpc;
      EXPECT_EQ(status.error_message(), "no block with handle 1") << rpc;
    } else {
      EXPECT_TRUE(status.ok()) << rpc << ": " << status.error_message();
    }
  }
}

TEST_F(RpcTest, InvalidRequestsGetTheirCodes) {
  PooldProcess::Options options;
  options.extra_flags = {"--max_block_bytes=1024"};
  ASSERT_NO_FATAL_FAILURE(Start(options));

  auto allocate = [&](uint64_t size, const std::string& data) {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::AllocateRequest request;
    request.set_size(size);
    request.set_data(data);
    v1::AllocateResponse response;
    return stub_->Allocate(&c, request, &response);
  };
  EXPECT_EQ(allocate(0, "").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::Status too_big = allocate(1025, "");
  EXPECT_EQ(too_big.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_big.error_message(), HasSubstr("--max_block_bytes"));
  EXPECT_EQ(allocate(0, std::string(1025, 'z')).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(allocate(3, "four").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(allocate(1024, "").ok());

  {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::ReadRequest request;  // handle 0
    v1::ReadResponse response;
    EXPECT_EQ(stub_->Read(&c, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::FreeRequest request;  // handle 0
    v1::FreeResponse response;
    EXPECT_EQ(stub_->Free(&c, request, &response).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  for (int bad_pool : {0, 4, -3}) {
    grpc::ClientContext c;
    SetDeadline(&c);
    v1::TriggerDefragmentationRequest request;
    request.add_pools(v1::POOL_SMALL);
    request.add_pools(static_cast<v1::Pool>(bad_pool));
    v1::DefragReport response;
    grpc::Status status = stub_->TriggerDefragmentation(&c, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << bad_pool;
    EXPECT_THAT(status.error_message(), HasSubstr("pools[1]"));
  }
}

// With a channel of one command and the worker held (--testing_hold_worker),
// exactly one of three concurrent RPCs is queued and the two others are
// answered RESOURCE_EXHAUSTED at once. At SIGTERM the queued one is still
// completed.
TEST_F(RpcTest, FullChannelAnswersResourceExhausted) {
  PooldProcess::Options options;
  options.extra_flags = {"--channel_capacity=1", "--testing_hold_worker"};
  ASSERT_NO_FATAL_FAILURE(Start(options));
  EXPECT_THAT(poold_->Log(), HasSubstr("TESTING ONLY"));

  struct Call {
    grpc::ClientContext context;
    v1::AllocateRequest request;
    v1::AllocateResponse response;
    grpc::Status status;
    absl::Notification done;
  };
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < 3; ++i) {
    auto call = std::make_unique<Call>();
    call->context.set_deadline(
        absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    call->request.set_size(32);
    Call* raw = call.get();
    stub_->async()->Allocate(&raw->context, &raw->request, &raw->response,
                             [raw](grpc::Status status) {
                               raw->status = std::move(status);
                               raw->done.Notify();
                             });
    calls.push_back(std::move(call));
  }

  // The refusals come back at once; the queued call cannot finish while
  // the worker is held. Wait for two answers, then look at all three.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  auto answered = [&calls] {
    int n = 0;
    for (auto& call : calls) n += call->done.HasBeenNotified() ? 1 : 0;
    return n;
  };
  while (answered() < 2 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  int refused = 0;
  Call* queued = nullptr;
  for (auto& call : calls) {
    if (call->done.HasBeenNotified()) {
      EXPECT_EQ(call->status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
          << call->status.error_message();
      EXPECT_THAT(call->status.error_message(), HasSubstr("queue is full"));
      ++refused;
    } else {
      queued = call.get();
    }
  }
  EXPECT_EQ(refused, 2);
  ASSERT_NE(queued, nullptr);

  ASSERT_TRUE(poold_->Signal(SIGTERM).ok());
  ASSERT_TRUE(queued->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
  // Queued work is completed during the drain: the allocation succeeds.
  EXPECT_TRUE(queued->status.ok()) << queued->status.error_message();
}

}  // namespace
}  // namespace poold::testing
