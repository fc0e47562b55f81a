// PoolServiceImpl: request -> Command -> worker -> response.
#include "server/pool_service_impl.h"

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "server/proto_convert.h"
#include "server/status_mapping.h"

namespace poold {

// The reactor of one unary RPC. It owns the cancellation flag its Command
// points to and deletes itself when gRPC is done with the call, which is
// after Finish: so it outlives the Command until the completion callback.
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  void OnCancel() override {
    cancelled_.store(true, std::memory_order_release);
  }
  void OnDone() override { delete this; }

  const std::atomic<bool>* cancelled_flag() const { return &cancelled_; }

  void FinishWith(const absl::Status& status) { Finish(ToGrpcStatus(status)); }

 private:
  std::atomic<bool> cancelled_{false};
};

PoolServiceImpl::PoolServiceImpl(Worker* worker, uint64_t max_block_bytes)
    : worker_(worker), max_block_bytes_(max_block_bytes) {}

void PoolServiceImpl::StartDraining() {
  draining_.store(true, std::memory_order_release);
}

template <typename OpT>
grpc::ServerUnaryReactor* PoolServiceImpl::Dispatch(
    grpc::CallbackServerContext* context, UnaryCall* call,
    absl::StatusOr<OpT> op) {
  if (draining_.load(std::memory_order_acquire)) {
    call->FinishWith(absl::UnavailableError("server is shutting down"));
    return call;
  }
  if (!op.ok()) {
    call->FinishWith(op.status());
    return call;
  }
  Command command;
  command.deadline = DeadlineFromGrpc(context->deadline());
  command.cancelled = call->cancelled_flag();
  command.op = *std::move(op);
  // A refused command is completed right here (RESOURCE_EXHAUSTED or
  // UNAVAILABLE), which finishes the call before we return it.
  worker_->Submit(std::move(command));
  return call;
}

grpc::ServerUnaryReactor* PoolServiceImpl::Allocate(
    grpc::CallbackServerContext* context, const v1::AllocateRequest* request,
    v1::AllocateResponse* response) {
  auto* call = new UnaryCall();
  absl::StatusOr<AllocateOp> op =
      AllocateOpFromProto(*request, max_block_bytes_);
  if (op.ok()) {
    op->done = [call, response](absl::StatusOr<pools::BlockInfo> info) {
      if (info.ok()) BlockInfoToProto(*info, response);
      call->FinishWith(info.status());
    };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::Write(
    grpc::CallbackServerContext* context, const v1::WriteRequest* request,
    v1::WriteResponse* /*response*/) {
  auto* call = new UnaryCall();
  absl::StatusOr<WriteOp> op = WriteOpFromProto(*request);
  if (op.ok()) {
    op->done = [call](absl::Status status) { call->FinishWith(status); };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::Read(
    grpc::CallbackServerContext* context, const v1::ReadRequest* request,
    v1::ReadResponse* response) {
  auto* call = new UnaryCall();
  absl::StatusOr<ReadOp> op = ReadOpFromProto(*request);
  if (op.ok()) {
    op->done = [call, response](absl::StatusOr<absl::string_view> data) {
      // The view points into pool memory, valid only now: copy it.
      if (data.ok())
        response->mutable_data()->assign(data->data(), data->size());
      call->FinishWith(data.status());
    };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::Free(
    grpc::CallbackServerContext* context, const v1::FreeRequest* request,
    v1::FreeResponse* /*response*/) {
  auto* call = new UnaryCall();
  absl::StatusOr<FreeOp> op = FreeOpFromProto(*request);
  if (op.ok()) {
    op->done = [call](absl::Status status) { call->FinishWith(status); };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::GetStats(
    grpc::CallbackServerContext* context, const v1::GetStatsRequest* request,
    v1::GetStatsResponse* response) {
  auto* call = new UnaryCall();
  absl::StatusOr<StatsOp> op = StatsOpFromProto(*request);
  if (op.ok()) {
    op->done = [call, response](absl::StatusOr<StatsSnapshot> snapshot) {
      if (snapshot.ok()) StatsSnapshotToProto(*snapshot, response);
      call->FinishWith(snapshot.status());
    };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::AnalyzeFragmentation(
    grpc::CallbackServerContext* context,
    const v1::AnalyzeFragmentationRequest* request,
    v1::FragmentationReport* response) {
  auto* call = new UnaryCall();
  absl::StatusOr<AnalyzeOp> op = AnalyzeOpFromProto(*request);
  if (op.ok()) {
    op->done = [call, response](
                   absl::StatusOr<std::vector<pools::PoolAnalysis>> analyses) {
      if (analyses.ok()) PoolAnalysesToProto(*analyses, response);
      call->FinishWith(analyses.status());
    };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::TriggerDefragmentation(
    grpc::CallbackServerContext* context,
    const v1::TriggerDefragmentationRequest* request,
    v1::DefragReport* response) {
  auto* call = new UnaryCall();
  absl::StatusOr<DefragOp> op = DefragOpFromProto(*request);
  if (op.ok()) {
    op->done = [call, response](absl::StatusOr<pools::DefragReport> report) {
      // An error status carries no response message, so a defragmentation
      // that stopped early reports itself as OK with complete = false.
      if (report.ok()) DefragReportToProto(*report, response);
      call->FinishWith(report.status());
    };
  }
  return Dispatch(context, call, std::move(op));
}

}  // namespace poold
