// PoolServiceImpl: request -> Command -> worker -> response.
#include "server/pool_service_impl.h"

#include <cstring>
#include <deque>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"
#include "google/protobuf/arena.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/message.h"
#include "google/protobuf/wire_format_lite.h"
#include "grpcpp/alarm.h"
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

// The bytes before a ReadResponse's data when it holds `length` bytes: the
// tag and length of field 1 (none for an empty one, which proto3 omits).
std::string ReadResponseHeader(uint64_t length) {
  using google::protobuf::internal::WireFormatLite;
  if (length == 0) return std::string();
  uint8_t header[16];
  uint8_t* end = google::protobuf::io::CodedOutputStream::WriteTagToArray(
      WireFormatLite::MakeTag(v1::ReadResponse::kDataFieldNumber,
                              WireFormatLite::WIRETYPE_LENGTH_DELIMITED),
      header);
  end = google::protobuf::io::CodedOutputStream::WriteVarint64ToArray(length,
                                                                      end);
  return std::string(reinterpret_cast<const char*>(header), end - header);
}

// A batch's Reads take the payload budget in pieces of at least this.
constexpr uint64_t kBudgetChunkBytes = 64 << 10;

// Sets `result`'s code and message (at most `max_message` bytes of it).
void SetResultStatus(const absl::Status& status, size_t max_message,
                     v1::BatchResult* result) {
  result->set_code(static_cast<int32_t>(status.code()));
  if (!status.ok()) {
    absl::string_view message = status.message();
    if (message.size() > max_message) {
      // Cut at a UTF-8 character boundary: a proto3 string must stay valid.
      size_t end = max_message;
      while (end > 0 &&
             (static_cast<unsigned char>(message[end]) & 0xC0) == 0x80) {
        --end;
      }
      message = message.substr(0, end);
    }
    result->set_message(std::string(message));
  }
}

// Calls `finish(status)` from one of gRPC's threads (an alarm due now): the
// calling thread goes on at once.
void FinishOnGrpcThread(Done<absl::Status> finish, absl::Status status) {
  struct Deferred {
    grpc::Alarm alarm;
    Done<absl::Status> finish;
    absl::Status status;
  };
  auto* deferred = new Deferred;
  deferred->finish = std::move(finish);
  deferred->status = std::move(status);
  // gRPC keeps the alarm's state alive while its callback runs, so the
  // callback may delete it.
  deferred->alarm.Set(gpr_now(GPR_CLOCK_MONOTONIC), [deferred](bool /*fired*/) {
    std::move(deferred->finish)(deferred->status);
    delete deferred;
  });
}

}  // namespace

