// PoolServiceImpl: the gRPC callback service of poold.v1.PoolService. Each
// handler validates its request, builds a Command and hands it to the worker;
// the worker's completion callback fills the response and finishes the RPC.
#ifndef POOLD_SERVER_POOL_SERVICE_IMPL_H_
#define POOLD_SERVER_POOL_SERVICE_IMPL_H_

#include <atomic>
#include <cstdint>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"
#include "poold/v1/pool_service.grpc.pb.h"
#include "worker/worker.h"

namespace poold {

class UnaryCall;

// Handlers never block: a full channel answers RESOURCE_EXHAUSTED at once,
// and after StartDraining every RPC answers UNAVAILABLE.
class PoolServiceImpl final : public v1::PoolService::CallbackService {
 public:
  // `worker` must outlive every RPC of this service.
  PoolServiceImpl(Worker* worker, uint64_t max_block_bytes);

  PoolServiceImpl(const PoolServiceImpl&) = delete;
  PoolServiceImpl& operator=(const PoolServiceImpl&) = delete;

  // From now on every RPC answers UNAVAILABLE ("server is shutting down").
  // Thread-safe.
  void StartDraining();

  grpc::ServerUnaryReactor* Allocate(grpc::CallbackServerContext* context,
                                     const v1::AllocateRequest* request,
                                     v1::AllocateResponse* response) override;
  grpc::ServerUnaryReactor* Write(grpc::CallbackServerContext* context,
                                  const v1::WriteRequest* request,
                                  v1::WriteResponse* response) override;
  grpc::ServerUnaryReactor* Read(grpc::CallbackServerContext* context,
                                 const v1::ReadRequest* request,
                                 v1::ReadResponse* response) override;
  grpc::ServerUnaryReactor* Free(grpc::CallbackServerContext* context,
                                 const v1::FreeRequest* request,
                                 v1::FreeResponse* response) override;
  grpc::ServerUnaryReactor* GetStats(grpc::CallbackServerContext* context,
                                     const v1::GetStatsRequest* request,
                                     v1::GetStatsResponse* response) override;
  grpc::ServerUnaryReactor* AnalyzeFragmentation(
      grpc::CallbackServerContext* context,
      const v1::AnalyzeFragmentationRequest* request,
      v1::FragmentationReport* response) override;
  grpc::ServerUnaryReactor* TriggerDefragmentation(
      grpc::CallbackServerContext* context,
      const v1::TriggerDefragmentationRequest* request,
      v1::DefragReport* response) override;

 private:
  // Finishes `call` at once when draining or when `op` is an error;
  // otherwise submits `op` (whose `done` finishes `call`) to the worker,
  // which completes it exactly once. Returns `call`.
  template <typename OpT>
  grpc::ServerUnaryReactor* Dispatch(grpc::CallbackServerContext* context,
                                     UnaryCall* call, absl::StatusOr<OpT> op);

  Worker* const worker_;
  const uint64_t max_block_bytes_;
  std::atomic<bool> draining_{false};
};

}  // namespace poold

#endif  // POOLD_SERVER_POOL_SERVICE_IMPL_H_
