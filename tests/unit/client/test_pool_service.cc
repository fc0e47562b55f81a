// TestPoolService and TestServer.
#include "tests/unit/client/test_pool_service.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace poold::client::testing {

std::optional<grpc::Status> TestPoolService::Enter(
    grpc::ServerContext* context) {
  absl::MutexLock lock(&mu_);
  last_deadline_ = context->deadline();
  if (!fail_with_.ok()) return fail_with_;
  return std::nullopt;
}

grpc::Status TestPoolService::Allocate(grpc::ServerContext* context,
                                       const v1::AllocateRequest* request,
                                       v1::AllocateResponse* response) {
  if (auto failed = Enter(context)) return *failed;
  const uint64_t size =
      request->size() == 0 ? request->data().size() : request->size();
  if (size == 0 || request->data().size() > size) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad size");
  }
  std::string block = request->data();
  block.resize(size, '\0');
  absl::MutexLock lock(&mu_);
  if (allocations_allowed_.has_value() &&
      allocations_ >= *allocations_allowed_) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "memory limit reached");
  }
  const uint64_t handle = next_handle_++;
  blocks_[handle] = std::move(block);
  ++allocations_;
  response->set_handle(handle);
  response->set_pool(size < 1024 ? v1::POOL_SMALL : v1::POOL_MEDIUM);
  response->set_block_size(size);
  response->set_slot_bytes((size + 15) / 16 * 16);
  return grpc::Status::OK;
}

grpc::Status TestPoolService::Write(grpc::ServerContext* context,
                                    const v1::WriteRequest* request,
                                    v1::WriteResponse* /*response*/) {
  if (auto failed = Enter(context)) return *failed;
  absl::MutexLock lock(&mu_);
  auto it = blocks_.find(request->handle());
  if (it == blocks_.end()) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("no block with handle ", request->handle()));
  }
  if (request->offset() > it->second.size() ||
      request->data().size() > it->second.size() - request->offset()) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "outside the block");
  }
  it->second.replace(request->offset(), request->data().size(),
                     request->data());
  return grpc::Status::OK;
}

grpc::Status TestPoolService::Read(grpc::ServerContext* context,
                                   const v1::ReadRequest* request,
                                   v1::ReadResponse* response) {
  if (auto failed = Enter(context)) return *failed;
  absl::MutexLock lock(&mu_);
  auto it = blocks_.find(request->handle());
  if (it == blocks_.end()) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("no block with handle ", request->handle()));
  }
  const std::string& block = it->second;
  if (request->offset() > block.size()) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "outside the block");
  }
  const uint64_t length = request->length() == 0
                              ? block.size() - request->offset()
                              : request->length();
  if (length > block.size() - request->offset()) {
    return grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "outside the block");
  }
  response->set_data(block.substr(request->offset(), length));
  return grpc::Status::OK;
}

grpc::Status TestPoolService::Free(grpc::ServerContext* context,
                                   const v1::FreeRequest* request,
                                   v1::FreeResponse* /*response*/) {
  if (auto failed = Enter(context)) return *failed;
  absl::MutexLock lock(&mu_);
  if (frees_allowed_.has_value() && frees_ >= *frees_allowed_) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "test: no more");
  }
  if (blocks_.erase(request->handle()) == 0) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("no block with handle ", request->handle()));
  }
  ++frees_;
  return grpc::Status::OK;
}

grpc::Status TestPoolService::Batch(grpc::ServerContext* context,
                                    const v1::BatchRequest* request,
                                    v1::BatchResponse* response) {
  if (auto failed = Enter(context)) return *failed;
  for (const v1::BatchOperation& operation : request->operations()) {
    v1::BatchResult* result = response->add_results();
    grpc::Status status;
    switch (operation.operation_case()) {
      case v1::BatchOperation::kAllocate: {
        bool refuse = false;
        {
          absl::MutexLock lock(&mu_);
          if (batch_allocations_allowed_.has_value()) {
            refuse = *batch_allocations_allowed_ == 0;
            if (!refuse) --*batch_allocations_allowed_;
          }
        }
        status = refuse ? grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                                       "memory limit reached")
                        : Allocate(context, &operation.allocate(),
                                   result->mutable_allocate());
        break;
      }
      case v1::BatchOperation::kWrite:
        status = Write(context, &operation.write(), result->mutable_write());
        break;
      case v1::BatchOperation::kRead:
        status = Read(context, &operation.read(), result->mutable_read());
        break;
      case v1::BatchOperation::kFree:
        status = Free(context, &operation.free(), result->mutable_free());
        break;
      case v1::BatchOperation::OPERATION_NOT_SET:
        status = grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "empty");
        break;
    }
    if (!status.ok()) {
      result->Clear();
      result->set_code(status.error_code());
      result->set_message(status.error_message());
    }
  }
  absl::MutexLock lock(&mu_);
  ++batches_;
  return grpc::Status::OK;
}

