// PoolTestClient: blocking calls and windowed bulk runs over the async stub.
#include "tests/e2e/pool_test_client.h"

#include <cstring>
#include <functional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"

namespace poold::testing {
namespace {

// Deadline of each call of a bulk run.
constexpr absl::Duration kBulkCallTimeout = absl::Seconds(120);

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
}

absl::Status ToAbsl(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

// Runs `count` calls with at most `window` in flight. For call i,
// `prepare(i, &request)` fills the request, `issue(context, request,
// response, done)` starts it on the async stub, and `check(i, status,
// response)` judges the answer on a gRPC thread. Stops issuing after the
// first failure and returns it, once every call in flight has finished.
template <typename Request, typename Response, typename Prepare, typename Issue,
          typename Check>
absl::Status RunWindowed(size_t count, int window, Prepare prepare, Issue issue,
                         Check check) {
  struct State {
    absl::Mutex mu;
    int in_flight ABSL_GUARDED_BY(mu) = 0;
    int window = 1;
    absl::Status first_error ABSL_GUARDED_BY(mu);
  } state;
  state.window = window < 1 ? 1 : window;
  struct Call {
    grpc::ClientContext context;
    Request request;
    Response response;
  };
  for (size_t i = 0; i < count; ++i) {
    {
      absl::MutexLock lock(&state.mu);
      state.mu.Await(absl::Condition(
          +[](State* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) {
            return s->in_flight < s->window;
          },
          &state));
      if (!state.first_error.ok()) break;
      ++state.in_flight;
    }
    auto* call = new Call();
    SetDeadline(&call->context, kBulkCallTimeout);
    prepare(i, &call->request);
    issue(&call->context, &call->request, &call->response,
          [&state, &check, call, i](grpc::Status status) {
            absl::Status verdict = check(i, status, call->response);
            delete call;
            absl::MutexLock lock(&state.mu);
            if (!verdict.ok() && state.first_error.ok()) {
              state.first_error = std::move(verdict);
            }
            --state.in_flight;
          });
  }
  absl::MutexLock lock(&state.mu);
  state.mu.Await(absl::Condition(
      +[](State* s)
           ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) { return s->in_flight == 0; },
      &state));
  return state.first_error;
}

}  // namespace

std::string BlockContents(uint64_t seed, uint64_t size) {
  std::string data(size, '\0');
  uint64_t state = seed;
  size_t at = 0;
  for (; at + 8 <= size; at += 8) {
    const uint64_t word = SplitMix64(state);
    std::memcpy(&data[at], &word, 8);
  }
  if (at < size) {
    const uint64_t word = SplitMix64(state);
    std::memcpy(&data[at], &word, size - at);
  }
  return data;
}

