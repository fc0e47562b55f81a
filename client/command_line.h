// CommandLine: what a first scan of poolctl's arguments finds, before
// absl::ParseCommandLine parses the flag values: which flags were given
// (so a subcommand can refuse flags meant for another), unknown flags (so
// they are a usage error with poolctl's own message), and requests for help.
#ifndef POOLD_CLIENT_COMMAND_LINE_H_
#define POOLD_CLIENT_COMMAND_LINE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace poold::client {

struct CommandLine {
  // What kind of flag a name is: unknown, a bool (takes no separate value
  // argument), or one that takes a value ("--size 100" or "--size=100").
  enum class FlagKind { kUnknown, kBool, kValue };
  using FlagLookup = std::function<FlagKind(absl::string_view name)>;

  // Names of the flags given, in order, without dashes, values or the "no"
  // prefix of a negated bool ("--noprogress" -> "progress").
  std::vector<std::string> flags;
  // The other arguments, in order: the subcommand first, then its
  // arguments. Everything after "--" is positional.
  std::vector<std::string> positional;
  // --help, -h or -help was given, or the subcommand is "help".
  bool help = false;

  // Scans `args` (argv without the program name) the way abseil's parser
  // reads them: "-name" and "--name" alike, "--name=value", a value in the
  // next argument for non-bool flags, "--noname" for bools, "--" ending the
  // flags. INVALID_ARGUMENT naming the first unknown flag, or a non-bool
  // flag missing its value.
  static absl::StatusOr<CommandLine> Scan(absl::Span<const std::string> args,
                                          const FlagLookup& lookup);

  // The kind of the abseil flag `name` registered in this binary.
  static FlagKind LookupRegisteredFlag(absl::string_view name);
};

}  // namespace poold::client

#endif  // POOLD_CLIENT_COMMAND_LINE_H_
