// PoolServiceImpl: the gRPC callback service of poold.v1.PoolService. Each
// handler validates its request, builds a Command and hands it to the worker;
// the worker's completion callback fills the response and finishes the RPC.
#ifndef POOLD_SERVER_POOL_SERVICE_IMPL_H_
#define POOLD_SERVER_POOL_SERVICE_IMPL_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "server/caller_identity.h"
#include "server/payload_budget.h"
#include "server/stats_board.h"
#include "server/unknown_handle_limiter.h"
#include "worker/worker.h"

namespace poold {

class UnaryCall;
class BatchStream;

// Holds a call's share of the payload budget until gRPC is done with its
// bytes.
class PayloadHolder {
 public:
  virtual ~PayloadHolder() = default;
  // Takes `bytes` more of the budget; false (nothing taken) when refused.
  virtual bool Hold(uint64_t bytes) = 0;
};

// Handlers never block: a full channel answers RESOURCE_EXHAUSTED at once,
// and after StartDraining every RPC answers UNAVAILABLE. The block bytes that
// calls in flight hold (an Allocate's or a Write's data from the handler on,
// a Read's data from its answer on, each until gRPC is done with the call)
// stay within `max_payload_bytes_in_flight`: a call that would pass it
// answers RESOURCE_EXHAUSTED, unless nothing is held at all.
// PoolService with every method taking raw bytes (see Allocate below).
using RawPoolService = v1::PoolService::WithRawCallbackMethod_Allocate<
    v1::PoolService::WithRawCallbackMethod_Write<
        v1::PoolService::WithRawCallbackMethod_Read<
            v1::PoolService::WithRawCallbackMethod_Free<
                v1::PoolService::WithRawCallbackMethod_GetStats<
                    v1::PoolService::WithRawCallbackMethod_AnalyzeFragmentation<
                        v1::PoolService::
                            WithRawCallbackMethod_TriggerDefragmentation<
                                v1::PoolService::WithRawCallbackMethod_Batch<
                                    v1::PoolService::
                                        WithRawCallbackMethod_BatchStream<
                                            v1::PoolService::Service>>>>>>>>>;

// Who may name which handle:
struct HandleRules {
  // Calls may carry TLS client certificates (mutual TLS): a block belongs to
  // the identity that allocated it.
  bool identities = false;
  // Identities that may name every block; when not empty (and identities),
  // only they and unix socket clients may call GetStats,
  // AnalyzeFragmentation and TriggerDefragmentation.
  std::vector<std::string> operators;
  // Unknown handles a client may name per second in the long run (after a
  // burst of 10 s worth); past that its handle calls answer
  // RESOURCE_EXHAUSTED. 0: no limit.
  double unknown_handles_per_second = 0;
};

// How large a Batch may be.
struct BatchLimits {
  // Operations in one BatchRequest (--max_batch_operations).
  size_t max_operations = 1024;
  // Largest answer gRPC may send (--max_message_bytes): a batch's Reads stop
  // short of it.
  uint64_t max_answer_bytes = (64 + 1) << 20;
  // Batches of one BatchStream read and not yet answered
  // (--max_stream_batches_in_flight): the stream reads no further request
  // until one is answered.
  size_t stream_credit = 4;
};

// A call that names a handle, as admitted.
struct HandleCall {
  Caller caller;          // empty (anonymous, no key yet) on the fast path
  bool admitted = false;  // took a token of the limiter
};

class PoolServiceImpl final : public RawPoolService {
 public:
  // `worker` must outlive every RPC of this service, and so must `board`,
  // where GetStats reads the statistics the worker publishes (unless the
  // request asks for consistent ones).
  // `max_payload_bytes_in_flight` == 0: no limit.
  PoolServiceImpl(Worker* worker, const StatsBoard* board,
                  uint64_t max_block_bytes,
                  uint64_t max_payload_bytes_in_flight = 0,
                  const HandleRules& handle_rules = HandleRules(),
                  const BatchLimits& batch_limits = BatchLimits());

  // Bytes a batch's answer sets aside for each result besides the data of
  // its Reads (framing, code, a message of at most kMaxResultMessageBytes).
  static constexpr uint64_t kResultReserveBytes = 512;
  static constexpr size_t kMaxResultMessageBytes = 400;

