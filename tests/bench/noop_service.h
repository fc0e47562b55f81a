// NoopService: the benchmark-only poold.bench.v1.Noop service (noop.proto).
// Its Ping answers at once on the gRPC thread, so a Ping costs what gRPC
// itself costs for a unary call on the server it runs in.
#ifndef POOLD_TESTS_BENCH_NOOP_SERVICE_H_
#define POOLD_TESTS_BENCH_NOOP_SERVICE_H_

#include <cstdint>

#include "grpcpp/grpcpp.h"
#include "noop.grpc.pb.h"

namespace poold::bench {

// Stateless and thread-safe; serve it with PooldServer::Options
// extra_services (it must outlive the server).
class NoopService final : public v1::Noop::CallbackService {
 public:
  // Largest response payload a Ping returns.
  static constexpr uint32_t kMaxResponseBytes = 1 << 20;

  // Fills `response` with min(request->response_bytes(), kMaxResponseBytes)
  // bytes and finishes OK, without leaving the calling gRPC thread.
  grpc::ServerUnaryReactor* Ping(grpc::CallbackServerContext* context,
                                 const v1::PingRequest* request,
                                 v1::PingResponse* response) override;
};

}  // namespace poold::bench

#endif  // POOLD_TESTS_BENCH_NOOP_SERVICE_H_
