// Subcommand: the table of poolctl's subcommands (name, arguments, flags,
// the function that runs it) and the help texts made from it.
#ifndef POOLD_CLIENT_SUBCOMMAND_H_
#define POOLD_CLIENT_SUBCOMMAND_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "client/commands/commands.h"

namespace poold::client {

struct Subcommand {
  absl::string_view name;
  // Arguments and flags as the usage shows them, after the name.
  absl::string_view synopsis;
  absl::string_view summary;
  // The flags it takes besides the global ones.
  std::vector<absl::string_view> flags;
  // How many positional arguments it takes.
  size_t min_args = 0;
  size_t max_args = 0;
  int (*run)(CommandEnv& env, const Args& args) = nullptr;

  // Every subcommand, in the order the help lists them.
  static absl::Span<const Subcommand> All();
  // The subcommand called `name`, or nullptr.
  static const Subcommand* Find(absl::string_view name);
  // Flags every subcommand takes.
  static absl::Span<const absl::string_view> GlobalFlags();

  // INVALID_ARGUMENT when one of `given` (flag names) is a poolctl flag
  // that belongs to other subcommands only. Other flags (global ones,
  // abseil's own such as --flagfile) pass.
  absl::Status CheckFlags(absl::Span<const std::string> given) const;
  // INVALID_ARGUMENT when `count` positional arguments are too few or too
  // many.
  absl::Status CheckArgCount(size_t count) const;

  // "poolctl NAME SYNOPSIS".
  std::string UsageLine() const;
  // The usage line, the summary, and the help of each of its flags.
  std::string Help() const;
};

// What `poolctl --help` prints: subcommands, global flags, argument
// syntax, exit codes and examples.
std::string PoolctlHelp();

}  // namespace poold::client

#endif  // POOLD_CLIENT_SUBCOMMAND_H_
