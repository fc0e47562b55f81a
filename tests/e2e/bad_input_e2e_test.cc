// End-to-end test of bad input against the real poold, through the C++
// generated stub: a table of requests that must fail, each with the code the
// README and pool_service.proto document. After every case the server still
// serves and the blocks it held before (in all three pools) are unchanged.
// Cases that need other flags (memory limit, held worker) run against a
// poold of their own.
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "tests/e2e/pool_test_client.h"
#include "tests/e2e/poold_process.h"

namespace poold::testing {
namespace {

using ::grpc::StatusCode;
using ::testing::HasSubstr;

constexpr uint64_t kMaxBlockBytes = uint64_t{1} << 20;
constexpr uint64_t kMaxMessageBytes = kMaxBlockBytes + 4096;
constexpr uint64_t kMemoryLimitBytes = uint64_t{16} << 20;
constexpr uint64_t kMaxU64 = ~uint64_t{0};

// The poold flags a case needs.
enum class Config {
  // Small limits: --max_block_bytes=1 MiB, --max_message_bytes=1 MiB + 4 KiB.
  kLimits,
  // --memory_limit_bytes=16 MiB.
  kMemoryLimit,
  // --testing_hold_worker --channel_capacity=1: the channel fills up.
  kHeldWorker,
};

std::vector<std::string> FlagsOf(Config config) {
  switch (config) {
    case Config::kLimits:
      // (The forged-handle cases name thousands of unknown handles at once:
      // without a limit they all get NOT_FOUND. tls_e2e_test tests the
      // limit.)
      return {absl::StrCat("--max_block_bytes=", kMaxBlockBytes),
              absl::StrCat("--max_message_bytes=", kMaxMessageBytes),
              "--max_unknown_handles_per_second=0"};
    case Config::kMemoryLimit:
      return {absl::StrCat("--memory_limit_bytes=", kMemoryLimitBytes)};
    case Config::kHeldWorker:
      return {"--testing_hold_worker", "--channel_capacity=1"};
  }
  return {};
}

// What the cases work on: a poold and the blocks it held before.
struct Env {
  PooldProcess* poold = nullptr;
  PoolTestClient* client = nullptr;
  // Blocks that every case must leave unchanged: one or more per pool.
  std::vector<TestBlock> blocks;
  // A handle freed during setup.
  uint64_t freed_handle = 0;
  // An RPC parked in the held worker's channel; it completes at shutdown.
  struct Parked {
    grpc::ClientContext context;
    v1::AllocateRequest request;
    v1::AllocateResponse response;
    grpc::Status status;
    absl::Notification done;
  };
  std::unique_ptr<Parked> parked;

  const TestBlock& small() const { return blocks[0]; }
  const TestBlock& medium() const { return blocks[1]; }
  const TestBlock& large() const { return blocks[2]; }
};

struct BadInputCase {
  std::string name;
  Config config;
  StatusCode code;
  // A part of the error message ("" = not checked).
  std::string message;
  std::function<grpc::Status(Env&)> call;
};

grpc::Status Allocate(Env& env, uint64_t size, const std::string& data) {
  v1::AllocateResponse response;
  return env.client->Allocate(size, data, &response);
}

grpc::Status Read(Env& env, uint64_t handle, uint64_t offset, uint64_t length) {
  return env.client->Read(handle, offset, length, nullptr);
}

// Analyze or defragment with a raw list of pool values.
grpc::Status Analyze(Env& env, const std::vector<int>& pools) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  v1::AnalyzeFragmentationRequest request;
  for (int pool : pools) request.add_pools(static_cast<v1::Pool>(pool));
  v1::FragmentationReport response;
  grpc::Status status =
      env.client->stub()->AnalyzeFragmentation(&context, request, &response);
  if (status.ok() && pools.empty() && response.pools_size() != 3) {
    return grpc::Status(StatusCode::INTERNAL,
                        "an empty pool list did not analyse all 3 pools");
  }
  return status;
}

grpc::Status Defragment(Env& env, const std::vector<int>& pools) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  v1::TriggerDefragmentationRequest request;
  for (int pool : pools) request.add_pools(static_cast<v1::Pool>(pool));
  v1::DefragReport response;
  grpc::Status status =
      env.client->stub()->TriggerDefragmentation(&context, request, &response);
  if (status.ok() && pools.empty() && response.pools_size() != 3) {
    return grpc::Status(StatusCode::INTERNAL,
                        "an empty pool list did not defragment all 3 pools");
  }
  return status;
}