// The reactor of one unary RPC. It owns the cancellation flag its Command
// points to, and the parsed request whose bytes the Command reads in place,
// and deletes itself when gRPC is done with the call, which is after Finish:
// so it outlives the Command until the completion callback. It also holds
// the call's share of the payload budget until then: only then are its
// request and response freed.
class UnaryCall final : public grpc::ServerUnaryReactor, public PayloadHolder {
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
  // Both reactions above are a few instructions that never block, so gRPC
  // may run them on the thread that completes the call, as it does for its
  // own default reactor. Otherwise every call's OnDone waits for one of
  // gRPC's executor threads: a wake-up per call (docs/PERFORMANCE.md,
  // section 3). Except for a call that carried a large payload: gRPC frees
  // the call's buffers right after OnDone, which may then be inside Finish
  // on the worker thread, and freeing megabytes takes milliseconds the
  // worker must not spend. gRPC asks from its own threads (OnCancel) while
  // the worker may still Hold, hence the atomic.
  bool InternalInlineable() override {
    return !large_.load(std::memory_order_relaxed);
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
  bool Hold(uint64_t bytes) override {
    if (!budget_->TryTake(bytes)) return false;
    held_bytes_ += bytes;
    if (held_bytes_ > Worker::kCopyPieceBytes) {
      large_.store(true, std::memory_order_relaxed);
    }
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

  // The serialized answer built in place: `header`, then `body_bytes` that
  // the caller writes at the returned address (valid until the call
  // finishes). One thread at a time, like Hold.
  char* PrepareAnswer(absl::string_view header, uint64_t body_bytes) {
    prepared_ = grpc::Slice(header.size() + body_bytes);
    char* start =
        reinterpret_cast<char*>(const_cast<uint8_t*>(prepared_.begin()));
    if (!header.empty()) std::memcpy(start, header.data(), header.size());
    return start + header.size();
  }
  // Finishes the call OK with the answer PrepareAnswer began.
  void FinishWithPreparedAnswer() {
    FinishWithBytes(grpc::ByteBuffer(&prepared_, 1));
  }
  // The same, from one of gRPC's threads (an alarm due now): this thread
  // goes on at once.
  void FinishWithPreparedAnswerElsewhere() {
    FinishOnGrpcThread(
        [this](absl::Status /*ok*/) { FinishWithPreparedAnswer(); },
        absl::OkStatus());
  }

 private:
  PayloadBudget* const budget_;
  grpc::ByteBuffer* const raw_response_;
  void Release() {
    response_message_ = nullptr;
    response_.reset();
    request_.reset();
    arena_.reset();
    prepared_ = grpc::Slice();
  }

  std::unique_ptr<google::protobuf::Message> request_;
  std::unique_ptr<google::protobuf::Message> response_;
  std::unique_ptr<google::protobuf::Arena> arena_;
  google::protobuf::Message* response_message_ = nullptr;
  grpc::Slice prepared_;
  uint64_t held_bytes_ = 0;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> large_{false};  // held_bytes_ > Worker::kCopyPieceBytes
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

absl::Status PoolServiceImpl::HoldPayload(PayloadHolder* holder,
                                          uint64_t bytes) {
  if (bytes == 0 || holder->Hold(bytes)) return absl::OkStatus();
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
    const v1::ReadRequest* request, v1::ReadResponse* /*response*/) {
  absl::StatusOr<ReadOp> op = ReadOpFromProto(*request);
  absl::StatusOr<HandleCall> handle_call = AdmitHandleOp(context, op);
  if (op.ok()) {
    // The worker copies the bytes once, straight into the serialized
    // answer (a ReadResponse is its one `data` field).
    op->destination = [this, call](uint64_t length) -> absl::StatusOr<char*> {
      if (absl::Status s = HoldPayload(call, length); !s.ok()) return s;
      return call->PrepareAnswer(ReadResponseHeader(length), length);
    };
    op->done = [this, context, call, handle_call = *std::move(handle_call)](
                   absl::StatusOr<absl::string_view> data) {
      CountAnswer(context, handle_call, data.status());
      if (!data.ok()) {
        call->FinishWith(data.status());
        return;
      }
      if (data->size() > Worker::kCopyPieceBytes) {
        // gRPC writes as much of an answer as the socket takes inside
        // Finish: for 64 MiB, milliseconds that the worker must not spend.
        call->FinishWithPreparedAnswerElsewhere();
      } else {
        call->FinishWithPreparedAnswer();
      }
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
  PayloadHolder* holder = nullptr;
  v1::BatchResponse* response = nullptr;
  Caller caller;
  // The unknown-handle limiter's key of the caller, once needed.
  std::string key;
  // By result: the operation took a token of the limiter.
  std::vector<bool> admitted;
  // By entry: its result.
  std::vector<uint32_t> entry_results;
  // Tokens taken by entries not answered yet.
  size_t admitted_pending = 0;
  // Whether Admit looks at the limiter: someone owed it when the batch was
  // made, or an entry of this batch named an unknown handle (its client may
  // owe it since). A batch of known handles pays one branch per entry.
  bool watch_limiter = false;
  // Bytes of the answer set aside so far: kResultReserveBytes per result,
  // plus the data of Reads.
  uint64_t answer_bytes = 0;
  // Payload budget taken for Reads and not used yet (taken in chunks, not
  // once per Read).
  uint64_t budget_left = 0;
  // The Reads' bytes in the answer.
  uint64_t read_bytes = 0;

  v1::BatchResult* result(uint32_t index) {
    return response->mutable_results(static_cast<int>(index));
  }

  const std::string& Key() {
    if (key.empty()) {
      key = caller.limiter_key.empty()
                ? service->identity_.Of(*context).limiter_key
                : caller.limiter_key;
    }
    return key;
  }

  // Before the entry at `position` (one naming a handle) runs: while some
  // client owes the limiter, it takes a token, as a call would; refused
  // when its client has none. On the worker thread, right before the
  // lookup, so that a batch of guesses is braked from the guess that ran
  // its client into debt on.
  absl::Status Admit(size_t position) {
    if (!watch_limiter) return absl::OkStatus();
    UnknownHandleLimiter& limiter = service->unknown_handles_;
    const absl::Time now = UnknownHandleLimiter::Now();
    if (!limiter.anyone_in_debt(now)) return absl::OkStatus();
    if (!limiter.Admit(Key(), now)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "too many unknown handles from ", Key(),
          ": handle operations are refused until its budget refills (",
          limiter.per_second(),
          " per second, --max_unknown_handles_per_second)"));
    }
    admitted[entry_results[position]] = true;
    ++admitted_pending;
    return absl::OkStatus();
  }

  // Settles the limiter for result `index` (an operation naming a handle)
  // and sets its status.
  void Settle(uint32_t index, const absl::Status& status) {
    const bool took = !admitted.empty() && admitted[index];
    if (took) --admitted_pending;
    UnknownHandleLimiter& limiter = service->unknown_handles_;
    if (status.code() == absl::StatusCode::kNotFound) {
      watch_limiter = true;  // this client may be in debt from now on
      limiter.RecordUnknown(Key(), UnknownHandleLimiter::Now(), took);
    } else if (took) {
      limiter.Refund(Key(), UnknownHandleLimiter::Now());
    }
    SetResultStatus(status, kMaxResultMessageBytes, result(index));
  }
};

// The reactor of one BatchStream: each request read is a batch, answered
// by one response in request order. At most `stream_credit` batches are read
// and not yet answered; the stream reads the next request only when one of
// them has been written, so a client that sends faster than poold answers
// waits in HTTP/2 flow control. The reactor deletes itself when gRPC is done
// with the stream, which is after Finish; Finish comes only once every batch
// read has been answered (or failed to be written), so no completion
// callback outlives it. While registered with the service (from the start
// until OnDone), StartDraining may cancel it.
class BatchStream final
    : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  BatchStream(PoolServiceImpl* service, grpc::CallbackServerContext* context)
      : service_(service), context_(context) {
    if (!service_->RegisterStream(this)) {
      {
        absl::MutexLock lock(&mu_);
        finished_ = true;
      }
      Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "server is shutting down"));
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      reading_ = true;
    }
    StartRead(&incoming_);
  }

