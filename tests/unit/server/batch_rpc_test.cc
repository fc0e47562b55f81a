// Tests of the Batch RPC through PoolServiceImpl on a real in-process gRPC
// server: order and per-operation status, read-after-write inside a batch,
// the operation limit (checked on the wire), the answer's size limit, the
// unknown-handle brake per operation, and a batch as one queued command.
#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "server/pool_service_impl.h"

namespace poold {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMaxBlock = 4096;

class BatchRpcTest : public ::testing::Test {
 protected:
  void StartServer(const BatchLimits& limits, double unknown_per_second = 0,
                   const Worker::Options& worker_options = {},
                   uint64_t max_block = kMaxBlock) {
    pools::PoolSetOptions pool_options;
    pool_options.max_block_bytes = max_block;
    Worker::Options options = worker_options;
    options.stats_sink = &board_;
    worker_ = std::make_unique<Worker>(options,
                                       *pools::PoolSet::Create(pool_options));
    HandleRules rules;
    rules.unknown_handles_per_second = unknown_per_second;
    service_ = std::make_unique<PoolServiceImpl>(
        worker_.get(), &board_, max_block, /*max_payload_bytes_in_flight=*/0,
        rules, limits);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                             &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    channel_ = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::PoolService::NewStub(channel_);
  }

  void TearDown() override {
    if (worker_ != nullptr) worker_->Stop();
    if (server_ != nullptr) server_->Shutdown();
  }

  grpc::Status Batch(const v1::BatchRequest& request,
                     v1::BatchResponse* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
    return stub_->Batch(&context, request, response);
  }

  static void AddAllocate(v1::BatchRequest* request, uint64_t size,
                          const std::string& data) {
    v1::AllocateRequest* allocate =
        request->add_operations()->mutable_allocate();
    allocate->set_size(size);
    allocate->set_data(data);
  }
  static void AddWrite(v1::BatchRequest* request, uint64_t handle,
                       uint64_t offset, const std::string& data) {
    v1::WriteRequest* write = request->add_operations()->mutable_write();
    write->set_handle(handle);
    write->set_offset(offset);
    write->set_data(data);
  }
  static void AddRead(v1::BatchRequest* request, uint64_t handle) {
    request->add_operations()->mutable_read()->set_handle(handle);
  }
  static void AddFree(v1::BatchRequest* request, uint64_t handle) {
    request->add_operations()->mutable_free()->set_handle(handle);
  }

  StatsBoard board_;
  std::unique_ptr<Worker> worker_;
  std::unique_ptr<PoolServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PoolService::Stub> stub_;
};

constexpr int kOk = 0;
constexpr int kInvalid = static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT);
constexpr int kNotFound = static_cast<int>(grpc::StatusCode::NOT_FOUND);
constexpr int kOutOfRange = static_cast<int>(grpc::StatusCode::OUT_OF_RANGE);
constexpr int kExhausted =
    static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED);

std::vector<int> Codes(const v1::BatchResponse& response) {
  std::vector<int> codes;
  for (const v1::BatchResult& result : response.results()) {
    codes.push_back(result.code());
  }
  return codes;
}

TEST_F(BatchRpcTest, EachOperationGetsItsOwnStatusInOrder) {
  StartServer(BatchLimits());
  v1::BatchRequest first;
  AddAllocate(&first, 10, "hello");
  AddAllocate(&first, 0, "");              // nothing to allocate
  first.add_operations();                  // no operation at all
  AddRead(&first, 12345);                  // no such block
  AddAllocate(&first, kMaxBlock + 1, "");  // too large
  AddAllocate(&first, 0, "second");
  v1::BatchResponse answer;
  ASSERT_TRUE(Batch(first, &answer).ok());
  EXPECT_THAT(Codes(answer), ::testing::ElementsAre(kOk, kInvalid, kInvalid,
                                                    kNotFound, kInvalid, kOk));
  EXPECT_THAT(answer.results(2).message(), HasSubstr("none of allocate"));
  EXPECT_THAT(answer.results(4).message(), HasSubstr("--max_block_bytes"));
  const uint64_t handle = answer.results(0).allocate().handle();
  EXPECT_EQ(answer.results(0).allocate().block_size(), 10u);
  EXPECT_EQ(answer.results(5).allocate().block_size(), 6u);
  EXPECT_NE(handle, answer.results(5).allocate().handle());

  // Each operation sees those before it.
  v1::BatchRequest second;
  AddWrite(&second, handle, 0, "J");
  AddRead(&second, handle);
  AddWrite(&second, handle, 9, "xy");  // past the end
  AddFree(&second, handle);
  AddRead(&second, handle);
  v1::BatchResponse answer2;
  ASSERT_TRUE(Batch(second, &answer2).ok());
  EXPECT_THAT(Codes(answer2),
              ::testing::ElementsAre(kOk, kOk, kOutOfRange, kOk, kNotFound));
  EXPECT_EQ(answer2.results(1).read().data(),
            std::string("Jello") + std::string(5, '\0'));
  EXPECT_TRUE(answer2.results(0).has_write());
  EXPECT_TRUE(answer2.results(3).has_free());
}