// Runs `call` on every handle of `handles` and returns the first answer
// that is not NOT_FOUND (as an INTERNAL error naming the handle, so the
// case fails), or NOT_FOUND when all were.
grpc::Status AllNotFound(
    const std::vector<uint64_t>& handles,
    const std::function<grpc::Status(uint64_t handle)>& call) {
  grpc::Status last(StatusCode::NOT_FOUND, "no handles");
  for (uint64_t handle : handles) {
    grpc::Status status = call(handle);
    if (status.error_code() != StatusCode::NOT_FOUND) {
      return grpc::Status(
          StatusCode::INTERNAL,
          absl::StrCat("handle ", handle, " answered ", status.error_code(),
                       " (", status.error_message(), "), not NOT_FOUND"));
    }
    last = status;
  }
  return last;
}

// Every live handle of `env` with one of its 64 bits flipped.
std::vector<uint64_t> BitFlippedHandles(const Env& env) {
  std::vector<uint64_t> handles;
  for (const TestBlock& block : env.blocks) {
    for (int bit = 0; bit < 64; ++bit) {
      handles.push_back(block.handle ^ (uint64_t{1} << bit));
    }
  }
  return handles;
}

std::vector<uint64_t> RandomHandles(int count) {
  std::mt19937_64 rng(4242);
  std::vector<uint64_t> handles;
  for (int i = 0; i < count; ++i) handles.push_back(rng());
  return handles;
}

// A call whose deadline passed before it was made. gRPC's client ends it
// before it is sent; the worker's own check (a command whose deadline passed
// while it was queued) is covered by tests/unit/worker/worker_test.cc.
grpc::Status ReadWithExpiredDeadline(Env& env) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() - absl::Seconds(1)));
  v1::ReadRequest request;
  request.set_handle(env.small().handle);
  v1::ReadResponse response;
  return env.client->stub()->Read(&context, request, &response);
}

grpc::Status DefragmentWithExpiredDeadline(Env& env) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() - absl::Seconds(1)));
  v1::TriggerDefragmentationRequest request;
  v1::DefragReport response;
  return env.client->stub()->TriggerDefragmentation(&context, request,
                                                    &response);
}

