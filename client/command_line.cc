// CommandLine::Scan.
#include "client/command_line.h"

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace poold::client {

absl::StatusOr<CommandLine> CommandLine::Scan(
    absl::Span<const std::string> args, const FlagLookup& lookup) {
  CommandLine line;
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg == "--") {
      line.positional.insert(line.positional.end(), args.begin() + i + 1,
                             args.end());
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      if (line.positional.empty() && arg == "help") line.help = true;
      line.positional.emplace_back(arg);
      continue;
    }
    if (absl::ascii_isdigit(static_cast<unsigned char>(arg[1]))) {
      // Not a flag, and no argument of poolctl's is negative.
      return absl::InvalidArgumentError(
          absl::StrCat("bad argument ", arg,
                       ": handles, sizes and offsets are not negative"));
    }
    absl::string_view name = arg.substr(arg[1] == '-' ? 2 : 1);
    const size_t equals = name.find('=');
    const bool has_value = equals != absl::string_view::npos;
    if (has_value) name = name.substr(0, equals);
    if (name == "help" || name == "h") {
      line.help = true;
      continue;
    }
    FlagKind kind = lookup(name);
    if (kind == FlagKind::kUnknown && !has_value &&
        absl::StartsWith(name, "no") &&
        lookup(name.substr(2)) == FlagKind::kBool) {
      name.remove_prefix(2);
      kind = FlagKind::kBool;
    }
    if (kind == FlagKind::kUnknown) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (kind == FlagKind::kValue && !has_value) {
      if (i + 1 == args.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", name, " needs a value"));
      }
      ++i;  // the value
    }
    line.flags.emplace_back(name);
  }
  return line;
}

CommandLine::FlagKind CommandLine::LookupRegisteredFlag(
    absl::string_view name) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  if (flag == nullptr || flag->IsRetired()) return FlagKind::kUnknown;
  return flag->IsOfType<bool>() ? FlagKind::kBool : FlagKind::kValue;
}

}  // namespace poold::client
