// The subcommand table and poolctl's help texts.
#include "client/subcommand.h"

#include <algorithm>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace poold::client {
namespace {

constexpr absl::string_view kGlobalFlags[] = {
    "target",        "timeout",      "connect_timeout", "tls_ca_file",
    "tls_cert_file", "tls_key_file", "tls_server_name", "output"};

const std::vector<Subcommand>& Table() {
  static const auto* const kTable = new std::vector<Subcommand>{
      {"stats",
       "[--classes] [--history] [--consistent]",
       "Fragmentation statistics of every pool (and size class), the "
       "worker's activity, what automatic defragmentation is doing and why, "
       "and (--history) the last defragmentations of any origin.",
       {"classes", "history", "consistent"},
       0,
       0,
       &RunStats},
      {"watch",
       "[--interval=1s] [--iterations=N] [--classes]",
       "The stats table refreshed every --interval (in place on a terminal), "
       "with the requests per second of each RPC and the bytes reclaimed "
       "per second since the last refresh. Runs until interrupted, or for "
       "--iterations refreshes; a failed refresh is shown and watching goes "
       "on.",
       {"interval", "iterations", "classes"},
       0,
       0,
       &RunWatch},
      {"analyze",
       "[--pools=small,medium,large]",
       "What a defragmentation would move, release and reclaim now; changes "
       "nothing.",
       {"pools"},
       0,
       0,
       &RunAnalyze},
      {"defrag",
       "[--pools=small,medium,large]",
       "Compacts the pools and returns the emptied memory to the OS; prints "
       "the report per pool and in total. A large heap may need a longer "
       "--timeout (e.g. --timeout=5m); a run cut short by the deadline "
       "reports what it did and says INCOMPLETE.",
       {"pools"},
       0,
       0,
       &RunDefrag},
      {"alloc",
       "[--size=N] [--data=TEXT|@FILE]",
       "Allocates a block (filled with the data, zero elsewhere) and prints "
       "its handle, pool, size and slot size.",
       {"size", "data"},
       0,
       0,
       &RunAlloc},
      {"read",
       "HANDLE [--offset=N] [--length=N] [--out=FILE]",
       "Prints the bytes of a block, raw (or writes them to FILE; with "
       "--output=json, a ReadResponse with the bytes in base64).",
       {"offset", "length", "out"},
       1,
       1,
       &RunRead},
      {"write",
       "HANDLE [--offset=N] --data=TEXT|@FILE",
       "Overwrites bytes of a block at the offset.",
       {"offset", "data"},
       1,
       1,
       &RunWrite},
      {"free",
       "HANDLE",
       "Frees a block; its handle becomes invalid.",
       {},
       1,
       1,
       &RunFree},
      {"health",
       "[--service=NAME]",
       "Checks grpc.health.v1.Health: prints the status; exit code 0 when "
       "SERVING, 4 when not (as grpc_health_probe), 3 for a service poold "
       "does not know (NOT_FOUND).",
       {"service"},
       0,
       0,
       &RunHealth},
      {"load",
       "[--count=N] [--sizes=MIN:MAX,...] [--free_fraction=F] "
       "[--concurrency=N] [--batch=N] [--seed=N] [--progress] "
       "[--keep_handles=FILE]",
       "Workload generator: allocates --count blocks with sizes drawn from "
       "--sizes, filled with a byte pattern, then frees --free_fraction of "
       "them at random, with --concurrency calls of --batch blocks in "
       "flight; prints a summary. "
       "Fragments a server on purpose, so defragmentation can be watched.",
       {"count", "sizes", "free_fraction", "concurrency", "batch", "seed",
        "progress", "keep_handles"},
       0,
       0,
       &RunLoad},
  };
  return *kTable;
}

// `text` broken into lines of at most `width` characters (longer words
// stay whole), the first starting with `first_indent`, the others with
// `indent`.
std::string Wrap(absl::string_view text, size_t width,
                 absl::string_view first_indent, absl::string_view indent) {
  std::string out;
  std::string line;
  absl::string_view prefix = first_indent;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() &&
        prefix.size() + line.size() + 1 + word.size() > width) {
      absl::StrAppend(&out, prefix, line, "\n");
      line.clear();
      prefix = indent;
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(&out, prefix, line, "\n");
  return out;
}

std::string Wrap(absl::string_view text, size_t width,
                 absl::string_view indent) {
  return Wrap(text, width, indent, indent);
}

std::string FlagHelp(absl::string_view name) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  if (flag == nullptr) return absl::StrCat("  --", name, "\n");
  std::string value = flag->DefaultValue();
  if (flag->IsOfType<std::string>()) value = absl::StrCat("\"", value, "\"");
  return absl::StrCat("  --", name, " (default ", value, ")\n",
                      Wrap(flag->Help(), 78, "      "));
}

}  // namespace

absl::Span<const Subcommand> Subcommand::All() { return Table(); }