  // Ends the stream for a shutdown: the client gets UNAVAILABLE once the
  // batches read are answered; a stream waiting for the client's next
  // request is cancelled. Thread-safe.
  void Drain() {
    Next next;
    {
      absl::MutexLock lock(&mu_);
      if (final_status_.ok()) {
        final_status_ = absl::UnavailableError("server is shutting down");
      }
      read_closed_ = true;
      draining_ = true;
      next = AdvanceLocked();
    }
    Start(next);
  }

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override {
    cancelled_.store(true, std::memory_order_release);
  }
  void OnDone() override {
    service_->UnregisterStream(this);
    delete this;
  }

 private:
  // One batch read and not yet answered: its request and results (in an
  // arena, freed as soon as the answer is serialized), the serialized
  // answer, and its share of the payload budget (given back once gRPC has
  // written the answer).
  struct Pending final : PayloadHolder {
    explicit Pending(PayloadBudget* budget) : budget(budget) {}
    ~Pending() override {
      if (held > 0) budget->Give(held);
    }
    bool Hold(uint64_t bytes) override {
      if (!budget->TryTake(bytes)) return false;
      held += bytes;
      return true;
    }
    PayloadBudget* const budget;
    uint64_t held = 0;
    std::unique_ptr<google::protobuf::Arena> arena =
        std::make_unique<google::protobuf::Arena>();
    v1::BatchRequest* request = nullptr;
    v1::BatchResponse* response = nullptr;
    grpc::ByteBuffer answer;
    bool done = false;    // answer is ready (guarded by the stream's mu_)
    bool failed = false;  // it could not be serialized
  };

  // What to start once mu_ is released (a reaction could run inline).
  struct Next {
    bool write = false;
    bool read = false;
    bool cancel = false;
    std::optional<grpc::Status> finish;
  };

