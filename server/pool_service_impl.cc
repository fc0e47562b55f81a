// PoolServiceImpl: request -> Command -> worker -> response.
#include "server/pool_service_impl.h"

#include <iterator>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/message.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "server/proto_convert.h"
#include "server/status_mapping.h"

namespace poold {
namespace {

// Clients with an unknown-handle budget of their own; the rest share one.
constexpr size_t kMaxLimitedClients = 4096;

// The operations (field 1) of a serialized BatchRequest, counted on the wire
// without building them, up to `limit` + 1: a message of empty operations
// would otherwise make the parser build millions of objects before the
// limit is checked. A malformed message stops the count; the parse that
// follows reports it.
size_t CountBatchOperations(const grpc::ByteBuffer& raw, size_t limit) {
  grpc::ByteBuffer bytes(raw);  // shares the slices
  grpc::ProtoBufferReader reader(&bytes);
  google::protobuf::io::CodedInputStream input(&reader);
  size_t count = 0;
  while (count <= limit) {
    const uint32_t tag = input.ReadTag();
    if (tag == 0) break;
    if (google::protobuf::internal::WireFormatLite::GetTagFieldNumber(tag) ==
        v1::BatchRequest::kOperationsFieldNumber) {
      ++count;
    }
    if (!google::protobuf::internal::WireFormatLite::SkipField(&input, tag)) {
      break;
    }
  }
  return count;
}

// A batch's Reads take the payload budget in pieces of at least this.
constexpr uint64_t kBudgetChunkBytes = 64 << 10;

// Sets `result`'s code and message (at most `max_message` bytes of it).
void SetResultStatus(const absl::Status& status, size_t max_message,
                     v1::BatchResult* result) {
  result->set_code(static_cast<int32_t>(status.code()));
  if (!status.ok()) {
    result->set_message(std::string(status.message().substr(0, max_message)));
  }
}

}  // namespace

// The reactor of one unary RPC. It owns the cancellation flag its Command
// points to, and the parsed request whose bytes the Command reads in place,
// and deletes itself when gRPC is done with the call, which is after Finish:
// so it outlives the Command until the completion callback. It also holds
// the call's share of the payload budget until then: only then are its
// request and response freed.
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  UnaryCall(PayloadBudget* budget, grpc::ByteBuffer* raw_response)
      : budget_(budget), raw_response_(raw_response) {}

  void OnCancel() override {
    cancelled_.store(true, std::memory_order_release);
  }
  void OnDone() override {
    if (held_bytes_ > 0) budget_->Give(held_bytes_);
    delete this;
  }

  const std::atomic<bool>* cancelled_flag() const { return &cancelled_; }

  // Keeps the request and the response message until the call finishes.
  void Own(std::unique_ptr<google::protobuf::Message> request,
           std::unique_ptr<google::protobuf::Message> response) {
    response_message_ = response.get();
    request_ = std::move(request);
    response_ = std::move(response);
  }
  // Keeps `arena`, which holds the request and `response`, until the call
  // finishes.
  void Own(std::unique_ptr<google::protobuf::Arena> arena,
           google::protobuf::Message* response) {
    response_message_ = response;
    arena_ = std::move(arena);
  }

  // Takes `bytes` of the budget for this call. One thread at a time: the
  // handler's, then (for a Read) the worker's.
  bool Hold(uint64_t bytes) {
    if (!budget_->TryTake(bytes)) return false;
    held_bytes_ += bytes;
    return true;
  }

  // Finishes the call with `status`; when OK, with the response message
  // serialized as the answer.
  void FinishWith(const absl::Status& status) {
    grpc::Status answer = ToGrpcStatus(status);
    if (status.ok() && response_message_ != nullptr) {
      bool own_buffer = false;
      const grpc::Status serialized =
          grpc::SerializationTraits<google::protobuf::Message>::Serialize(
              *response_message_, raw_response_, &own_buffer);
      if (!serialized.ok()) {
        answer = grpc::Status(
            grpc::StatusCode::INTERNAL,
            "cannot serialize the response: " + serialized.error_message());
      }
    }
    // From here on only gRPC's copies (the request's bytes, the serialized
    // answer) are needed: a client slow to read its answer holds no more.
    Release();
    Finish(answer);
  }

  // Finishes the call OK with `bytes` as the serialized answer.
  void FinishWithBytes(grpc::ByteBuffer bytes) {
    *raw_response_ = std::move(bytes);
    Release();
    Finish(grpc::Status::OK);
  }

