// poolctl write HANDLE [--offset=N] --data=TEXT|@FILE: overwrite bytes of a
// block.
#include "absl/flags/flag.h"
#include "client/commands/commands.h"
#include "client/exit_codes.h"
#include "client/poolctl_args.h"
#include "client/poolctl_flags.h"

namespace poold::client {

int RunWrite(CommandEnv& env, const Args& args) {
  absl::StatusOr<uint64_t> handle = ParseHandle(args.at(0));
  if (!handle.ok()) return env.UsageError(handle.status());
  const std::string data_flag = absl::GetFlag(FLAGS_data);
  if (data_flag.empty()) {
    return env.UsageError(absl::InvalidArgumentError("write needs --data"));
  }
  absl::StatusOr<std::string> data = ResolveData(data_flag);
  if (!data.ok()) return env.UsageError(data.status());
  const uint64_t offset = absl::GetFlag(FLAGS_offset);
  if (int code = env.Connect(); code != kExitOk) return code;
  absl::Status status = env.client().Write(*handle, offset, *data);
  if (!status.ok()) return env.Failed(status);
  return env.Print(env.formatter().Write(*handle, offset, data->size()));
}

}  // namespace poold::client
