// PoolServiceImpl: request -> Command -> worker -> response.
#include "server/pool_service_impl.h"

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "server/proto_convert.h"
#include "server/status_mapping.h"

namespace poold {

// The reactor of one unary RPC. It owns the cancellation flag its Command
// points to and deletes itself when gRPC is done with the call, which is
// after Finish: so it outlives the Command until the completion callback.
// It also holds the call's share of the payload budget until gRPC is done
// with the call: only then are its request and response freed.
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  explicit UnaryCall(PayloadBudget* budget) : budget_(budget) {}

  void OnCancel() override {
    cancelled_.store(true, std::memory_order_release);
  }
  void OnDone() override {
    if (held_bytes_ > 0) budget_->Give(held_bytes_);
    delete this;
  }

  const std::atomic<bool>* cancelled_flag() const { return &cancelled_; }

  // Takes `bytes` of the budget for this call. One thread at a time: the
  // handler's, then (for a Read) the worker's.
  bool Hold(uint64_t bytes) {
    if (!budget_->TryTake(bytes)) return false;
    held_bytes_ += bytes;
    return true;
  }

  void FinishWith(const absl::Status& status) { Finish(ToGrpcStatus(status)); }

 private:
  PayloadBudget* const budget_;
  uint64_t held_bytes_ = 0;
  std::atomic<bool> cancelled_{false};
};

PoolServiceImpl::PoolServiceImpl(Worker* worker, uint64_t max_block_bytes,
                                 uint64_t max_payload_bytes_in_flight)
    : worker_(worker),
      max_block_bytes_(max_block_bytes),
      payload_budget_(max_payload_bytes_in_flight) {}

absl::Status PoolServiceImpl::HoldPayload(UnaryCall* call, uint64_t bytes) {
  if (bytes == 0 || call->Hold(bytes)) return absl::OkStatus();
  payload_refusals_.fetch_add(1, std::memory_order_relaxed);
  LOG_EVERY_T(WARNING, 10)
      << "refusing calls: block data of calls in flight holds "
      << payload_budget_.held()
      << " bytes (--max_payload_bytes_in_flight=" << payload_budget_.limit()
      << "); slow or stalled clients hold it";
  return absl::ResourceExhaustedError(absl::StrCat(
      "block data of calls in flight holds ", payload_budget_.held(),
      " bytes; ", bytes, " more would pass --max_payload_bytes_in_flight (",
      payload_budget_.limit(), "): retry once other responses have been read"));
}

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
  auto* call = new UnaryCall(&payload_budget_);
  absl::StatusOr<AllocateOp> op =
      AllocateOpFromProto(*request, max_block_bytes_);
  if (op.ok()) {
    if (absl::Status s = HoldPayload(call, request->data().size()); !s.ok()) {
      op = s;
    }
  }
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
  auto* call = new UnaryCall(&payload_budget_);
  absl::StatusOr<WriteOp> op = WriteOpFromProto(*request);
  if (op.ok()) {
    if (absl::Status s = HoldPayload(call, request->data().size()); !s.ok()) {
      op = s;
    }
  }
  if (op.ok()) {
    op->done = [call](absl::Status status) { call->FinishWith(status); };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::Read(
    grpc::CallbackServerContext* context, const v1::ReadRequest* request,
    v1::ReadResponse* response) {
  auto* call = new UnaryCall(&payload_budget_);
  absl::StatusOr<ReadOp> op = ReadOpFromProto(*request);
  if (op.ok()) {
    op->done = [this, call, response](absl::StatusOr<absl::string_view> data) {
      if (!data.ok()) {
        call->FinishWith(data.status());
        return;
      }
      if (absl::Status s = HoldPayload(call, data->size()); !s.ok()) {
        call->FinishWith(s);
        return;
      }
      // The view points into pool memory, valid only now: copy it.
      response->mutable_data()->assign(data->data(), data->size());
      call->FinishWith(absl::OkStatus());
    };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::Free(
    grpc::CallbackServerContext* context, const v1::FreeRequest* request,
    v1::FreeResponse* /*response*/) {
  auto* call = new UnaryCall(&payload_budget_);
  absl::StatusOr<FreeOp> op = FreeOpFromProto(*request);
  if (op.ok()) {
    op->done = [call](absl::Status status) { call->FinishWith(status); };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::GetStats(
    grpc::CallbackServerContext* context, const v1::GetStatsRequest* request,
    v1::GetStatsResponse* response) {
  auto* call = new UnaryCall(&payload_budget_);
  absl::StatusOr<StatsOp> op = StatsOpFromProto(*request);
  if (op.ok()) {
    op->done = [this, call, response](absl::StatusOr<StatsSnapshot> snapshot) {
      if (snapshot.ok()) {
        StatsSnapshotToProto(*snapshot, response);
        v1::TransportStats* transport = response->mutable_transport();
        transport->set_payload_bytes_in_flight(payload_budget_.held());
        transport->set_max_payload_bytes_in_flight(payload_budget_.limit());
        transport->set_payload_refusals(
            payload_refusals_.load(std::memory_order_relaxed));
      }
      call->FinishWith(snapshot.status());
    };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::AnalyzeFragmentation(
    grpc::CallbackServerContext* context,
    const v1::AnalyzeFragmentationRequest* request,
    v1::FragmentationReport* response) {
  auto* call = new UnaryCall(&payload_budget_);
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
  auto* call = new UnaryCall(&payload_budget_);
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
