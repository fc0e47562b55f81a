// poolctl free HANDLE: free a block.
#include "client/commands/commands.h"
#include "client/exit_codes.h"
#include "client/poolctl_args.h"

namespace poold::client {

int RunFree(CommandEnv& env, const Args& args) {
  absl::StatusOr<uint64_t> handle = ParseHandle(args.at(0));
  if (!handle.ok()) return env.UsageError(handle.status());
  if (int code = env.Connect(); code != kExitOk) return code;
  absl::Status status = env.client().Free(*handle);
  if (!status.ok()) return env.Failed(status);
  return env.Print(env.formatter().Free(*handle));
}

}  // namespace poold::client