  // Completion of `batch` (on the worker thread; on one of gRPC's threads
  // when its reads carry more than Worker::kCopyPieceBytes; or on the
  // reading thread when the batch was refused whole).
  void OnBatchDone(Pending* batch, const absl::Status& status);
  // Stops reading; the stream ends with `status` (unless it already has an
  // error) once every batch read has been answered.
  void EndReading(const absl::Status& status);
  // Decides what to start next. REQUIRES: mu_ held.
  Next AdvanceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts what `next` says; touches nothing of this afterwards (after
  // Finish, gRPC may delete it).
  void Start(const Next& next);

  PoolServiceImpl* const service_;
  grpc::CallbackServerContext* const context_;
  std::atomic<bool> cancelled_{false};
  grpc::ByteBuffer incoming_;  // the read in flight fills it
  absl::Mutex mu_;
  std::deque<std::unique_ptr<Pending>> pending_ ABSL_GUARDED_BY(mu_);
  bool reading_ ABSL_GUARDED_BY(mu_) = false;
  bool read_closed_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // An answer could not be written in order: no later one is.
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  // Drain was called: once every batch read is answered, a read still
  // waiting for the client is cancelled.
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool cancel_sent_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_status_ ABSL_GUARDED_BY(mu_);
};

void BatchStream::OnReadDone(bool ok) {
  if (!ok) {  // the client closed its side, or the stream broke
    EndReading(absl::OkStatus());
    return;
  }
  if (service_->draining_.load(std::memory_order_acquire)) {
    EndReading(absl::UnavailableError("server is shutting down"));
    return;
  }
  if (absl::Status s = service_->CheckBatchSize(incoming_); !s.ok()) {
    EndReading(s);
    return;
  }
  auto batch = std::make_unique<Pending>(&service_->payload_budget_);
  batch->request = google::protobuf::Arena::CreateMessage<v1::BatchRequest>(
      batch->arena.get());
  batch->response = google::protobuf::Arena::CreateMessage<v1::BatchResponse>(
      batch->arena.get());
  if (const grpc::Status parsed =
          grpc::SerializationTraits<v1::BatchRequest>::Deserialize(
              &incoming_, batch->request);
      !parsed.ok()) {
    EndReading(absl::InvalidArgumentError(
        absl::StrCat("a request is not a valid poold.v1.BatchRequest "
                     "(protobuf): ",
                     parsed.error_message())));
    return;
  }
  Pending* raw = batch.get();
  {
    absl::MutexLock lock(&mu_);
    pending_.push_back(std::move(batch));
  }
  service_->SubmitBatch(
      context_, &cancelled_, raw, raw->request, raw->response,
      [this, raw](absl::Status status) { OnBatchDone(raw, status); });
  Next next;
  {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    next = AdvanceLocked();
  }
  Start(next);
}

void BatchStream::EndReading(const absl::Status& status) {
  Next next;
  {
    absl::MutexLock lock(&mu_);
    reading_ = false;
    read_closed_ = true;
    if (final_status_.ok()) final_status_ = status;
    next = AdvanceLocked();
  }
  Start(next);
}

void BatchStream::OnBatchDone(Pending* batch, const absl::Status& status) {
  // Until `done` is set, this thread alone touches the batch: the answer is
  // made here, outside mu_.
  if (!status.ok()) {
    // Refused whole (the channel full, shutting down): every operation
    // says so, and the stream goes on.
    const int count = batch->request->operations_size();
    batch->response->Clear();
    for (int i = 0; i < count; ++i) {
      SetResultStatus(status, PoolServiceImpl::kMaxResultMessageBytes,
                      batch->response->add_results());
    }
  }
  bool own_buffer = false;
  batch->failed =
      !grpc::SerializationTraits<google::protobuf::Message>::Serialize(
           *batch->response, &batch->answer, &own_buffer)
           .ok();
  // The answer is serialized: the messages are no longer needed.
  batch->request = nullptr;
  batch->response = nullptr;
  batch->arena.reset();
  Next next;
  {
    absl::MutexLock lock(&mu_);
    batch->done = true;
    next = AdvanceLocked();
  }
  Start(next);
}

BatchStream::Next BatchStream::AdvanceLocked() {
  Next next;
  while (!writing_ && !pending_.empty() && pending_.front()->done) {
    if (pending_.front()->failed && !broken_) {
      broken_ = true;
      read_closed_ = true;
      final_status_ = absl::InternalError("cannot serialize an answer");
    }
    if (broken_) {
      pending_.pop_front();  // answers after a missing one would mislead
      continue;
    }
    writing_ = true;
    next.write = true;
  }
  if (!reading_ && !read_closed_ &&
      pending_.size() < service_->batch_limits_.stream_credit) {
    reading_ = true;
    next.read = true;
  }
  if (draining_ && reading_ && !writing_ && pending_.empty() && !cancel_sent_) {
    // Everything read is answered, and the client has not closed its side:
    // only a cancellation ends the read now (the client sees CANCELLED).
    cancel_sent_ = true;
    next.cancel = true;
  }
  if (read_closed_ && !reading_ && !writing_ && pending_.empty() &&
      !finished_) {
    finished_ = true;
    next.finish = ToGrpcStatus(final_status_);
  }
  return next;
}

void BatchStream::Start(const Next& next) {
  if (next.write) {
    // The head stays in pending_ (and its buffer alive) until OnWriteDone.
    grpc::ByteBuffer* answer;
    {
      absl::MutexLock lock(&mu_);
      answer = &pending_.front()->answer;
    }
    StartWrite(answer);
  }
  if (next.read) StartRead(&incoming_);
  if (next.cancel) context_->TryCancel();
  if (next.finish.has_value()) Finish(*next.finish);  // last: may delete this
}

void BatchStream::OnWriteDone(bool ok) {
  Next next;
  {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    pending_.pop_front();  // frees its answer, gives its budget back
    if (!ok) {
      // The client is gone: answer what is left (the worker still
      // completes it), read nothing more.
      read_closed_ = true;
    }
    next = AdvanceLocked();
  }
  Start(next);
}

void PoolServiceImpl::StartDraining() {
  absl::MutexLock lock(&streams_mu_);
  draining_.store(true, std::memory_order_release);
  // A stream lives until OnDone, which waits for this lock to unregister.
  for (::poold::BatchStream* stream : streams_) stream->Drain();
}

bool PoolServiceImpl::RegisterStream(::poold::BatchStream* stream) {
  absl::MutexLock lock(&streams_mu_);
  if (draining_.load(std::memory_order_acquire)) return false;
  streams_.insert(stream);
  return true;
}

void PoolServiceImpl::UnregisterStream(::poold::BatchStream* stream) {
  absl::MutexLock lock(&streams_mu_);
  streams_.erase(stream);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>*
PoolServiceImpl::BatchStream(grpc::CallbackServerContext* context) {
  return new ::poold::BatchStream(this, context);
}

absl::Status PoolServiceImpl::CheckBatchSize(
    const grpc::ByteBuffer& raw) const {
  if (CountBatchOperations(raw, batch_limits_.max_operations) <=
      batch_limits_.max_operations) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("a batch holds at most ", batch_limits_.max_operations,
                   " operations (--max_batch_operations); split it"));
}

grpc::ServerUnaryReactor* PoolServiceImpl::Batch(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  if (absl::Status s = CheckBatchSize(*request); !s.ok()) {
    auto* call = new UnaryCall(&payload_budget_, response);
    call->FinishWith(s);
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
  SubmitBatch(context, call->cancelled_flag(), call, request, response,
              [call](absl::Status status) { call->FinishWith(status); });
  return call;
}

void PoolServiceImpl::SubmitBatch(grpc::CallbackServerContext* context,
                                  const std::atomic<bool>* cancelled,
                                  PayloadHolder* holder,
                                  const v1::BatchRequest* request,
                                  v1::BatchResponse* response,
                                  Done<absl::Status> finish) {
  if (draining_.load(std::memory_order_acquire)) {
    std::move(finish)(absl::UnavailableError("server is shutting down"));
    return;
  }
  const int count = request->operations_size();
  uint64_t data_bytes = 0;
  for (const v1::BatchOperation& operation : request->operations()) {
    data_bytes +=
        operation.allocate().data().size() + operation.write().data().size();
  }
  if (absl::Status s = HoldPayload(holder, data_bytes); !s.ok()) {
    std::move(finish)(s);
    return;
  }
  auto state = std::make_unique<BatchState>();
  state->service = this;
  state->context = context;
  state->holder = holder;
  state->response = response;
  if (identity_.enabled()) state->caller = identity_.Of(*context);
  if (unknown_handles_.enabled()) {
    state->admitted.assign(count, false);
    state->watch_limiter =
        unknown_handles_.anyone_in_debt(UnknownHandleLimiter::Now());
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
      state->entry_results.push_back(static_cast<uint32_t>(i));
    }
  }
  if (batch.entries.empty()) {
    std::move(finish)(absl::OkStatus());
    return;
  }
  if (unknown_handles_.enabled()) {
    batch.admit = [state = state.get()](size_t position) {
      return state->Admit(position);
    };
  }
  batch.done = [this, state = std::move(state),
                finish = std::move(finish)](absl::Status status) mutable {
    // Refused as a whole: the tokens its entries took come back.
    for (; state->admitted_pending > 0; --state->admitted_pending) {
      unknown_handles_.Refund(state->Key(), UnknownHandleLimiter::Now());
    }
    if (state->read_bytes > Worker::kCopyPieceBytes) {
      // Serializing the answer copies the bytes read, and gRPC writes what
      // the socket takes right away: milliseconds for many MiB, which the
      // worker must not spend (its copies went in pieces).
      FinishOnGrpcThread(std::move(finish), status);
      return;
    }
    std::move(finish)(status);
  };
  Command command;
  command.deadline = DeadlineFromGrpc(context->deadline());
  command.cancelled = cancelled;
  command.op = std::move(batch);
  // A refused command is completed right here (RESOURCE_EXHAUSTED or
  // UNAVAILABLE).
  worker_->Submit(std::move(command));
}

std::optional<BatchEntry> PoolServiceImpl::MakeBatchEntry(
    BatchState* state, const v1::BatchOperation& operation, uint32_t index) {
  // The entries' callbacks capture no more than fits in AnyInvocable's
  // inline storage (a pointer and an index): no allocation per entry.
  absl::Status refusal;
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
      ApplyCaller(state->caller, *op);
      op->done = [state, index](absl::Status status) {
        state->Settle(index, status);
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
      ApplyCaller(state->caller, *op);
      // The worker appends the bytes to the answer (in pieces, between
      // other commands, when they are many).
      op->sink = [state,
                  index](uint64_t length) -> absl::StatusOr<std::string*> {
        return state->service->PrepareBatchRead(state, length,
                                                state->result(index));
      };
      op->done = [state, index](absl::StatusOr<absl::string_view> data) {
        // A read stopped midway leaves no bytes in the answer.
        if (!data.ok()) state->result(index)->clear_result();
        state->Settle(index, data.status());
      };
      return BatchEntry(*std::move(op));
    }
    case v1::BatchOperation::kFree: {
      absl::StatusOr<FreeOp> op = FreeOpFromProto(operation.free());
      if (!op.ok()) {
        refusal = op.status();
        break;
      }
      ApplyCaller(state->caller, *op);
      op->done = [state, index](absl::Status status) {
        state->Settle(index, status);
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

absl::StatusOr<std::string*> PoolServiceImpl::PrepareBatchRead(
    BatchState* state, uint64_t length, v1::BatchResult* result) {
  if (state->answer_bytes + length > batch_limits_.max_answer_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the batch's answer would hold more than ",
                     batch_limits_.max_answer_bytes,
                     " bytes (--max_message_bytes) with these ", length,
                     ": read this block in a later batch"));
  }
  if (state->budget_left < length) {
    // Payload budget for this Read and (in one take) for some that follow.
    const uint64_t needed = length - state->budget_left;
    const uint64_t chunk = std::max<uint64_t>(needed, kBudgetChunkBytes);
    if (state->holder->Hold(chunk)) {
      state->budget_left += chunk;
    } else if (absl::Status s = HoldPayload(state->holder, needed); !s.ok()) {
      return s;
    } else {
      state->budget_left += needed;
    }
  }
  state->budget_left -= length;
  state->answer_bytes += length;
  state->read_bytes += length;
  std::string* data = result->mutable_read()->mutable_data();
  data->clear();
  data->reserve(length);
  return data;
}

}  // namespace poold