 private:
  PayloadBudget* const budget_;
  grpc::ByteBuffer* const raw_response_;
  void Release() {
    response_message_ = nullptr;
    response_.reset();
    request_.reset();
    arena_.reset();
  }

  std::unique_ptr<google::protobuf::Message> request_;
  std::unique_ptr<google::protobuf::Message> response_;
  std::unique_ptr<google::protobuf::Arena> arena_;
  google::protobuf::Message* response_message_ = nullptr;
  uint64_t held_bytes_ = 0;
  std::atomic<bool> cancelled_{false};
};

PoolServiceImpl::PoolServiceImpl(Worker* worker, const StatsBoard* board,
                                 uint64_t max_block_bytes,
                                 uint64_t max_payload_bytes_in_flight,
                                 const HandleRules& handle_rules,
                                 const BatchLimits& batch_limits)
    : worker_(worker),
      board_(board),
      max_block_bytes_(max_block_bytes),
      payload_budget_(max_payload_bytes_in_flight),
      identity_(handle_rules.identities, handle_rules.operators),
      operators_only_(handle_rules.identities &&
                      !handle_rules.operators.empty()),
      unknown_handles_(handle_rules.unknown_handles_per_second,
                       10 * handle_rules.unknown_handles_per_second,
                       kMaxLimitedClients),
      batch_limits_(batch_limits) {}

absl::StatusOr<HandleCall> PoolServiceImpl::AdmitHandleCall(
    grpc::CallbackServerContext* context) {
  // The common case costs nothing: without identities, and while no client
  // owes the limiter, the caller is anonymous and its key is looked up only
  // if its handle turns out unknown (CountAnswer).
  const absl::Time now = UnknownHandleLimiter::Now();
  const bool limited = unknown_handles_.anyone_in_debt(now);
  HandleCall handle_call;
  if (!identity_.enabled() && !limited) return handle_call;
  handle_call.caller = identity_.Of(*context);
  if (limited) {
    if (!unknown_handles_.Admit(handle_call.caller.limiter_key, now)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "too many unknown handles from ", handle_call.caller.limiter_key,
          ": handle calls are refused until its budget refills (",
          unknown_handles_.per_second(),
          " per second, --max_unknown_handles_per_second)"));
    }
    handle_call.admitted = true;
  }
  return handle_call;
}

absl::Status PoolServiceImpl::RequireOperator(
    grpc::CallbackServerContext& context, absl::string_view rpc) const {
  if (!operators_only_) return absl::OkStatus();
  const Caller caller = identity_.Of(context);
  if (caller.is_operator || caller.local) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      rpc, " is for operators (--operator_identities); ",
      caller.owner != 0 ? caller.limiter_key : "a client without a certificate",
      " is not one"));
}

template <typename OpT>
absl::StatusOr<HandleCall> PoolServiceImpl::AdmitHandleOp(
    grpc::CallbackServerContext* context, absl::StatusOr<OpT>& op) {
  if (!op.ok()) return op.status();
  absl::StatusOr<HandleCall> handle_call = AdmitHandleCall(context);
  if (!handle_call.ok()) {
    op = handle_call.status();
    return handle_call;
  }
  ApplyCaller(handle_call->caller, *op);
  return handle_call;
}

template <typename OpT>
void PoolServiceImpl::ApplyCaller(const Caller& caller, OpT& op) {
  // The handle as the engine knows it: the caller's owner mask taken off,
  // or (an operator) left for the worker to match against every owner.
  if (caller.is_operator) {
    op.any_owner = true;
  } else {
    op.handle ^= uint64_t{caller.owner} << 32;
  }
}

void PoolServiceImpl::CountAnswer(grpc::CallbackServerContext* context,
                                  const Caller& caller, bool admitted,
                                  const absl::Status& status) {
  // The common answer (a known handle on the fast path) costs nothing here,
  // on the worker thread: not even a clock read.
  if (status.code() == absl::StatusCode::kNotFound) {
    // (The call is not finished yet: its context is still valid.)
    unknown_handles_.RecordUnknown(caller.limiter_key.empty()
                                       ? identity_.Of(*context).limiter_key
                                       : caller.limiter_key,
                                   UnknownHandleLimiter::Now(), admitted);
  } else if (admitted) {
    unknown_handles_.Refund(caller.limiter_key, UnknownHandleLimiter::Now());
  }
}

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

