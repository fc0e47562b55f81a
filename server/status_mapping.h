// The one mapping from absl::Status (used everywhere inside poold) to
// grpc::Status (what the RPCs answer). DESIGN.md, rule 5.
#ifndef POOLD_SERVER_STATUS_MAPPING_H_
#define POOLD_SERVER_STATUS_MAPPING_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace poold {

// Returns the gRPC status with the same code and message as `status`.
// Payloads are dropped. An unknown code becomes UNKNOWN.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace poold

#endif  // POOLD_SERVER_STATUS_MAPPING_H_