const Subcommand* Subcommand::Find(absl::string_view name) {
  for (const Subcommand& subcommand : Table()) {
    if (subcommand.name == name) return &subcommand;
  }
  return nullptr;
}

absl::Span<const absl::string_view> Subcommand::GlobalFlags() {
  return kGlobalFlags;
}

absl::Status Subcommand::CheckFlags(absl::Span<const std::string> given) const {
  for (const std::string& flag : given) {
    if (std::find(flags.begin(), flags.end(), flag) != flags.end()) continue;
    for (const Subcommand& other : Table()) {
      if (std::find(other.flags.begin(), other.flags.end(), flag) !=
          other.flags.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat("flag --", flag, " does not apply to ", name,
                         " (it is one of ", other.name, "'s)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status Subcommand::CheckArgCount(size_t count) const {
  if (count >= min_args && count <= max_args) return absl::OkStatus();
  if (max_args == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, " takes no arguments besides flags"));
  }
  return absl::InvalidArgumentError(
      count < min_args
          ? absl::StrCat(name, " needs ",
                         synopsis.substr(0, synopsis.find(' ')))
          : absl::StrCat(name, " takes ", max_args, " argument",
                         max_args == 1 ? "" : "s", ", not ", count));
}

std::string Subcommand::UsageLine() const {
  return absl::StrCat("poolctl ", name, synopsis.empty() ? "" : " ", synopsis);
}

std::string Subcommand::Help() const {
  std::string out = absl::StrCat(
      Wrap(absl::StrCat("usage: ", UsageLine()), 78, "", "         "), "\n",
      Wrap(summary, 78, ""));
  if (!flags.empty()) {
    absl::StrAppend(&out, "\nFlags:\n");
    for (absl::string_view flag : flags) absl::StrAppend(&out, FlagHelp(flag));
  }
  absl::StrAppend(&out, "\nGlobal flags (", absl::StrJoin(kGlobalFlags, ", "),
                  ") and exit codes: poolctl --help\n");
  return out;
}

std::string PoolctlHelp() {
  std::string out =
      "poolctl: the command-line client of poold, the memory-pool server.\n"
      "\n"
      "usage: poolctl [--target=ADDRESS] SUBCOMMAND [flags] [arguments]\n"
      "       poolctl help SUBCOMMAND    (or poolctl SUBCOMMAND --help)\n"
      "\n"
      "Subcommands:\n";
  for (const Subcommand& subcommand : Table()) {
    absl::StrAppend(
        &out,
        Wrap(absl::StrCat(subcommand.name, " ", subcommand.synopsis), 78, "  ",
             "      "),
        Wrap(subcommand.summary, 78, "      "));
  }
  absl::StrAppend(&out, "\nGlobal flags:\n");
  for (absl::string_view flag : kGlobalFlags) {
    absl::StrAppend(&out, FlagHelp(flag));
  }
  absl::StrAppend(&out, "\nSubcommand flags:\n");
  std::vector<absl::string_view> listed;
  for (const Subcommand& subcommand : Table()) {
    for (absl::string_view flag : subcommand.flags) {
      if (std::find(listed.begin(), listed.end(), flag) != listed.end()) {
        continue;
      }
      listed.push_back(flag);
      absl::StrAppend(&out, FlagHelp(flag));
    }
  }
  absl::StrAppend(
      &out,
      "\n"
      "Flags go before or after the subcommand: --name=value, --name value, "
      "or\n"
      "--name / --noname for on/off flags. HANDLE is decimal or 0x-prefixed\n"
      "hexadecimal. Sizes are bytes or take a binary unit: 100, 64KiB, "
      "1MiB.\n"
      "\n"
      "Output: readable tables by default; --output=json prints the "
      "protobuf JSON\n"
      "mapping of the response (lowerCamelCase names, 64-bit numbers as "
      "strings).\n"
      "\n"
      "Exit codes:\n"
      "  0  success (health: SERVING)\n"
      "  1  usage: unknown subcommand or flag, bad flag value or argument,\n"
      "     a --data file that cannot be read\n"
      "  2  cannot connect: nothing answers at --target, or no connection\n"
      "     within --connect_timeout\n"
      "  3  the RPC failed: poolctl prints the gRPC code and message on "
      "stderr,\n"
      "     e.g. \"poolctl: NOT_FOUND: no block with handle 42\" (also when "
      "the\n"
      "     result cannot be written out)\n"
      "  4  health: the server answered with a status other than SERVING\n"
      "\n"
      "Examples:\n"
      "  poolctl load --count=100000 --sizes=100:150 --free_fraction=0.9\n"
      "  poolctl analyze\n"
      "  poolctl defrag --pools=small,medium --timeout=5m\n"
      "  poolctl --target=unix:/run/poold/poold.sock stats --output=json\n"
      "  poolctl read 42 --length=16 | xxd\n");
  return out;
}

}  // namespace poold::client
