// poolctl's exit codes (as grpc_health_probe's for `health`). Documented in
// `poolctl --help`, README.md and docs/POOLCTL.md.
#ifndef POOLD_CLIENT_EXIT_CODES_H_
#define POOLD_CLIENT_EXIT_CODES_H_

namespace poold::client {

enum ExitCode : int {
  // Success (health: SERVING).
  kExitOk = 0,
  // Usage: unknown subcommand or flag, bad flag value or argument, a file
  // named by a flag cannot be read.
  kExitUsage = 1,
  // Cannot connect: nothing answers at the target, or the connection was
  // not up within --connect_timeout.
  kExitCannotConnect = 2,
  // Connected, but the RPC failed (the server's error code is printed), or
  // its result could not be written out.
  kExitRpcFailed = 3,
  // health: the server answered, with a status other than SERVING.
  kExitNotServing = 4,
};

}  // namespace poold::client

#endif  // POOLD_CLIENT_EXIT_CODES_H_
