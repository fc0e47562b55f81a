// TestPoolService: an in-process poold.v1.PoolService for the client's unit
// tests. It keeps blocks in a map, answers like poold's contract for the
// data RPCs (NOT_FOUND, OUT_OF_RANGE), records the last requests and their
// deadlines, and can be told to fail every call with a given status.
#ifndef POOLD_TESTS_UNIT_CLIENT_TEST_POOL_SERVICE_H_
#define POOLD_TESTS_UNIT_CLIENT_TEST_POOL_SERVICE_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "poold/v1/pool_service.grpc.pb.h"

namespace poold::client::testing {

class TestPoolService final : public v1::PoolService::Service {
 public:
  grpc::Status Allocate(grpc::ServerContext* context,
                        const v1::AllocateRequest* request,
                        v1::AllocateResponse* response) override;
  grpc::Status Write(grpc::ServerContext* context,
                     const v1::WriteRequest* request,
                     v1::WriteResponse* response) override;
  grpc::Status Read(grpc::ServerContext* context,
                    const v1::ReadRequest* request,
                    v1::ReadResponse* response) override;
  grpc::Status Free(grpc::ServerContext* context,
                    const v1::FreeRequest* request,
                    v1::FreeResponse* response) override;
  grpc::Status GetStats(grpc::ServerContext* context,
                        const v1::GetStatsRequest* request,
                        v1::GetStatsResponse* response) override;
  grpc::Status AnalyzeFragmentation(
      grpc::ServerContext* context,
      const v1::AnalyzeFragmentationRequest* request,
      v1::FragmentationReport* response) override;
  grpc::Status TriggerDefragmentation(
      grpc::ServerContext* context,
      const v1::TriggerDefragmentationRequest* request,
      v1::DefragReport* response) override;
  // Runs each operation as its unary method would, one result each; the
  // whole call fails only as every call does (FailWith).
  grpc::Status Batch(grpc::ServerContext* context,
                     const v1::BatchRequest* request,
                     v1::BatchResponse* response) override;

  // Every later call answers `status` (OK: normal service again).
  void FailWith(grpc::Status status);
  // Fails the Free calls after `frees` successful ones.
  void FailFreesAfter(uint64_t frees);
  // Refuses every allocate operation of a Batch after `allocations`
  // successful ones with RESOURCE_EXHAUSTED, as poold's memory limit does
  // (an Allocate call is still served).
  void RefuseBatchAllocationsAfter(uint64_t allocations);
  // Fails every Allocate call (and allocate operation) with
  // RESOURCE_EXHAUSTED once `allocations` blocks exist in all.
  void FailAllocationsAfter(uint64_t allocations);

  // Live blocks by handle.
  std::map<uint64_t, std::string> Blocks();
  uint64_t allocations();
  uint64_t frees();
  // Batch calls answered.
  uint64_t batches();
  // The last request of each kind, and the last call's deadline.
  v1::GetStatsRequest last_stats_request();
  v1::AnalyzeFragmentationRequest last_analyze_request();
  v1::TriggerDefragmentationRequest last_defrag_request();
  std::chrono::system_clock::time_point last_deadline();

 private:
  // Notes the deadline; returns the status calls must fail with, if any.
  std::optional<grpc::Status> Enter(grpc::ServerContext* context);

  absl::Mutex mu_;
  std::map<uint64_t, std::string> blocks_ ABSL_GUARDED_BY(mu_);
  uint64_t next_handle_ ABSL_GUARDED_BY(mu_) = 1000;
  uint64_t allocations_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t frees_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t batches_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<uint64_t> frees_allowed_ ABSL_GUARDED_BY(mu_);
  std::optional<uint64_t> batch_allocations_allowed_ ABSL_GUARDED_BY(mu_);
  std::optional<uint64_t> allocations_allowed_ ABSL_GUARDED_BY(mu_);
  grpc::Status fail_with_ ABSL_GUARDED_BY(mu_);
  v1::GetStatsRequest last_stats_ ABSL_GUARDED_BY(mu_);
  v1::AnalyzeFragmentationRequest last_analyze_ ABSL_GUARDED_BY(mu_);
  v1::TriggerDefragmentationRequest last_defrag_ ABSL_GUARDED_BY(mu_);
  std::chrono::system_clock::time_point last_deadline_ ABSL_GUARDED_BY(mu_);
};

// A gRPC server on a free loopback port with a TestPoolService and gRPC's
// default health service (SERVING until told otherwise).
class TestServer {
 public:
  TestServer();
  ~TestServer();

  // Whether it started (it listens on target()).
  bool ok() const { return server_ != nullptr; }
  // What the health service answers for every service: SERVING or
  // NOT_SERVING.
  void SetServing(bool serving);

  TestPoolService& service() { return service_; }
  // "127.0.0.1:PORT".
  const std::string& target() const { return target_; }

 private:
  TestPoolService service_;
  std::unique_ptr<grpc::Server> server_;
  std::string target_;
};

}  // namespace poold::client::testing

#endif  // POOLD_TESTS_UNIT_CLIENT_TEST_POOL_SERVICE_H_