TEST_F(BatchRpcTest, AnEmptyBatchAnswersNothing) {
  StartServer(BatchLimits());
  v1::BatchResponse answer;
  ASSERT_TRUE(Batch(v1::BatchRequest(), &answer).ok());
  EXPECT_EQ(answer.results_size(), 0);
}

TEST_F(BatchRpcTest, TooManyOperationsAreRefusedBeforeParsing) {
  StartServer(BatchLimits{.max_operations = 4});
  v1::BatchRequest request;
  for (int i = 0; i < 4; ++i) AddAllocate(&request, 0, "abc");
  v1::BatchResponse answer;
  ASSERT_TRUE(Batch(request, &answer).ok());
  EXPECT_EQ(answer.results_size(), 4);
  AddAllocate(&request, 0, "abc");
  grpc::Status refused = Batch(request, &answer);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("--max_batch_operations"));

  // Two million empty operations (4 MB on the wire) are counted, not built.
  grpc::GenericStub generic(channel_);
  std::string bytes;
  for (int i = 0; i < 2'000'000; ++i) bytes += std::string("\x0a\x00", 2);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer raw(&slice, 1);
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  grpc::ByteBuffer reply;
  grpc::Status status;
  absl::Notification done;
  generic.UnaryCall(&context, "/poold.v1.PoolService/Batch", {}, &raw, &reply,
                    [&](grpc::Status s) {
                      status = std::move(s);
                      done.Notify();
                    });
  done.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("at most 4 operations"));
}

TEST_F(BatchRpcTest, ReadsStopShortOfTheLargestAnswer) {
  // Room for three results' reserve and 2 * 1000 bytes of reads.
  StartServer(BatchLimits{
      .max_operations = 16,
      .max_answer_bytes = 3 * PoolServiceImpl::kResultReserveBytes + 2000});
  v1::BatchRequest allocate;
  AddAllocate(&allocate, 1000, "a");
  v1::BatchResponse block;
  ASSERT_TRUE(Batch(allocate, &block).ok());
  ASSERT_EQ(block.results(0).code(), kOk);
  const uint64_t handle = block.results(0).allocate().handle();
  v1::BatchRequest reads;
  for (int i = 0; i < 3; ++i) AddRead(&reads, handle);
  v1::BatchResponse answer;
  ASSERT_TRUE(Batch(reads, &answer).ok());
  EXPECT_THAT(Codes(answer), ::testing::ElementsAre(kOk, kOk, kExhausted));
  EXPECT_THAT(answer.results(2).message(), HasSubstr("later batch"));
  EXPECT_EQ(answer.results(1).read().data().size(), 1000u);
}

TEST_F(BatchRpcTest, EveryUnknownHandleCountsAgainstItsClient) {
  // 1 per second after a burst of 10: the first 10 unknown handles are
  // answered NOT_FOUND; the client then owes the limiter, and each later
  // handle operation, in the same batch too, needs a token it does not have.
  StartServer(BatchLimits(), /*unknown_per_second=*/1);
  v1::BatchRequest guesses;
  for (int i = 0; i < 12; ++i) AddRead(&guesses, 1000 + i);
  v1::BatchResponse answer;
  ASSERT_TRUE(Batch(guesses, &answer).ok());
  std::vector<int> expected(10, kNotFound);
  expected.push_back(kExhausted);
  expected.push_back(kExhausted);
  EXPECT_EQ(Codes(answer), expected);
  EXPECT_THAT(answer.results(11).message(),
              HasSubstr("--max_unknown_handles_per_second"));
  v1::BatchResponse refused;
  ASSERT_TRUE(Batch(guesses, &refused).ok());
  const std::vector<int> codes = Codes(refused);
  EXPECT_GE(std::count(codes.begin(), codes.end(), kExhausted), 11);
}