// Raw bytes that are no AllocateRequest: field 1 (size) as a varint cut
// short. poold parses requests itself (gRPC 1.51's typed callback handlers
// would answer UNIMPLEMENTED with no message), so it answers
// INVALID_ARGUMENT and names the message it expected.
grpc::Status AllocateUnparsableBytes(Env& env) {
  grpc::GenericStub stub(env.poold->NewChannel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
  const std::string bytes("\x08\xff\xff", 3);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  absl::Notification done;
  stub.UnaryCall(&context, "/poold.v1.PoolService/Allocate",
                 grpc::StubOptions(), &request, &response, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  return status;
}

// Fills the pools with 256 KiB blocks until the memory limit refuses one,
// checks that what was filled is intact and that freeing makes room, frees
// the filling and returns the refusal.
grpc::Status FillToTheMemoryLimit(Env& env) {
  constexpr uint64_t kBlock = uint64_t{256} << 10;
  std::vector<TestBlock> filled;
  for (int i = 0; i < 1000; ++i) {
    TestBlock block{.seed = 900000 + static_cast<uint64_t>(i), .size = kBlock};
    v1::AllocateResponse response;
    grpc::Status status = env.client->Allocate(
        block.size, BlockContents(block.seed, block.size), &response);
    if (!status.ok()) {
      // The limit holds: the pools never held more.
      v1::GetStatsResponse stats;
      if (!env.client->GetStats(false, &stats).ok() ||
          stats.total().resident_bytes() > kMemoryLimitBytes) {
        return grpc::Status(StatusCode::INTERNAL,
                            "resident bytes above the memory limit");
      }
      if (filled.size() * kBlock < kMemoryLimitBytes / 2) {
        return grpc::Status(StatusCode::INTERNAL,
                            absl::StrCat("refused after only ", filled.size(),
                                         " blocks: ", status.error_message()));
      }
      if (absl::Status intact = env.client->VerifyAll(filled, 8);
          !intact.ok()) {
        return grpc::Status(StatusCode::INTERNAL, intact.ToString());
      }
      // Room again once a block is freed.
      if (!env.client->Free(filled.back().handle).ok() ||
          !env.client->Allocate(kBlock, "", &response).ok()) {
        return grpc::Status(StatusCode::INTERNAL,
                            "no room after freeing a block");
      }
      filled.back().handle = response.handle();
      std::vector<uint64_t> handles;
      for (const TestBlock& b : filled) handles.push_back(b.handle);
      if (absl::Status freed = env.client->FreeAll(handles, 8); !freed.ok()) {
        return grpc::Status(StatusCode::INTERNAL, freed.ToString());
      }
      return status;
    }
    block.handle = response.handle();
    filled.push_back(block);
  }
  return grpc::Status(StatusCode::INTERNAL, "the memory limit never hit");
}

// At the memory limit with a fragmented small pool, an allocation that
// needs new memory first compacts the pools, and succeeds.
grpc::Status AllocateAtTheLimitCompactsFirst(Env& env) {
  auto internal = [](absl::string_view what) {
    return grpc::Status(StatusCode::INTERNAL, std::string(what));
  };
  // Small blocks up to the limit, a thousand calls at a time.
  std::vector<TestBlock> small;
  for (uint64_t batch = 0;; ++batch) {
    if (batch > 100) return internal("the memory limit never hit");
    std::vector<TestBlock> blocks;
    for (uint64_t i = 0; i < 1000; ++i) {
      blocks.push_back({.seed = 700000 + batch * 1000 + i, .size = 1000});
    }
    absl::Status status = env.client->AllocateAll(blocks, 16);
    for (const TestBlock& block : blocks) {
      if (block.handle != 0) small.push_back(block);
    }
    if (absl::IsResourceExhausted(status)) break;
    if (!status.ok()) return internal(status.ToString());
  }
  // Free every other one: spans stay partly used, nothing is returned.
  std::vector<uint64_t> freed;
  std::vector<TestBlock> kept;
  for (size_t i = 0; i < small.size(); ++i) {
    if (i % 2 == 0) {
      freed.push_back(small[i].handle);
    } else {
      kept.push_back(small[i]);
    }
  }
  if (absl::Status s = env.client->FreeAll(freed, 16); !s.ok()) {
    return internal(s.ToString());
  }
  // A large block needs new memory: poold compacts the small pool first.
  v1::AllocateResponse response;
  grpc::Status status =
      env.client->Allocate(uint64_t{512} << 10, "", &response);
  if (status.ok()) {
    if (absl::Status intact = env.client->VerifyAll(kept, 16); !intact.ok()) {
      return internal(intact.ToString());
    }
    if (!absl::StrContains(env.poold->Log(),
                           "origin=memory limit reclaimed=")) {
      return internal("poold did not say it compacted");
    }
  }
  return status;
}

// With the worker held and a channel of one command, one parked call fills
// the channel; every further call, whatever its RPC, is refused at once.
grpc::Status CallIntoAFullChannel(Env& env) {
  env.parked = std::make_unique<Env::Parked>();
  Env::Parked* parked = env.parked.get();
  parked->context.set_deadline(
      absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  parked->request.set_size(10);
  env.client->stub()->async()->Allocate(&parked->context, &parked->request,
                                        &parked->response,
                                        [parked](grpc::Status status) {
                                          parked->status = std::move(status);
                                          parked->done.Notify();
                                        });
  // A refused call is answered at once; a queued one waits for the worker.
  if (parked->done.WaitForNotificationWithTimeout(absl::Milliseconds(500))) {
    return grpc::Status(StatusCode::INTERNAL,
                        absl::StrCat("the first call was not queued: ",
                                     parked->status.error_message()));
  }
  const std::vector<std::function<grpc::Status()>> calls = {
      [&] { return Read(env, 12345, 0, 0); },
      [&] { return Allocate(env, 100, "data"); },
      [&] { return env.client->Free(12345); },
      [&] {
        v1::GetStatsResponse stats;
        return env.client->GetStats(false, &stats);
      },
      [&] { return Defragment(env, {}); },
  };
  grpc::Status status;
  for (const auto& call : calls) {
    status = call();
    if (status.error_code() != StatusCode::RESOURCE_EXHAUSTED) return status;
  }
  return status;
}

const std::vector<BadInputCase>& Cases() {
  static const auto* const cases = new std::vector<BadInputCase>{
      // Allocate.
      {"allocate size 0 without data", Config::kLimits,
       StatusCode::INVALID_ARGUMENT, "size is 0 and there is no data",
       [](Env& env) { return Allocate(env, 0, ""); }},
      {"allocate size over --max_block_bytes", Config::kLimits,
       StatusCode::INVALID_ARGUMENT, "--max_block_bytes",
       [](Env& env) { return Allocate(env, kMaxBlockBytes + 1, ""); }},
      {"allocate size 2^64-1", Config::kLimits, StatusCode::INVALID_ARGUMENT,
       "--max_block_bytes",
       [](Env& env) { return Allocate(env, kMaxU64, ""); }},
      {"allocate size 0 with data over --max_block_bytes", Config::kLimits,
       StatusCode::INVALID_ARGUMENT, "--max_block_bytes",
       [](Env& env) {
         return Allocate(env, 0, std::string(kMaxBlockBytes + 1, 'x'));
       }},
      {"allocate data longer than size", Config::kLimits,
       StatusCode::INVALID_ARGUMENT, "longer than size",
       [](Env& env) { return Allocate(env, 3, "four"); }},
      {"allocate unparsable request bytes", Config::kLimits,
       StatusCode::INVALID_ARGUMENT, "not a valid poold.v1.AllocateRequest",
       AllocateUnparsableBytes},
      {"allocate message over --max_message_bytes", Config::kLimits,
       StatusCode::RESOURCE_EXHAUSTED, "larger than max",
       [](Env& env) {
         return Allocate(env, 0, std::string(kMaxMessageBytes + 1, 'x'));
       }},
      // Handles.
      {"read handle 0", Config::kLimits, StatusCode::NOT_FOUND,
       "handle 0 never names a block",
       [](Env& env) { return Read(env, 0, 0, 0); }},
      {"write handle 0", Config::kLimits, StatusCode::NOT_FOUND,
       "handle 0 never names a block",
       [](Env& env) { return env.client->Write(0, 0, "x"); }},
      {"free handle 0", Config::kLimits, StatusCode::NOT_FOUND,
       "handle 0 never names a block",
       [](Env& env) { return env.client->Free(0); }},
      {"read unknown handles", Config::kLimits, StatusCode::NOT_FOUND,
       "no block with handle",
       [](Env& env) {
         return AllNotFound({1, 2, 12345, uint64_t{1} << 40, kMaxU64},
                            [&](uint64_t h) { return Read(env, h, 0, 0); });
       }},
      {"read freed handle", Config::kLimits, StatusCode::NOT_FOUND,
       "no block with handle",
       [](Env& env) { return Read(env, env.freed_handle, 0, 0); }},
      {"write freed handle", Config::kLimits, StatusCode::NOT_FOUND,
       "no block with handle",
       [](Env& env) { return env.client->Write(env.freed_handle, 0, "x"); }},
      {"free freed handle (double free)", Config::kLimits,
       StatusCode::NOT_FOUND, "no block with handle",
       [](Env& env) { return env.client->Free(env.freed_handle); }},
      {"read forged handles: 1000 random ones", Config::kLimits,
       StatusCode::NOT_FOUND, "no block with handle",
       [](Env& env) {
         return AllNotFound(RandomHandles(1000),
                            [&](uint64_t h) { return Read(env, h, 0, 0); });
       }},
      {"read forged handles: live ones with a bit flipped", Config::kLimits,
       StatusCode::NOT_FOUND, "no block with handle",
       [](Env& env) {
         return AllNotFound(BitFlippedHandles(env),
                            [&](uint64_t h) { return Read(env, h, 0, 0); });
       }},
      {"write forged handles: live ones with a bit flipped", Config::kLimits,
       StatusCode::NOT_FOUND, "no block with handle",
       [](Env& env) {
         return AllNotFound(BitFlippedHandles(env), [&](uint64_t h) {
           return env.client->Write(h, 0, "forged");
         });
       }},
      {"free forged handles: live ones with a bit flipped", Config::kLimits,
       StatusCode::NOT_FOUND, "no block with handle",
       [](Env& env) {
         return AllNotFound(BitFlippedHandles(env),
                            [&](uint64_t h) { return env.client->Free(h); });
       }},
      // Offsets and lengths.
      {"read offset past the end", Config::kLimits, StatusCode::OUT_OF_RANGE,
       "past the end",
       [](Env& env) {
         return Read(env, env.medium().handle, env.medium().size + 1, 0);
       }},
      {"read length past the end", Config::kLimits, StatusCode::OUT_OF_RANGE,
       "passes the end",
       [](Env& env) {
         return Read(env, env.small().handle, 1, env.small().size);
       }},
      {"read offset 2^64-1 length 2 (overflow)", Config::kLimits,
       StatusCode::OUT_OF_RANGE, "",
       [](Env& env) { return Read(env, env.large().handle, kMaxU64, 2); }},
      {"read offset 1 length 2^64-1 (overflow)", Config::kLimits,
       StatusCode::OUT_OF_RANGE, "",
       [](Env& env) { return Read(env, env.large().handle, 1, kMaxU64); }},
      {"write past the end", Config::kLimits, StatusCode::OUT_OF_RANGE,
       "passes the end",
       [](Env& env) {
         return env.client->Write(env.small().handle, env.small().size - 2,
                                  "four");
       }},
      {"write at an offset past the end", Config::kLimits,
       StatusCode::OUT_OF_RANGE, "passes the end",
       [](Env& env) {
         return env.client->Write(env.large().handle, env.large().size + 1,
                                  "x");
       }},
      {"write offset 2^64-1 with 2 bytes (overflow)", Config::kLimits,
       StatusCode::OUT_OF_RANGE, "passes the end",
       [](Env& env) {
         return env.client->Write(env.medium().handle, kMaxU64, "xy");
       }},
      {"write message over --max_message_bytes", Config::kLimits,
       StatusCode::RESOURCE_EXHAUSTED, "larger than max",
       [](Env& env) {
         return env.client->Write(env.large().handle, 0,
                                  std::string(kMaxMessageBytes + 1, 'x'));
       }},
      // Pool lists.
      {"analyze empty pool list (= all pools)", Config::kLimits, StatusCode::OK,
       "", [](Env& env) { return Analyze(env, {}); }},
      {"defragment empty pool list (= all pools)", Config::kLimits,
       StatusCode::OK, "", [](Env& env) { return Defragment(env, {}); }},
      {"analyze unknown pool 17", Config::kLimits, StatusCode::INVALID_ARGUMENT,
       "unknown pool value 17", [](Env& env) { return Analyze(env, {17}); }},
      {"defragment unknown pool 17", Config::kLimits,
       StatusCode::INVALID_ARGUMENT, "unknown pool value 17",
       [](Env& env) {
         return Defragment(env, {v1::POOL_SMALL, 17});
       }},
      {"analyze POOL_UNSPECIFIED", Config::kLimits,
       StatusCode::INVALID_ARGUMENT, "POOL_UNSPECIFIED",
       [](Env& env) { return Analyze(env, {v1::POOL_UNSPECIFIED}); }},
      {"defragment POOL_UNSPECIFIED", Config::kLimits,
       StatusCode::INVALID_ARGUMENT, "POOL_UNSPECIFIED",
       [](Env& env) { return Defragment(env, {v1::POOL_UNSPECIFIED}); }},
      {"defragment negative pool -1", Config::kLimits,
       StatusCode::INVALID_ARGUMENT, "unknown pool value -1",
       [](Env& env) { return Defragment(env, {-1}); }},
      // Deadlines.
      {"read with a deadline already passed", Config::kLimits,
       StatusCode::DEADLINE_EXCEEDED, "", ReadWithExpiredDeadline},
      {"defragment with a deadline already passed", Config::kLimits,
       StatusCode::DEADLINE_EXCEEDED, "", DefragmentWithExpiredDeadline},
      // Memory limit.
      {"allocate past --memory_limit_bytes", Config::kMemoryLimit,
       StatusCode::RESOURCE_EXHAUSTED, "memory limit", FillToTheMemoryLimit},
      {"allocate at the limit with a fragmented pool (compacts first)",
       Config::kMemoryLimit, StatusCode::OK, "",
       AllocateAtTheLimitCompactsFirst},
      // Channel.
      {"any call into a full channel", Config::kHeldWorker,
       StatusCode::RESOURCE_EXHAUSTED, "queue is full", CallIntoAFullChannel},
  };
  return *cases;
}

class BadInputE2eTest : public ::testing::Test {
 protected:
  void Start(Config config) {
    PooldProcess::Options options;
    options.extra_flags = FlagsOf(config);
    absl::StatusOr<std::unique_ptr<PooldProcess>> poold =
        PooldProcess::Start(options);
    ASSERT_TRUE(poold.ok()) << poold.status();
    poold_ = *std::move(poold);
    client_ = std::make_unique<PoolTestClient>(poold_->NewChannel());
    env_.poold = poold_.get();
    env_.client = client_.get();
    if (config == Config::kHeldWorker) return;  // the worker serves nothing

    // One block per pool (small, medium, large), then a few more, all with
    // known contents; and one freed handle.
    env_.blocks = {{.seed = 1, .size = 200},
                   {.seed = 2, .size = 20000},
                   {.seed = 3, .size = 300000},
                   {.seed = 4, .size = 1},
                   {.seed = 5, .size = 1023},
                   {.seed = 6, .size = 65535},
                   {.seed = 7,
                    .size = config == Config::kLimits ? kMaxBlockBytes
                                                      : uint64_t{1} << 20}};
    POOLD_ASSERT_OK(client_->AllocateAll(env_.blocks, 4));
    ASSERT_EQ(env_.small().pool, v1::POOL_SMALL);
    ASSERT_EQ(env_.medium().pool, v1::POOL_MEDIUM);
    ASSERT_EQ(env_.large().pool, v1::POOL_LARGE);
    v1::AllocateResponse freed;
    ASSERT_TRUE(client_->Allocate(300, "", &freed).ok());
    ASSERT_TRUE(client_->Free(freed.handle()).ok());
    env_.freed_handle = freed.handle();
  }

  // The server still serves, and every block it held is unchanged.
  void ExpectUnharmed(Config config) {
    EXPECT_EQ(PooldProcess::CheckHealth(poold_->target())
                  .value_or(grpc::health::v1::HealthCheckResponse::UNKNOWN),
              grpc::health::v1::HealthCheckResponse::SERVING);
    if (config == Config::kHeldWorker) return;
    POOLD_ASSERT_OK(client_->VerifyAll(env_.blocks, 4));
  }

  void RunCases(Config config) {
    ASSERT_NO_FATAL_FAILURE(Start(config));
    int ran = 0;
    for (const BadInputCase& c : Cases()) {
      if (c.config != config) continue;
      SCOPED_TRACE(c.name);
      grpc::Status status = c.call(env_);
      EXPECT_EQ(status.error_code(), c.code) << status.error_message();
      if (!c.message.empty()) {
        EXPECT_THAT(status.error_message(), HasSubstr(c.message));
      }
      ASSERT_NO_FATAL_FAILURE(ExpectUnharmed(config));
      ++ran;
    }
    EXPECT_GT(ran, 0);
  }

  void TearDown() override {
    client_.reset();
    if (poold_ == nullptr) return;
    absl::StatusOr<int> code = poold_->Stop();
    ASSERT_TRUE(code.ok()) << code.status();
    EXPECT_EQ(*code, 0) << poold_->Log();
    if (env_.parked != nullptr) {
      // The parked call was queued, so the drain completed it.
      ASSERT_TRUE(
          env_.parked->done.WaitForNotificationWithTimeout(absl::Seconds(60)));
      EXPECT_TRUE(env_.parked->status.ok())
          << env_.parked->status.error_message();
    }
  }

  std::unique_ptr<PooldProcess> poold_;
  std::unique_ptr<PoolTestClient> client_;
  Env env_;
};

TEST_F(BadInputE2eTest, TheTableHasACaseForEachDocumentedFailure) {
  EXPECT_GE(Cases().size(), 15u);
}

TEST_F(BadInputE2eTest, WithSmallLimits) { RunCases(Config::kLimits); }

TEST_F(BadInputE2eTest, WithAMemoryLimit) { RunCases(Config::kMemoryLimit); }

TEST_F(BadInputE2eTest, WithAFullChannel) { RunCases(Config::kHeldWorker); }

}  // namespace
}  // namespace poold::testing