template <typename RequestT, typename ResponseT>
grpc::ServerUnaryReactor* PoolServiceImpl::Serve(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw_request,
    grpc::ByteBuffer* raw_response,
    grpc::ServerUnaryReactor* (PoolServiceImpl::*serve)(
        grpc::CallbackServerContext*, UnaryCall*, const RequestT*,
        ResponseT*)) {
  auto* call = new UnaryCall(&payload_budget_, raw_response);
  auto request = std::make_unique<RequestT>();
  grpc::ByteBuffer bytes(*raw_request);  // shares the slices; parsing eats it
  if (const grpc::Status parsed =
          grpc::SerializationTraits<RequestT>::Deserialize(&bytes,
                                                           request.get());
      !parsed.ok()) {
    call->FinishWith(absl::InvalidArgumentError(absl::StrCat(
        "the request is not a valid ", RequestT::descriptor()->full_name(),
        " (protobuf): ", parsed.error_message())));
    return call;
  }
  auto response = std::make_unique<ResponseT>();
  const RequestT* typed_request = request.get();
  ResponseT* typed_response = response.get();
  call->Own(std::move(request), std::move(response));
  return (this->*serve)(context, call, typed_request, typed_response);
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
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, request, response, &PoolServiceImpl::ServeAllocate);
}