TEST_F(BatchRpcTest, ABatchIsOneCommandInTheChannel) {
  // A channel of one, and a worker held: a batch of 100 operations takes
  // the one place, and a second call is refused.
  StartServer(BatchLimits(), 0, {.channel_capacity = 1, .start_paused = true});
  v1::BatchRequest request;
  for (int i = 0; i < 100; ++i) AddAllocate(&request, 0, "abc");
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  v1::BatchResponse answer;
  grpc::Status status;
  absl::Notification done;
  stub_->async()->Batch(&context, &request, &answer, [&](grpc::Status s) {
    status = std::move(s);
    done.Notify();
  });
  // Once the batch is in the channel, a second call finds it full.
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (worker_->queue_depth() < 1 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));  // polls a condition
  }
  ASSERT_EQ(worker_->queue_depth(), 1u);
  v1::BatchRequest one;
  AddAllocate(&one, 0, "x");
  v1::BatchResponse ignored;
  const grpc::Status second = Batch(one, &ignored);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  worker_->Resume();
  done.WaitForNotification();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(answer.results_size(), 100);
  EXPECT_THAT(Codes(answer), ::testing::Each(kOk));
}

// A BatchStream call: writes `requests`, closes, reads every answer.
struct StreamRun {
  std::vector<v1::BatchResponse> answers;
  grpc::Status status;
};

StreamRun RunStream(v1::PoolService::Stub* stub,
                    const std::vector<v1::BatchRequest>& requests) {
  StreamRun run;
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  std::unique_ptr<grpc::ClientReaderWriter<v1::BatchRequest, v1::BatchResponse>>
      stream = stub->BatchStream(&context);
  for (const v1::BatchRequest& request : requests) {
    if (!stream->Write(request)) break;
  }
  stream->WritesDone();
  v1::BatchResponse answer;
  while (stream->Read(&answer)) run.answers.push_back(answer);
  run.status = stream->Finish();
  return run;
}

TEST_F(BatchRpcTest, AStreamAnswersEachBatchInOrder) {
  StartServer(BatchLimits());
  std::vector<v1::BatchRequest> requests(20);
  for (int i = 0; i < 20; ++i) {
    for (int k = 0; k <= i; ++k) {
      AddAllocate(&requests[i], 0, std::string(k + 1, 'a' + i % 26));
    }
  }
  StreamRun run = RunStream(stub_.get(), requests);
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.answers.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    ASSERT_EQ(run.answers[i].results_size(), i + 1);
    EXPECT_EQ(run.answers[i].results(i).allocate().block_size(),
              static_cast<uint64_t>(i + 1));
  }
  // The blocks are there: read the last one back through the stream.
  v1::BatchRequest read;
  AddRead(&read, run.answers[19].results(19).allocate().handle());
  StreamRun second = RunStream(stub_.get(), {read});
  ASSERT_TRUE(second.status.ok());
  ASSERT_EQ(second.answers.size(), 1u);
  EXPECT_EQ(second.answers[0].results(0).read().data(), std::string(20, 't'));
}

TEST_F(BatchRpcTest, BlocksCopiedInPiecesKeepTheirBytes) {
  // 1.5 MiB: the worker copies each operation's bytes in pieces of
  // Worker::kCopyPieceBytes, one piece per turn (a slice of 1 ns), and a
  // gRPC thread serializes the answer. This checks that the bytes survive
  // that path end to end; that the pieces let other commands run between
  // them is WorkerLongCopyTest's.
  constexpr uint64_t kSize = 3 << 19;
  StartServer(BatchLimits(), 0, {.defrag_slice = absl::Nanoseconds(1)},
              /*max_block=*/kSize);
  std::string first(kSize, '\0');
  std::string second(kSize, '\0');
  for (uint64_t i = 0; i < kSize; ++i) {
    first[i] = static_cast<char>(i % 251);
    second[i] = static_cast<char>(i % 241 + 7);
  }
  v1::BatchRequest allocate;
  AddAllocate(&allocate, kSize, first);
  v1::BatchResponse allocated;
  ASSERT_TRUE(Batch(allocate, &allocated).ok());
  ASSERT_EQ(allocated.results(0).code(), kOk);
  const uint64_t handle = allocated.results(0).allocate().handle();
  v1::BatchRequest request;
  AddRead(&request, handle);
  AddWrite(&request, handle, 0, second);
  AddRead(&request, handle);
  v1::BatchResponse answer;
  ASSERT_TRUE(Batch(request, &answer).ok());
  EXPECT_THAT(Codes(answer), ::testing::ElementsAre(kOk, kOk, kOk));
  EXPECT_TRUE(answer.results(0).read().data() == first);
  EXPECT_TRUE(answer.results(2).read().data() == second);
  // The same through a stream.
  v1::BatchRequest read;
  AddRead(&read, handle);
  StreamRun run = RunStream(stub_.get(), {read, read});
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.answers.size(), 2u);
  EXPECT_TRUE(run.answers[1].results(0).read().data() == second);
}

