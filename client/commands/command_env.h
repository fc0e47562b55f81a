// CommandEnv: what a poolctl subcommand works with (the client, the
// formatter) and the one way it ends: printing its result or its error and
// returning the exit code.
#ifndef POOLD_CLIENT_COMMANDS_COMMAND_ENV_H_
#define POOLD_CLIENT_COMMANDS_COMMAND_ENV_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/pool_client.h"
#include "client/report_formatter.h"

namespace poold::client {

class CommandEnv {
 public:
  CommandEnv(PoolClient client, ReportFormatter formatter,
             absl::Duration connect_timeout, std::string subcommand_usage)
      : client_(std::move(client)),
        formatter_(formatter),
        connect_timeout_(connect_timeout),
        subcommand_usage_(std::move(subcommand_usage)) {}

  PoolClient& client() { return client_; }
  const ReportFormatter& formatter() const { return formatter_; }

  // Connects to the server. Returns kExitOk, or prints why it could not and
  // returns kExitCannotConnect.
  int Connect();

  // Prints "poolctl: MESSAGE" and the subcommand's usage line on stderr;
  // returns kExitUsage.
  int UsageError(const absl::Status& status) const;

  // Prints "poolctl: CODE: MESSAGE" on stderr; returns kExitRpcFailed.
  int Failed(const absl::Status& status) const;

  // Writes `text` to stdout and returns kExitOk; for an error, Failed().
  int Print(const absl::StatusOr<std::string>& text) const;

 private:
  PoolClient client_;
  ReportFormatter formatter_;
  absl::Duration connect_timeout_;
  std::string subcommand_usage_;
};

// "CODE: message", as poolctl prints errors.
std::string ErrorText(const absl::Status& status);

}  // namespace poold::client

#endif  // POOLD_CLIENT_COMMANDS_COMMAND_ENV_H_
