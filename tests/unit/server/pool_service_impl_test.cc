// Tests of PoolServiceImpl through a real in-process gRPC server: request
// validation answers at once, commands reach the worker, a full channel
// answers RESOURCE_EXHAUSTED, and draining answers UNAVAILABLE.
#include "server/pool_service_impl.h"

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
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
    Worker::Options options = worker_options;
    options.stats_sink = &board_;
    worker_ = std::make_unique<Worker>(options,
                                       *pools::PoolSet::Create(pool_options));
    service_ =
        std::make_unique<PoolServiceImpl>(worker_.get(), &board_, kMaxBlock);
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

  // GetStats; `consistent` asks the worker instead of the board.
  grpc::Status GetStats(bool consistent, bool include_classes,
                        bool include_history, v1::GetStatsResponse* response,
                        absl::Duration timeout = absl::Seconds(10)) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::GetStatsRequest request;
    request.set_consistent(consistent);
    request.set_include_classes(include_classes);
    request.set_include_defrag_history(include_history);
    return stub_->GetStats(&context, request, response);
  }

  grpc::Status Free(uint64_t handle) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::FreeRequest request;
    request.set_handle(handle);
    v1::FreeResponse response;
    return stub_->Free(&context, request, &response);
  }

  grpc::Status Defragment() {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::TriggerDefragmentationRequest request;
    v1::DefragReport response;
    return stub_->TriggerDefragmentation(&context, request, &response);
  }

  grpc::Status Analyze(std::vector<int> pools) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::AnalyzeFragmentationRequest request;
    for (int p : pools) request.add_pools(static_cast<v1::Pool>(p));
    v1::FragmentationReport response;
    return stub_->AnalyzeFragmentation(&context, request, &response);
  }

  StatsBoard board_;
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

TEST_F(PoolServiceImplTest,
       GetStatsAnswersFromTheSnapshotWhileTheWorkerIsHeld) {
  StartServer({.channel_capacity = 1, .start_paused = true});
  // The worker takes no command: only the snapshot its constructor
  // published can answer, and it does, at once.
  v1::GetStatsResponse stats;
  const grpc::Status status = GetStats(false, true, true, &stats);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(stats.snapshot_sequence(), 1u);
  EXPECT_GT(stats.taken_at().seconds(), 0);
  ASSERT_EQ(stats.pools_size(), 3);
  EXPECT_EQ(stats.total().live_bytes(), 0u);
  EXPECT_EQ(stats.worker().channel_capacity(), 1u);
  // Published with the rest; the transport is read when answering.
  EXPECT_GT(stats.process().rss_bytes(), 0u);
  EXPECT_EQ(stats.transport().max_payload_bytes_in_flight(), 0u);
  // A consistent one needs the worker: it waits until its deadline.
  v1::GetStatsResponse consistent;
  EXPECT_EQ(GetStats(true, false, false, &consistent, absl::Milliseconds(300))
                .error_code(),
            grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(PoolServiceImplTest, ADefragmentationIsInTheSnapshotBeforeItsAnswer) {
  StartServer({.channel_capacity = 64,
               // No periodic publication: only the defragmentation's.
               .publish_interval = absl::Hours(1)});
  std::vector<uint64_t> handles;
  for (int i = 0; i < 200; ++i) {
    grpc::ClientContext context;
    SetDeadline(&context);
    v1::AllocateRequest request;
    request.set_size(100);
    v1::AllocateResponse response;
    ASSERT_TRUE(stub_->Allocate(&context, request, &response).ok());
    handles.push_back(response.handle());
  }
  for (size_t i = 0; i < handles.size(); i += 2) {
    ASSERT_TRUE(Free(handles[i]).ok());
  }
  v1::GetStatsResponse before;
  ASSERT_TRUE(GetStats(false, false, false, &before).ok());
  ASSERT_TRUE(Defragment().ok());
  v1::GetStatsResponse after;
  ASSERT_TRUE(GetStats(false, true, true, &after).ok());
  v1::GetStatsResponse exact;
  ASSERT_TRUE(GetStats(true, true, true, &exact).ok());
  EXPECT_GT(after.snapshot_sequence(), before.snapshot_sequence());
  EXPECT_EQ(after.worker().defragmentations(), 1u);
  ASSERT_EQ(after.recent_defragmentations_size(), 1);
  EXPECT_EQ(after.total().live_bytes(), 100u * 100);
  EXPECT_EQ(after.total().live_bytes(), exact.total().live_bytes());
  EXPECT_EQ(after.total().resident_bytes(), exact.total().resident_bytes());
  EXPECT_EQ(after.pools(0).classes_size(), exact.pools(0).classes_size());
  EXPECT_GT(after.pools(0).classes_size(), 0);
  EXPECT_EQ(exact.snapshot_sequence(), 0u);
  // Without classes and history, the same snapshot carries neither.
  v1::GetStatsResponse plain;
  ASSERT_TRUE(GetStats(false, false, false, &plain).ok());
  EXPECT_EQ(plain.snapshot_sequence(), after.snapshot_sequence());
  EXPECT_EQ(plain.pools(0).classes_size(), 0);
  EXPECT_EQ(plain.recent_defragmentations_size(), 0);
  EXPECT_EQ(plain.total().live_bytes(), after.total().live_bytes());
}

TEST_F(PoolServiceImplTest, DrainingAnswersUnavailable) {
  StartServer({.channel_capacity = 4});
  service_->StartDraining();
  grpc::Status status = Allocate(16, "");
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(status.error_message(), "server is shutting down");
  EXPECT_EQ(Read(0).error_code(), grpc::StatusCode::UNAVAILABLE);
  v1::GetStatsResponse stats;
  EXPECT_EQ(GetStats(false, false, false, &stats).error_code(),
            grpc::StatusCode::UNAVAILABLE);
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
