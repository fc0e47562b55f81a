// Tests of PoolServiceImpl through a real in-process gRPC server: request
// validation answers at once, commands reach the worker, a full channel
// answers RESOURCE_EXHAUSTED, and draining answers UNAVAILABLE.
#include "server/pool_service_impl.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.grpc.pb.h"

namespace poold {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMaxBlock = 4096;

// A PoolServiceImpl served on a free loopback port.
class PoolServiceImplTest : public ::testing::Test {
 protected:
  void StartServer(const Worker::Options& worker_options) {
    pools::PoolSetOptions pool_options;
    pool_options.max_block_bytes = kMaxBlock;
    worker_ = std::make_unique<Worker>(worker_options,
                                       *pools::PoolSet::Create(pool_options));
    service_ = std::make_unique<PoolServiceImpl>(worker_.get(), kMaxBlock);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::PoolService::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                            grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (worker_ != nullptr) worker_->Stop();
    if (server_ != nullptr) server_->Shutdown();
  }

  static void SetDeadline(grpc::ClientContext* context) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::seconds(10));
  }

  grpc::Status Allocate(uint64_t size, const std::string& data) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::AllocateRequest request;
    request.set_size(size);
    request.set_data(data);
    v1::AllocateResponse response;
    return stub_->Allocate(&context, request, &response);
  }

  grpc::Status Read(uint64_t handle) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::ReadRequest request;
    request.set_handle(handle);
    v1::ReadResponse response;
    return stub_->Read(&context, request, &response);
  }

  grpc::Status Analyze(std::vector<int> pools) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::AnalyzeFragmentationRequest request;
    for (int p : pools) request.add_pools(static_cast<v1::Pool>(p));
    v1::FragmentationReport response;
    return stub_->AnalyzeFragmentation(&context, request, &response);
  }

  std::unique_ptr<Worker> worker_;
  std::unique_ptr<PoolServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::PoolService::Stub> stub_;
};

TEST_F(PoolServiceImplTest, InvalidRequestsAnswerAtOnce) {
  StartServer({.channel_capacity = 4});
  EXPECT_EQ(Allocate(0, "").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Allocate(kMaxBlock + 1, "").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Allocate(2, "abc").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Read(0).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Analyze({v1::POOL_UNSPECIFIED}).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Analyze({v1::POOL_SMALL, 12}).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(PoolServiceImplTest, ValidRequestsReachTheEngine) {
  StartServer({.channel_capacity = 4});
  EXPECT_TRUE(Allocate(0, "abc").ok());
  grpc::Status read = Read(5);
  EXPECT_EQ(read.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(read.error_message(), HasSubstr("no block with handle 5"));
  EXPECT_TRUE(Analyze({}).ok());
}

TEST_F(PoolServiceImplTest, FullChannelAnswersResourceExhausted) {
  StartServer({.channel_capacity = 1, .start_paused = true});
  // Three concurrent RPCs into a channel of one with a held worker: exactly
  // one is queued, the other two are refused at once.
  struct Call {
    grpc::ClientContext context;
    v1::FreeRequest request;
    v1::FreeResponse response;
    grpc::Status status;
    absl::Notification done;
  };
  std::vector<std::unique_ptr<Call>> calls;
  for (int i = 0; i < 3; ++i) {
    auto call = std::make_unique<Call>();
    SetDeadline(&call->context);
    call->request.set_handle(1);
    Call* raw = call.get();
    stub_->async()->Free(&raw->context, &raw->request, &raw->response,
                         [raw](grpc::Status status) {
                           raw->status = std::move(status);
                           raw->done.Notify();
                         });
    calls.push_back(std::move(call));
  }
  // The refusals come back at once; the queued call cannot finish while
  // the worker is held. Wait for two answers, then look at all three.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
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
  worker_->Resume();
  ASSERT_TRUE(queued->done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(queued->status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(PoolServiceImplTest, DrainingAnswersUnavailable) {
  StartServer({.channel_capacity = 4});
  service_->StartDraining();
  grpc::Status status = Allocate(16, "");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "server is shutting down");
  EXPECT_EQ(Read(0).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(PoolServiceImplTest, StoppedWorkerAnswersUnavailable) {
  StartServer({.channel_capacity = 4});
  worker_->Stop();
  EXPECT_EQ(Read(3).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(PoolServiceImplTest, CommandOutlivingItsClientDeadlineIsSafe) {
  StartServer({.channel_capacity = 4, .start_paused = true});
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::milliseconds(200));
  v1::FreeRequest request;
  request.set_handle(9);
  v1::FreeResponse response;
  absl::Notification done;
  grpc::Status status;
  stub_->async()->Free(&context, &request, &response, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // The queued command runs after the client gave up: the worker answers
  // DEADLINE_EXCEEDED (or CANCELLED) into a call gRPC already ended, which
  // must be harmless (ASan checks the reactor's lifetime here).
  worker_->Resume();
  worker_->Stop();
}

}  // namespace
}  // namespace poold
