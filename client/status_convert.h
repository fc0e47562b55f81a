// The client's one mapping from grpc::Status (what an RPC returns) to
// absl::Status (what PoolClient and poolctl use everywhere).
#ifndef POOLD_CLIENT_STATUS_CONVERT_H_
#define POOLD_CLIENT_STATUS_CONVERT_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace poold::client {

// Returns the absl::Status with the same code and message as `status`.
// gRPC's error details are dropped. A code outside the 17 canonical ones
// becomes UNKNOWN.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace poold::client

#endif  // POOLD_CLIENT_STATUS_CONVERT_H_
