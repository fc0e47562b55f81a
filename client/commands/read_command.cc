// poolctl read HANDLE [--offset=N] [--length=N] [--out=FILE]: the bytes of
// a block, raw on stdout or into a file.
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "client/commands/commands.h"
#include "client/exit_codes.h"
#include "client/poolctl_args.h"
#include "client/poolctl_flags.h"

namespace poold::client {

int RunRead(CommandEnv& env, const Args& args) {
  absl::StatusOr<uint64_t> handle = ParseHandle(args.at(0));
  if (!handle.ok()) return env.UsageError(handle.status());
  const std::string out_path = absl::GetFlag(FLAGS_out);
  if (int code = env.Connect(); code != kExitOk) return code;
  absl::StatusOr<std::string> data = env.client().Read(
      *handle, absl::GetFlag(FLAGS_offset), absl::GetFlag(FLAGS_length));
  if (!data.ok()) return env.Failed(data.status());
  if (out_path.empty()) return env.Print(env.formatter().Read(*data));

  std::ofstream out(out_path, std::ios::binary | std::ios::trunc);
  out.write(data->data(), static_cast<std::streamsize>(data->size()));
  out.close();
  if (!out) {
    return env.Failed(absl::DataLossError(
        absl::StrCat("cannot write ", data->size(), " bytes to ", out_path)));
  }
  return kExitOk;
}

}  // namespace poold::client