  PoolServiceImpl(const PoolServiceImpl&) = delete;
  PoolServiceImpl& operator=(const PoolServiceImpl&) = delete;

  // From now on every RPC answers UNAVAILABLE ("server is shutting down");
  // open BatchStreams end once the batches they read are answered (a
  // stream waiting for its client's next request is cancelled).
  // Thread-safe.
  void StartDraining();

  // The transport's counters (payload held by calls in flight) now.
  // Thread-safe.
  void TransportStatsToProto(v1::TransportStats* transport) const;

  // Where TransportStatsToProto reads the connection counters (they are the
  // TCP acceptor's); none: zeros. Call before the server starts; `source`
  // must be thread-safe.
  void SetConnectionStats(std::function<void(v1::TransportStats*)> source) {
    connection_stats_ = std::move(source);
  }

  // Each RPC takes its request as bytes and parses it here, so that bytes
  // that are no valid message get INVALID_ARGUMENT with a message (gRPC
  // 1.51's typed callback handlers answer UNIMPLEMENTED, without one).
  grpc::ServerUnaryReactor* Allocate(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Write(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Read(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Free(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const grpc::ByteBuffer* request,
                                     grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* AnalyzeFragmentation(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* TriggerDefragmentation(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
      grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Batch(grpc::CallbackServerContext* context,
                                  const grpc::ByteBuffer* request,
                                  grpc::ByteBuffer* response) override;
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* BatchStream(
      grpc::CallbackServerContext* context) override;

 private:
  struct BatchState;
  friend class ::poold::BatchStream;

  // Records an open stream, so that StartDraining can end it; false (not
  // recorded) once draining. Thread-safe.
  bool RegisterStream(::poold::BatchStream* stream);
  void UnregisterStream(::poold::BatchStream* stream);

  // Runs the batch `request` on the worker, filling `response` (one result
  // per operation), then calls `finish` once: OK, or the error that refused
  // the whole batch before any operation ran. `cancelled` (may be null)
  // and `holder` must outlive `finish`'s call; so must `request` and
  // `response`, which `finish` may then free.
  void SubmitBatch(grpc::CallbackServerContext* context,
                   const std::atomic<bool>* cancelled, PayloadHolder* holder,
                   const v1::BatchRequest* request, v1::BatchResponse* response,
                   Done<absl::Status> finish);
  // The operations of the serialized BatchRequest `raw`, or INVALID_ARGUMENT
  // when there are more than batch_limits_.max_operations.
  absl::Status CheckBatchSize(const grpc::ByteBuffer& raw) const;

  // Parses `raw_request` as RequestT (INVALID_ARGUMENT when it is not
  // one), then runs `serve` with a reactor that owns both messages and
  // serializes the response into `raw_response` when it finishes OK.
  template <typename RequestT, typename ResponseT>
  grpc::ServerUnaryReactor* Serve(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw_request,
      grpc::ByteBuffer* raw_response,
      grpc::ServerUnaryReactor* (PoolServiceImpl::*serve)(
          grpc::CallbackServerContext*, UnaryCall*, const RequestT*,
          ResponseT*));

  // The RPCs on parsed messages; each finishes `call`.
  grpc::ServerUnaryReactor* ServeAllocate(grpc::CallbackServerContext* context,
                                          UnaryCall* call,
                                          const v1::AllocateRequest* request,
                                          v1::AllocateResponse* response);
  grpc::ServerUnaryReactor* ServeWrite(grpc::CallbackServerContext* context,
                                       UnaryCall* call,
                                       const v1::WriteRequest* request,
                                       v1::WriteResponse* response);
  grpc::ServerUnaryReactor* ServeRead(grpc::CallbackServerContext* context,
                                      UnaryCall* call,
                                      const v1::ReadRequest* request,
                                      v1::ReadResponse* response);
  grpc::ServerUnaryReactor* ServeFree(grpc::CallbackServerContext* context,
                                      UnaryCall* call,
                                      const v1::FreeRequest* request,
                                      v1::FreeResponse* response);
  grpc::ServerUnaryReactor* ServeGetStats(grpc::CallbackServerContext* context,
                                          UnaryCall* call,
                                          const v1::GetStatsRequest* request,
                                          v1::GetStatsResponse* response);
  grpc::ServerUnaryReactor* ServeAnalyzeFragmentation(
      grpc::CallbackServerContext* context, UnaryCall* call,
      const v1::AnalyzeFragmentationRequest* request,
      v1::FragmentationReport* response);
  grpc::ServerUnaryReactor* ServeTriggerDefragmentation(
      grpc::CallbackServerContext* context, UnaryCall* call,
      const v1::TriggerDefragmentationRequest* request,
      v1::DefragReport* response);
  grpc::ServerUnaryReactor* ServeBatch(grpc::CallbackServerContext* context,
                                       UnaryCall* call,
                                       const v1::BatchRequest* request,
                                       v1::BatchResponse* response);

  // The entry of a batch for `operation`, whose result goes to result
  // `index` of the answer; an invalid operation gets its result here and no
  // entry.
  std::optional<BatchEntry> MakeBatchEntry(BatchState* state,
                                           const v1::BatchOperation& operation,
                                           uint32_t index);
  // Room for a Read's `length` bytes in a batch's answer: takes them from
  // the payload budget and the answer's room and returns the (empty) string
  // of `result` that they go to, with room reserved for them; or says why
  // not.
  absl::StatusOr<std::string*> PrepareBatchRead(BatchState* state,
                                                uint64_t length,
                                                v1::BatchResult* result);

  // Finishes `call` at once when draining or when `op` is an error;
  // otherwise submits `op` (whose `done` finishes `call`) to the worker,
  // which completes it exactly once. Returns `call`.
  template <typename OpT>
  grpc::ServerUnaryReactor* Dispatch(grpc::CallbackServerContext* context,
                                     UnaryCall* call, absl::StatusOr<OpT> op);

  // Takes `bytes` of the payload budget for `call` (given back when gRPC is
  // done with it); on refusal, RESOURCE_EXHAUSTED saying why.
  absl::Status HoldPayload(PayloadHolder* holder, uint64_t bytes);

  // Who `context`'s call (one naming a handle) comes from; while some
  // client owes the unknown-handle limiter, the call takes a token
  // (RESOURCE_EXHAUSTED when its client has none left).
  absl::StatusOr<HandleCall> AdmitHandleCall(
      grpc::CallbackServerContext* context);
  // AdmitHandleCall for a valid `op`, whose handle it then rewrites as the
  // engine knows it; a refusal goes into `op` too.
  template <typename OpT>
  absl::StatusOr<HandleCall> AdmitHandleOp(grpc::CallbackServerContext* context,
                                           absl::StatusOr<OpT>& op);
  // Tells the limiter how the call ended: an unknown handle is counted, a
  // known one gives its token back.
  void CountAnswer(grpc::CallbackServerContext* context,
                   const HandleCall& handle_call, const absl::Status& status) {
    CountAnswer(context, handle_call.caller, handle_call.admitted, status);
  }
  void CountAnswer(grpc::CallbackServerContext* context, const Caller& caller,
                   bool admitted, const absl::Status& status);
  // Takes `caller`'s owner mask off `op`'s handle, or (an operator) lets the
  // worker match it against every owner.
  template <typename OpT>
  static void ApplyCaller(const Caller& caller, OpT& op);

  // OK unless only operators may call `rpc` and `context`'s caller is none
  // (PERMISSION_DENIED).
  absl::Status RequireOperator(grpc::CallbackServerContext& context,
                               absl::string_view rpc) const;

  // Answers `request` from the board's latest snapshot, at once.
  void AnswerFromBoard(UnaryCall* call, const v1::GetStatsRequest& request);

  Worker* const worker_;
  const StatsBoard* const board_;
  const uint64_t max_block_bytes_;
  std::atomic<bool> draining_{false};
  PayloadBudget payload_budget_;
  const CallerIdentity identity_;
  const bool operators_only_;
  UnknownHandleLimiter unknown_handles_;
  std::atomic<uint64_t> payload_refusals_{0};
  std::function<void(v1::TransportStats*)> connection_stats_;
  const BatchLimits batch_limits_;
  // Open BatchStreams (from their start until OnDone).
  absl::Mutex streams_mu_;
  absl::flat_hash_set<::poold::BatchStream*> streams_
      ABSL_GUARDED_BY(streams_mu_);
};

}  // namespace poold

#endif  // POOLD_SERVER_POOL_SERVICE_IMPL_H_
