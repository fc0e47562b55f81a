// poolctl: the command-line client of poold. Finds the subcommand, checks
// the flags, builds the client and runs the subcommand (client/commands/).
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "client/command_line.h"
#include "client/commands/command_env.h"
#include "client/exit_codes.h"
#include "client/pool_client.h"
#include "client/poolctl_flags.h"
#include "client/report_formatter.h"
#include "client/subcommand.h"

namespace {

using ::poold::client::CommandLine;
using ::poold::client::Subcommand;

// Prints "poolctl: MESSAGE" and how to get help; returns the usage code.
int UsageError(absl::string_view message,
               const Subcommand* subcommand = nullptr) {
  std::cerr << "poolctl: " << message << "\n";
  if (subcommand != nullptr) {
    std::cerr << "usage: " << subcommand->UsageLine() << "\n";
  } else {
    std::cerr << "usage: poolctl SUBCOMMAND [flags] [arguments]; "
                 "subcommands: ";
    for (const Subcommand& each : Subcommand::All()) {
      std::cerr << each.name
                << (&each == &Subcommand::All().back() ? "" : ", ");
    }
    std::cerr << "\n";
  }
  std::cerr << "Run 'poolctl --help' for the flags and exit codes."
            << std::endl;
  return poold::client::kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace poold::client;  // NOLINT: the whole binary is the client

  // abseil's own --helpfull lists only poolctl's flags.
  absl::FlagsUsageConfig usage_config;
  usage_config.contains_help_flags = [](absl::string_view file) {
    return absl::StrContains(file, "client/");
  };
  usage_config.contains_helpshort_flags = usage_config.contains_help_flags;
  absl::SetFlagsUsageConfig(usage_config);
  absl::SetProgramUsageMessage(
      "the command-line client of poold; run poolctl --help");

  // Scan first: unknown flags and help get poolctl's own answers, and the
  // flags given are known per name.
  const std::vector<std::string> raw(argv + 1, argv + argc);
  absl::StatusOr<CommandLine> line =
      CommandLine::Scan(raw, &CommandLine::LookupRegisteredFlag);
  if (!line.ok()) return UsageError(line.status().message());
  if (line->help) {
    // "poolctl help read", "poolctl read --help": that subcommand's help.
    const std::vector<std::string>& words = line->positional;
    const size_t at = !words.empty() && words[0] == "help" ? 1 : 0;
    const Subcommand* subcommand =
        at < words.size() ? Subcommand::Find(words[at]) : nullptr;
    std::cout << (subcommand != nullptr ? subcommand->Help() : PoolctlHelp());
    return kExitOk;
  }

  // Parses the values; exits with code 1 on a bad one.
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() < 2) return UsageError("no subcommand given");
  const Subcommand* subcommand = Subcommand::Find(positional[1]);
  if (subcommand == nullptr) {
    return UsageError(
        absl::StrCat("unknown subcommand \"", positional[1], "\""));
  }
  const Args args(positional.begin() + 2, positional.end());
  if (absl::Status s = subcommand->CheckFlags(line->flags); !s.ok()) {
    return UsageError(s.message(), subcommand);
  }
  if (absl::Status s = subcommand->CheckArgCount(args.size()); !s.ok()) {
    return UsageError(s.message(), subcommand);
  }

  absl::StatusOr<OutputFormat> format =
      ParseOutputFormat(absl::GetFlag(FLAGS_output));
  if (!format.ok()) return UsageError(format.status().message(), subcommand);
  const absl::Duration connect_timeout = absl::GetFlag(FLAGS_connect_timeout);
  if (connect_timeout <= absl::ZeroDuration()) {
    return UsageError("--connect_timeout must be positive", subcommand);
  }
  PoolClient::Options options;
  options.tls.ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  options.tls.cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.tls.key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.tls.server_name = absl::GetFlag(FLAGS_tls_server_name);
  options.timeout = absl::GetFlag(FLAGS_timeout);
  if (options.timeout <= absl::ZeroDuration()) {
    return UsageError("--timeout must be positive", subcommand);
  }
  absl::StatusOr<PoolClient> client =
      PoolClient::Create(absl::GetFlag(FLAGS_target), options);
  if (!client.ok()) {
    const absl::string_view message = client.status().message();
    if (absl::StartsWith(message, "--tls")) {
      // A flag's file, not the command line, is wrong: no usage line.
      std::cerr << "poolctl: cannot set up TLS: " << message << std::endl;
      return kExitUsage;
    }
    return UsageError(absl::StrCat("bad --target: ", message), subcommand);
  }
  CommandEnv env(*std::move(client), ReportFormatter(*format), connect_timeout,
                 subcommand->UsageLine());
  return subcommand->run(env, args);
}
