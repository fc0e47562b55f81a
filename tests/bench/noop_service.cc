// NoopService: answers Ping at once on the gRPC thread.
#include "tests/bench/noop_service.h"

#include <algorithm>

namespace poold::bench {

grpc::ServerUnaryReactor* NoopService::Ping(
    grpc::CallbackServerContext* context, const v1::PingRequest* request,
    v1::PingResponse* response) {
  // As a Read fills its response from the block: one string of the asked
  // length.
  response->mutable_payload()->assign(
      std::min(request->response_bytes(), kMaxResponseBytes), 'p');
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace poold::bench