grpc::ServerUnaryReactor* PoolServiceImpl::ServeAllocate(
    grpc::CallbackServerContext* context, UnaryCall* call,
    const v1::AllocateRequest* request, v1::AllocateResponse* response) {
  absl::StatusOr<AllocateOp> op =
      AllocateOpFromProto(*request, max_block_bytes_);
  if (op.ok()) {
    if (absl::Status s = HoldPayload(call, request->data().size()); !s.ok()) {
      op = s;
    }
  }
  if (op.ok()) {
    const uint32_t owner = identity_.OwnerOf(*context);
    op->owner = owner;
    op->done = [call, response, owner](absl::StatusOr<pools::BlockInfo> info) {
      if (info.ok()) {
        info->handle ^= uint64_t{owner} << 32;
        BlockInfoToProto(*info, response);
      }
      call->FinishWith(info.status());
    };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::Write(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, request, response, &PoolServiceImpl::ServeWrite);
}

grpc::ServerUnaryReactor* PoolServiceImpl::ServeWrite(
    grpc::CallbackServerContext* context, UnaryCall* call,
    const v1::WriteRequest* request, v1::WriteResponse* /*response*/) {
  absl::StatusOr<WriteOp> op = WriteOpFromProto(*request);
  if (op.ok()) {
    if (absl::Status s = HoldPayload(call, request->data().size()); !s.ok()) {
      op = s;
    }
  }
  absl::StatusOr<HandleCall> handle_call = AdmitHandleOp(context, op);
  if (op.ok()) {
    op->done = [this, context, call,
                handle_call = *std::move(handle_call)](absl::Status status) {
      CountAnswer(context, handle_call, status);
      call->FinishWith(status);
    };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::Read(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, request, response, &PoolServiceImpl::ServeRead);
}

grpc::ServerUnaryReactor* PoolServiceImpl::ServeRead(
    grpc::CallbackServerContext* context, UnaryCall* call,
    const v1::ReadRequest* request, v1::ReadResponse* response) {
  absl::StatusOr<ReadOp> op = ReadOpFromProto(*request);
  absl::StatusOr<HandleCall> handle_call = AdmitHandleOp(context, op);
  if (op.ok()) {
    op->done = [this, context, call, response,
                handle_call = *std::move(handle_call)](
                   absl::StatusOr<absl::string_view> data) {
      CountAnswer(context, handle_call, data.status());
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
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, request, response, &PoolServiceImpl::ServeFree);
}

grpc::ServerUnaryReactor* PoolServiceImpl::ServeFree(
    grpc::CallbackServerContext* context, UnaryCall* call,
    const v1::FreeRequest* request, v1::FreeResponse* /*response*/) {
  absl::StatusOr<FreeOp> op = FreeOpFromProto(*request);
  absl::StatusOr<HandleCall> handle_call = AdmitHandleOp(context, op);
  if (op.ok()) {
    op->done = [this, context, call,
                handle_call = *std::move(handle_call)](absl::Status status) {
      CountAnswer(context, handle_call, status);
      call->FinishWith(status);
    };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::GetStats(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, request, response, &PoolServiceImpl::ServeGetStats);
}

void PoolServiceImpl::TransportStatsToProto(
    v1::TransportStats* transport) const {
  transport->set_payload_bytes_in_flight(payload_budget_.held());
  transport->set_max_payload_bytes_in_flight(payload_budget_.limit());
  transport->set_payload_refusals(
      payload_refusals_.load(std::memory_order_relaxed));
  transport->set_unknown_handle_answers(unknown_handles_.unknown_answers());
  transport->set_unknown_handle_refusals(unknown_handles_.refusals());
  if (connection_stats_) connection_stats_(transport);
}

void PoolServiceImpl::AnswerFromBoard(UnaryCall* call,
                                      const v1::GetStatsRequest& request) {
  const StatsBoard::Published latest = board_->Latest();
  if (latest.sequence == 0) {
    call->FinishWith(absl::UnavailableError(
        "the worker has not published statistics yet; retry, or ask for "
        "consistent ones"));
    return;
  }
  // What is read now, appended as a message of its own: protobuf merges
  // concatenated messages, so the answer is one GetStatsResponse.
  v1::GetStatsResponse now;
  TransportStatsToProto(now.mutable_transport());
  const grpc::Slice parts[] = {
      request.include_classes() ? latest.with_classes : latest.without_classes,
      request.include_defrag_history() ? latest.history : grpc::Slice(),
      grpc::Slice(now.SerializeAsString())};
  call->FinishWithBytes(grpc::ByteBuffer(parts, std::size(parts)));
}

grpc::ServerUnaryReactor* PoolServiceImpl::ServeGetStats(
    grpc::CallbackServerContext* context, UnaryCall* call,
    const v1::GetStatsRequest* request, v1::GetStatsResponse* response) {
  if (absl::Status s = RequireOperator(*context, "GetStats"); !s.ok()) {
    call->FinishWith(s);
    return call;
  }
  if (!request->consistent() && !draining_.load(std::memory_order_acquire)) {
    AnswerFromBoard(call, *request);
    return call;
  }
  absl::StatusOr<StatsOp> op = StatsOpFromProto(*request);
  if (op.ok()) {
    op->done = [this, call, response](absl::StatusOr<StatsSnapshot> snapshot) {
      if (snapshot.ok()) {
        StatsSnapshotToProto(*snapshot, response);
        TransportStatsToProto(response->mutable_transport());
      }
      call->FinishWith(snapshot.status());
    };
  }
  return Dispatch(context, call, std::move(op));
}

grpc::ServerUnaryReactor* PoolServiceImpl::AnalyzeFragmentation(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, request, response,
               &PoolServiceImpl::ServeAnalyzeFragmentation);
}

grpc::ServerUnaryReactor* PoolServiceImpl::ServeAnalyzeFragmentation(
    grpc::CallbackServerContext* context, UnaryCall* call,
    const v1::AnalyzeFragmentationRequest* request,
    v1::FragmentationReport* response) {
  absl::StatusOr<AnalyzeOp> op = AnalyzeOpFromProto(*request);
  if (absl::Status s = RequireOperator(*context, "AnalyzeFragmentation");
      !s.ok()) {
    op = s;
  }
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
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  return Serve(context, request, response,
               &PoolServiceImpl::ServeTriggerDefragmentation);
}

grpc::ServerUnaryReactor* PoolServiceImpl::ServeTriggerDefragmentation(
    grpc::CallbackServerContext* context, UnaryCall* call,
    const v1::TriggerDefragmentationRequest* request,
    v1::DefragReport* response) {
  absl::StatusOr<DefragOp> op = DefragOpFromProto(*request);
  if (absl::Status s = RequireOperator(*context, "TriggerDefragmentation");
      !s.ok()) {
    op = s;
  }
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

// What a batch's entries share with each other and with its completion.
// Created by ServeBatch, owned by the batch's completion callback; the
// entries' callbacks (which run before it, on the worker) point to it.
struct PoolServiceImpl::BatchState {
  PoolServiceImpl* service = nullptr;
  grpc::CallbackServerContext* context = nullptr;
  UnaryCall* call = nullptr;
  v1::BatchResponse* response = nullptr;
  Caller caller;
  // Someone owed the unknown-handle limiter at the start: each entry that
  // names a handle took a token.
  bool limited = false;
  // Tokens taken by entries not answered yet (given back if the batch is
  // refused as a whole).
  size_t admitted_pending = 0;
  // Bytes of the answer set aside so far: kResultReserveBytes per result,
  // plus the data of Reads.
  uint64_t answer_bytes = 0;
  // Payload budget taken for Reads and not used yet (taken in chunks, not
  // once per Read).
  uint64_t budget_left = 0;

  v1::BatchResult* result(uint32_t index) {
    return response->mutable_results(static_cast<int>(index));
  }

  // Settles entry `index`'s unknown-handle token and sets its status.
  void Settle(uint32_t index, bool admitted, const absl::Status& status) {
    if (admitted) --admitted_pending;
    service->CountAnswer(context, caller, admitted, status);
    SetResultStatus(status, kMaxResultMessageBytes, result(index));
  }
};

grpc::ServerUnaryReactor* PoolServiceImpl::Batch(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  if (const size_t count =
          CountBatchOperations(*request, batch_limits_.max_operations);
      count > batch_limits_.max_operations) {
    auto* call = new UnaryCall(&payload_budget_, response);
    call->FinishWith(absl::InvalidArgumentError(
        absl::StrCat("a batch holds at most ", batch_limits_.max_operations,
                     " operations (--max_batch_operations); split it")));
    return call;
  }
  // A batch's messages live in an arena: hundreds of operations and
  // results cost a few block allocations, freed at once.
  auto* call = new UnaryCall(&payload_budget_, response);
  auto arena = std::make_unique<google::protobuf::Arena>();
  auto* parsed =
      google::protobuf::Arena::CreateMessage<v1::BatchRequest>(arena.get());
  grpc::ByteBuffer bytes(*request);  // shares the slices; parsing eats it
  if (const grpc::Status status =
          grpc::SerializationTraits<v1::BatchRequest>::Deserialize(&bytes,
                                                                   parsed);
      !status.ok()) {
    call->FinishWith(absl::InvalidArgumentError(
        absl::StrCat("the request is not a valid poold.v1.BatchRequest "
                     "(protobuf): ",
                     status.error_message())));
    return call;
  }
  auto* answer =
      google::protobuf::Arena::CreateMessage<v1::BatchResponse>(arena.get());
  call->Own(std::move(arena), answer);
  return ServeBatch(context, call, parsed, answer);
}

grpc::ServerUnaryReactor* PoolServiceImpl::ServeBatch(
    grpc::CallbackServerContext* context, UnaryCall* call,
    const v1::BatchRequest* request, v1::BatchResponse* response) {
  if (draining_.load(std::memory_order_acquire)) {
    call->FinishWith(absl::UnavailableError("server is shutting down"));
    return call;
  }
  const int count = request->operations_size();
  uint64_t data_bytes = 0;
  for (const v1::BatchOperation& operation : request->operations()) {
    data_bytes +=
        operation.allocate().data().size() + operation.write().data().size();
  }
  if (absl::Status s = HoldPayload(call, data_bytes); !s.ok()) {
    call->FinishWith(s);
    return call;
  }
  auto state = std::make_unique<BatchState>();
  state->service = this;
  state->context = context;
  state->call = call;
  state->response = response;
  state->limited = unknown_handles_.anyone_in_debt(UnknownHandleLimiter::Now());
  if (identity_.enabled() || state->limited) {
    state->caller = identity_.Of(*context);
  }
  state->answer_bytes =
      uint64_t{static_cast<uint32_t>(count)} * kResultReserveBytes;
  BatchOp batch;
  batch.entries.reserve(count);
  response->mutable_results()->Reserve(count);
  for (int i = 0; i < count; ++i) response->add_results();
  for (int i = 0; i < count; ++i) {
    if (std::optional<BatchEntry> entry = MakeBatchEntry(
            state.get(), request->operations(i), static_cast<uint32_t>(i))) {
      batch.entries.push_back(*std::move(entry));
    }
  }
  if (batch.entries.empty()) {
    call->FinishWith(absl::OkStatus());
    return call;
  }
  batch.done = [this, state = std::move(state)](absl::Status status) {
    // Refused as a whole: the tokens its entries took come back.
    for (; state->admitted_pending > 0; --state->admitted_pending) {
      unknown_handles_.Refund(state->caller.limiter_key,
                              UnknownHandleLimiter::Now());
    }
    state->call->FinishWith(status);
  };
  return Dispatch(context, call, absl::StatusOr<BatchOp>(std::move(batch)));
}

std::optional<BatchEntry> PoolServiceImpl::MakeBatchEntry(
    BatchState* state, const v1::BatchOperation& operation, uint32_t index) {
  // The entries' callbacks capture no more than fits in AnyInvocable's
  // inline storage (a pointer and an index): no allocation per entry.
  // Admits one entry that names a handle (as AdmitHandleOp admits a call);
  // false: refused, with its result set.
  auto admit = [this, state, index](auto& op, bool& admitted) {
    admitted = false;
    if (state->limited) {
      if (!unknown_handles_.Admit(state->caller.limiter_key,
                                  UnknownHandleLimiter::Now())) {
        SetResultStatus(
            absl::ResourceExhaustedError(absl::StrCat(
                "too many unknown handles from ", state->caller.limiter_key,
                ": handle operations are refused until its budget refills (",
                unknown_handles_.per_second(),
                " per second, --max_unknown_handles_per_second)")),
            kMaxResultMessageBytes, state->result(index));
        return false;
      }
      admitted = true;
      ++state->admitted_pending;
    }
    ApplyCaller(state->caller, op);
    return true;
  };
  absl::Status refusal;
  bool admitted = false;
  switch (operation.operation_case()) {
    case v1::BatchOperation::kAllocate: {
      absl::StatusOr<AllocateOp> op =
          AllocateOpFromProto(operation.allocate(), max_block_bytes_);
      if (!op.ok()) {
        refusal = op.status();
        break;
      }
      op->owner = state->caller.owner;
      op->done = [state, index](absl::StatusOr<pools::BlockInfo> info) {
        v1::BatchResult* result = state->result(index);
        if (info.ok()) {
          info->handle ^= uint64_t{state->caller.owner} << 32;
          BlockInfoToProto(*info, result->mutable_allocate());
        } else {
          SetResultStatus(info.status(), kMaxResultMessageBytes, result);
        }
      };
      return BatchEntry(*std::move(op));
    }
    case v1::BatchOperation::kWrite: {
      absl::StatusOr<WriteOp> op = WriteOpFromProto(operation.write());
      if (!op.ok()) {
        refusal = op.status();
        break;
      }
      if (!admit(*op, admitted)) return std::nullopt;
      op->done = [state, index, admitted](absl::Status status) {
        state->Settle(index, admitted, status);
        if (status.ok()) state->result(index)->mutable_write();
      };
      return BatchEntry(*std::move(op));
    }
    case v1::BatchOperation::kRead: {
      absl::StatusOr<ReadOp> op = ReadOpFromProto(operation.read());
      if (!op.ok()) {
        refusal = op.status();
        break;
      }
      if (!admit(*op, admitted)) return std::nullopt;
      op->done = [state, index,
                  admitted](absl::StatusOr<absl::string_view> data) {
        absl::Status status = data.status();
        if (status.ok()) {
          status = state->service->AnswerBatchRead(state, *data,
                                                   state->result(index));
        }
        state->Settle(index, admitted, status);
      };
      return BatchEntry(*std::move(op));
    }
    case v1::BatchOperation::kFree: {
      absl::StatusOr<FreeOp> op = FreeOpFromProto(operation.free());
      if (!op.ok()) {
        refusal = op.status();
        break;
      }
      if (!admit(*op, admitted)) return std::nullopt;
      op->done = [state, index, admitted](absl::Status status) {
        state->Settle(index, admitted, status);
        if (status.ok()) state->result(index)->mutable_free();
      };
      return BatchEntry(*std::move(op));
    }
    case v1::BatchOperation::OPERATION_NOT_SET:
      refusal = absl::InvalidArgumentError(
          "the operation has none of allocate, write, read, free");
      break;
  }
  SetResultStatus(refusal, kMaxResultMessageBytes, state->result(index));
  return std::nullopt;
}

absl::Status PoolServiceImpl::AnswerBatchRead(BatchState* state,
                                              absl::string_view data,
                                              v1::BatchResult* result) {
  if (state->answer_bytes + data.size() > batch_limits_.max_answer_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the batch's answer would hold more than ",
                     batch_limits_.max_answer_bytes,
                     " bytes (--max_message_bytes) with these ", data.size(),
                     ": read this block in a later batch"));
  }
  if (state->budget_left < data.size()) {
    // Payload budget for this Read and (in one take) for some that follow.
    const uint64_t needed = data.size() - state->budget_left;
    const uint64_t chunk = std::max<uint64_t>(needed, kBudgetChunkBytes);
    if (state->call->Hold(chunk)) {
      state->budget_left += chunk;
    } else if (absl::Status s = HoldPayload(state->call, needed); !s.ok()) {
      return s;
    } else {
      state->budget_left += needed;
    }
  }
  state->budget_left -= data.size();
  state->answer_bytes += data.size();
  // The view points into pool memory, valid only now: copy it.
  result->mutable_read()->mutable_data()->assign(data.data(), data.size());
  return absl::OkStatus();
}

}  // namespace poold