TEST_F(BatchRpcTest, AStreamReadsNoFurtherThanItsCredit) {
  // A channel of three and a held worker: a stream that read every request
  // at once would find the channel full from the fourth batch on. With a
  // credit of two, it never has more than two batches out, and all ten are
  // answered once the worker runs.
  StartServer(BatchLimits{.stream_credit = 2}, 0,
              {.channel_capacity = 3, .start_paused = true});
  std::vector<v1::BatchRequest> requests(10);
  for (v1::BatchRequest& request : requests) AddAllocate(&request, 0, "x");
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  auto stream = stub_->BatchStream(&context);
  std::thread writer([&] {
    for (const v1::BatchRequest& request : requests) {
      if (!stream->Write(request)) break;
    }
    stream->WritesDone();
  });
  const absl::Time give_up = absl::Now() + absl::Seconds(30);
  while (worker_->queue_depth() < 2 && absl::Now() < give_up) {
    absl::SleepFor(absl::Milliseconds(1));  // polls a condition
  }
  EXPECT_EQ(worker_->queue_depth(), 2u);
  worker_->Resume();
  std::vector<int> codes;
  v1::BatchResponse answer;
  while (stream->Read(&answer)) {
    for (const v1::BatchResult& result : answer.results()) {
      codes.push_back(result.code());
    }
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(codes, std::vector<int>(10, kOk));
}

TEST_F(BatchRpcTest, AStreamEndsAtABadRequestAfterAnsweringTheOnesBefore) {
  StartServer(BatchLimits{.max_operations = 2});
  std::vector<v1::BatchRequest> requests(3);
  AddAllocate(&requests[0], 0, "ok");
  for (int i = 0; i < 3; ++i) AddAllocate(&requests[1], 0, "too many");
  AddAllocate(&requests[2], 0, "never read");
  StreamRun run = RunStream(stub_.get(), requests);
  EXPECT_EQ(run.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(run.status.error_message(), HasSubstr("at most 2 operations"));
  ASSERT_EQ(run.answers.size(), 1u);
  EXPECT_EQ(run.answers[0].results(0).code(), kOk);
}

TEST_F(BatchRpcTest, DrainingEndsOpenStreamsAndRefusesNewOnes) {
  StartServer(BatchLimits());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  auto stream = stub_->BatchStream(&context);
  v1::BatchRequest request;
  AddAllocate(&request, 0, "x");
  ASSERT_TRUE(stream->Write(request));
  v1::BatchResponse answer;
  ASSERT_TRUE(stream->Read(&answer));
  EXPECT_EQ(answer.results(0).code(), kOk);
  // The stream now waits for the client's next request: draining ends it
  // at once, not at its deadline. (The server cancels the read and finishes
  // the stream UNAVAILABLE; which of the two reaches the client first is
  // the transport's race.)
  const absl::Time drained = absl::Now();
  service_->StartDraining();
  EXPECT_FALSE(stream->Read(&answer));
  const grpc::Status ended = stream->Finish();
  EXPECT_LT(absl::Now() - drained, absl::Seconds(10));
  EXPECT_THAT(ended.error_code(),
              ::testing::AnyOf(grpc::StatusCode::CANCELLED,
                               grpc::StatusCode::UNAVAILABLE))
      << ended.error_message();
  StreamRun late = RunStream(stub_.get(), {request});
  EXPECT_EQ(late.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(late.answers.empty());
}

}  // namespace
}  // namespace poold
