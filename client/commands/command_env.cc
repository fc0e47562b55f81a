// CommandEnv: connecting, printing results and errors.
#include "client/commands/command_env.h"

#include <iostream>

#include "absl/strings/str_cat.h"
#include "client/exit_codes.h"

namespace poold::client {

std::string ErrorText(const absl::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ",
                      status.message());
}

int CommandEnv::Connect() {
  absl::Status status = client_.Connect(connect_timeout_);
  if (status.ok()) return kExitOk;
  std::cerr << "poolctl: " << ErrorText(status) << std::endl;
  return kExitCannotConnect;
}

int CommandEnv::UsageError(const absl::Status& status) const {
  std::cerr << "poolctl: " << status.message()
            << "\nusage: " << subcommand_usage_
            << "\nRun 'poolctl --help' for the flags and exit codes."
            << std::endl;
  return kExitUsage;
}

int CommandEnv::Failed(const absl::Status& status) const {
  std::cerr << "poolctl: " << ErrorText(status) << std::endl;
  return kExitRpcFailed;
}

int CommandEnv::Print(const absl::StatusOr<std::string>& text) const {
  if (!text.ok()) return Failed(text.status());
  std::cout << *text << std::flush;
  if (!std::cout) {
    return Failed(absl::DataLossError("cannot write to standard output"));
  }
  return kExitOk;
}

}  // namespace poold::client
