// poolctl alloc [--size=N] [--data=TEXT|@FILE]: allocate one block.
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "client/commands/commands.h"
#include "client/exit_codes.h"
#include "client/poolctl_args.h"
#include "client/poolctl_flags.h"

namespace poold::client {

int RunAlloc(CommandEnv& env, const Args& /*args*/) {
  const std::string size_flag = absl::GetFlag(FLAGS_size);
  const std::string data_flag = absl::GetFlag(FLAGS_data);
  if (size_flag.empty() && data_flag.empty()) {
    return env.UsageError(
        absl::InvalidArgumentError("alloc needs --size, --data or both"));
  }
  uint64_t size = 0;
  if (!size_flag.empty()) {
    absl::StatusOr<uint64_t> parsed = ParseByteSize(size_flag);
    if (!parsed.ok()) return env.UsageError(parsed.status());
    size = *parsed;
  }
  std::string data;
  if (!data_flag.empty()) {
    absl::StatusOr<std::string> resolved = ResolveData(data_flag);
    if (!resolved.ok()) return env.UsageError(resolved.status());
    data = *std::move(resolved);
  }
  if (size > 0 && data.size() > size) {
    return env.UsageError(absl::InvalidArgumentError(absl::StrCat(
        "--data has ", data.size(), " bytes, more than --size=", size)));
  }
  if (int code = env.Connect(); code != kExitOk) return code;
  absl::StatusOr<v1::AllocateResponse> block =
      env.client().Allocate(size, data);
  if (!block.ok()) return env.Failed(block.status());
  return env.Print(env.formatter().Allocation(*block));
}

}  // namespace poold::client