grpc::Status TestPoolService::GetStats(grpc::ServerContext* context,
                                       const v1::GetStatsRequest* request,
                                       v1::GetStatsResponse* response) {
  if (auto failed = Enter(context)) return *failed;
  absl::MutexLock lock(&mu_);
  last_stats_ = *request;
  response->mutable_total()->set_blocks(blocks_.size());
  return grpc::Status::OK;
}

grpc::Status TestPoolService::AnalyzeFragmentation(
    grpc::ServerContext* context,
    const v1::AnalyzeFragmentationRequest* request,
    v1::FragmentationReport* response) {
  if (auto failed = Enter(context)) return *failed;
  absl::MutexLock lock(&mu_);
  last_analyze_ = *request;
  for (int pool : request->pools()) {
    response->add_pools()->set_pool(static_cast<v1::Pool>(pool));
  }
  return grpc::Status::OK;
}

grpc::Status TestPoolService::TriggerDefragmentation(
    grpc::ServerContext* context,
    const v1::TriggerDefragmentationRequest* request,
    v1::DefragReport* response) {
  if (auto failed = Enter(context)) return *failed;
  absl::MutexLock lock(&mu_);
  last_defrag_ = *request;
  response->set_complete(true);
  return grpc::Status::OK;
}

void TestPoolService::RefuseBatchAllocationsAfter(uint64_t allocations) {
  absl::MutexLock lock(&mu_);
  batch_allocations_allowed_ = allocations;
}

void TestPoolService::FailAllocationsAfter(uint64_t allocations) {
  absl::MutexLock lock(&mu_);
  allocations_allowed_ = allocations;
}

void TestPoolService::FailWith(grpc::Status status) {
  absl::MutexLock lock(&mu_);
  fail_with_ = std::move(status);
}

void TestPoolService::FailFreesAfter(uint64_t frees) {
  absl::MutexLock lock(&mu_);
  frees_allowed_ = frees;
}

std::map<uint64_t, std::string> TestPoolService::Blocks() {
  absl::MutexLock lock(&mu_);
  return blocks_;
}

uint64_t TestPoolService::allocations() {
  absl::MutexLock lock(&mu_);
  return allocations_;
}

uint64_t TestPoolService::frees() {
  absl::MutexLock lock(&mu_);
  return frees_;
}

uint64_t TestPoolService::batches() {
  absl::MutexLock lock(&mu_);
  return batches_;
}

v1::GetStatsRequest TestPoolService::last_stats_request() {
  absl::MutexLock lock(&mu_);
  return last_stats_;
}

v1::AnalyzeFragmentationRequest TestPoolService::last_analyze_request() {
  absl::MutexLock lock(&mu_);
  return last_analyze_;
}

v1::TriggerDefragmentationRequest TestPoolService::last_defrag_request() {
  absl::MutexLock lock(&mu_);
  return last_defrag_;
}

std::chrono::system_clock::time_point TestPoolService::last_deadline() {
  absl::MutexLock lock(&mu_);
  return last_deadline_;
}

TestServer::TestServer() {
  grpc::EnableDefaultHealthCheckService(true);
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(),
                           &port);
  builder.RegisterService(&service_);
  // Room for 64 MiB blocks, as poold has.
  builder.SetMaxReceiveMessageSize(128 << 20);
  builder.SetMaxSendMessageSize(128 << 20);
  server_ = builder.BuildAndStart();
  target_ = absl::StrCat("127.0.0.1:", port);
}

TestServer::~TestServer() {
  if (server_ != nullptr) server_->Shutdown(std::chrono::system_clock::now());
}

void TestServer::SetServing(bool serving) {
  server_->GetHealthCheckService()->SetServingStatus(serving);
}

}  // namespace poold::client::testing