std::string FormatBytes(uint64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

grpc::Status PoolTestClient::Allocate(uint64_t size, const std::string& data,
                                      v1::AllocateResponse* response,
                                      absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  v1::AllocateRequest request;
  request.set_size(size);
  request.set_data(data);
  return stub_->Allocate(&context, request, response);
}

grpc::Status PoolTestClient::Write(uint64_t handle, uint64_t offset,
                                   const std::string& data,
                                   absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  v1::WriteRequest request;
  request.set_handle(handle);
  request.set_offset(offset);
  request.set_data(data);
  v1::WriteResponse response;
  return stub_->Write(&context, request, &response);
}

grpc::Status PoolTestClient::Read(uint64_t handle, uint64_t offset,
                                  uint64_t length, std::string* data,
                                  absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  v1::ReadRequest request;
  request.set_handle(handle);
  request.set_offset(offset);
  request.set_length(length);
  v1::ReadResponse response;
  grpc::Status status = stub_->Read(&context, request, &response);
  if (status.ok() && data != nullptr)
    *data = std::move(*response.mutable_data());
  return status;
}

grpc::Status PoolTestClient::Free(uint64_t handle, absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  v1::FreeRequest request;
  request.set_handle(handle);
  v1::FreeResponse response;
  return stub_->Free(&context, request, &response);
}

grpc::Status PoolTestClient::GetStats(bool include_classes,
                                      v1::GetStatsResponse* response,
                                      absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  v1::GetStatsRequest request;
  request.set_include_classes(include_classes);
  request.set_consistent(true);
  return stub_->GetStats(&context, request, response);
}

grpc::Status PoolTestClient::Analyze(const std::vector<v1::Pool>& pools,
                                     v1::FragmentationReport* response,
                                     absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  v1::AnalyzeFragmentationRequest request;
  for (v1::Pool pool : pools) request.add_pools(pool);
  return stub_->AnalyzeFragmentation(&context, request, response);
}

grpc::Status PoolTestClient::Defragment(const std::vector<v1::Pool>& pools,
                                        v1::DefragReport* response,
                                        absl::Duration timeout) {
  grpc::ClientContext context;
  SetDeadline(&context, timeout);
  v1::TriggerDefragmentationRequest request;
  for (v1::Pool pool : pools) request.add_pools(pool);
  return stub_->TriggerDefragmentation(&context, request, response);
}

absl::Status PoolTestClient::AllocateAll(std::vector<TestBlock>& blocks,
                                         int window) {
  return RunWindowed<v1::AllocateRequest, v1::AllocateResponse>(
      blocks.size(), window,
      [&blocks](size_t i, v1::AllocateRequest* request) {
        request->set_size(blocks[i].size);
        request->set_data(BlockContents(blocks[i].seed, blocks[i].size));
      },
      [this](grpc::ClientContext* context, const v1::AllocateRequest* request,
             v1::AllocateResponse* response,
             std::function<void(grpc::Status)> done) {
        stub_->async()->Allocate(context, request, response, std::move(done));
      },
      [&blocks](size_t i, const grpc::Status& status,
                const v1::AllocateResponse& response) -> absl::Status {
        if (!status.ok()) {
          return absl::Status(
              ToAbsl(status).code(),
              absl::StrCat("Allocate of block ", i, " (", blocks[i].size,
                           " bytes): ", status.error_message()));
        }
        blocks[i].handle = response.handle();
        blocks[i].pool = response.pool();
        return absl::OkStatus();
      });
}

absl::Status PoolTestClient::FreeAll(const std::vector<uint64_t>& handles,
                                     int window) {
  return RunWindowed<v1::FreeRequest, v1::FreeResponse>(
      handles.size(), window,
      [&handles](size_t i, v1::FreeRequest* request) {
        request->set_handle(handles[i]);
      },
      [this](grpc::ClientContext* context, const v1::FreeRequest* request,
             v1::FreeResponse* response,
             std::function<void(grpc::Status)> done) {
        stub_->async()->Free(context, request, response, std::move(done));
      },
      [&handles](size_t i, const grpc::Status& status,
                 const v1::FreeResponse&) -> absl::Status {
        if (status.ok()) return absl::OkStatus();
        return absl::Status(ToAbsl(status).code(),
                            absl::StrCat("Free of handle ", handles[i], ": ",
                                         status.error_message()));
      });
}

absl::Status PoolTestClient::VerifyAll(const std::vector<TestBlock>& blocks,
                                       int window) {
  absl::Mutex mu;
  std::vector<uint64_t> differ;  // the first few handles
  size_t differ_count = 0;
  absl::Status rpc_status = RunWindowed<v1::ReadRequest, v1::ReadResponse>(
      blocks.size(), window,
      [&blocks](size_t i, v1::ReadRequest* request) {
        request->set_handle(blocks[i].handle);
      },
      [this](grpc::ClientContext* context, const v1::ReadRequest* request,
             v1::ReadResponse* response,
             std::function<void(grpc::Status)> done) {
        stub_->async()->Read(context, request, response, std::move(done));
      },
      [&](size_t i, const grpc::Status& status,
          const v1::ReadResponse& response) -> absl::Status {
        if (!status.ok()) {
          return absl::Status(ToAbsl(status).code(),
                              absl::StrCat("Read of handle ", blocks[i].handle,
                                           ": ", status.error_message()));
        }
        if (response.data() != BlockContents(blocks[i].seed, blocks[i].size)) {
          absl::MutexLock lock(&mu);
          if (differ.size() < 10) differ.push_back(blocks[i].handle);
          ++differ_count;
        }
        return absl::OkStatus();
      });
  if (!rpc_status.ok()) return rpc_status;
  if (differ_count > 0) {
    return absl::DataLossError(absl::StrCat(
        differ_count, " of ", blocks.size(),
        " blocks read back different from what was written, e.g. handles ",
        absl::StrJoin(differ, ", ")));
  }
  return absl::OkStatus();
}

}  // namespace poold::testing
