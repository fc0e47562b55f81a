// poolctl health [--service=NAME]: the grpc.health.v1 status, with
// grpc_health_probe's exit codes (0 SERVING, 4 anything else).
#include "absl/flags/flag.h"
#include "client/commands/commands.h"
#include "client/exit_codes.h"
#include "client/poolctl_flags.h"

namespace poold::client {

int RunHealth(CommandEnv& env, const Args& /*args*/) {
  using ::grpc::health::v1::HealthCheckResponse;
  if (int code = env.Connect(); code != kExitOk) return code;
  absl::StatusOr<HealthCheckResponse::ServingStatus> status =
      env.client().Health(absl::GetFlag(FLAGS_service));
  if (!status.ok()) return env.Failed(status.status());
  if (int code = env.Print(env.formatter().Health(*status)); code != kExitOk) {
    return code;
  }
  return *status == HealthCheckResponse::SERVING ? kExitOk : kExitNotServing;
}

}  // namespace poold::client
