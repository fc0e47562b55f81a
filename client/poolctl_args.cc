// Argument parsers for poolctl.
#include "client/poolctl_args.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <limits>
#include <sstream>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace poold::client {

absl::StatusOr<uint64_t> ParseHandle(absl::string_view text) {
  absl::string_view digits = absl::StripAsciiWhitespace(text);
  uint64_t handle = 0;
  bool ok = false;
  if (absl::ConsumePrefix(&digits, "0x") ||
      absl::ConsumePrefix(&digits, "0X")) {
    ok = !digits.empty() &&
         std::all_of(digits.begin(), digits.end(),
                     [](char c) { return absl::ascii_isxdigit(c); }) &&
         absl::SimpleHexAtoi(digits, &handle);
  } else {
    ok = !digits.empty() &&
         std::all_of(digits.begin(), digits.end(),
                     [](char c) { return absl::ascii_isdigit(c); }) &&
         absl::SimpleAtoi(digits, &handle);
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad handle \"", text,
        "\": expected a decimal number or 0x and hexadecimal digits, "
        "at most 2^64-1"));
  }
  return handle;
}

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  absl::string_view rest = absl::StripAsciiWhitespace(text);
  size_t digits = 0;
  while (digits < rest.size() && absl::ascii_isdigit(rest[digits])) ++digits;
  uint64_t number = 0;
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad size \"", text, "\": ", why));
  };
  if (digits == 0) return bad("expected a number of bytes, e.g. 100 or 64KiB");
  if (!absl::SimpleAtoi(rest.substr(0, digits), &number)) {
    return bad("too large");
  }
  const std::string unit = absl::AsciiStrToLower(
      absl::StripLeadingAsciiWhitespace(rest.substr(digits)));
  int shift = 0;
  if (unit.empty() || unit == "b") {
    shift = 0;
  } else if (unit == "k" || unit == "kib") {
    shift = 10;
  } else if (unit == "m" || unit == "mib") {
    shift = 20;
  } else if (unit == "g" || unit == "gib") {
    shift = 30;
  } else if (unit == "t" || unit == "tib") {
    shift = 40;
  } else {
    return bad("unknown unit; use B, KiB, MiB, GiB or TiB");
  }
  if (shift > 0 && number > (std::numeric_limits<uint64_t>::max() >> shift)) {
    return bad("too large");
  }
  return number << shift;
}

absl::StatusOr<std::vector<v1::Pool>> ParsePools(absl::string_view text) {
  std::vector<v1::Pool> pools;
  bool all = false;
  for (absl::string_view name :
       absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    const std::string lower =
        absl::AsciiStrToLower(absl::StripAsciiWhitespace(name));
    v1::Pool pool;
    if (lower == "all") {
      all = true;
      continue;
    } else if (lower == "small") {
      pool = v1::POOL_SMALL;
    } else if (lower == "medium") {
      pool = v1::POOL_MEDIUM;
    } else if (lower == "large") {
      pool = v1::POOL_LARGE;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "unknown pool \"", name, "\": expected small, medium, large or all"));
    }
    if (std::find(pools.begin(), pools.end(), pool) == pools.end()) {
      pools.push_back(pool);
    }
  }
  if (all) pools.clear();
  return pools;
}

std::string PoolName(int pool) {
  switch (pool) {
    case v1::POOL_SMALL:
      return "small";
    case v1::POOL_MEDIUM:
      return "medium";
    case v1::POOL_LARGE:
      return "large";
    case v1::POOL_UNSPECIFIED:
      return "unspecified";
    default:
      return absl::StrCat("pool ", pool);
  }
}

absl::StatusOr<std::string> ResolveData(absl::string_view data_flag) {
  if (!absl::StartsWith(data_flag, "@")) return std::string(data_flag);
  const std::string path(data_flag.substr(1));
  if (path == "-") {
    std::ostringstream in;
    in << std::cin.rdbuf();
    if (std::cin.bad()) return absl::DataLossError("cannot read stdin");
    return std::move(in).str();
  }
  if (path.empty()) {
    return absl::InvalidArgumentError(
        "--data=@ names no file (use @FILE, or @- for stdin)");
  }
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot read ", path, ": it is a directory"));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    const int error = errno;
    return absl::Status(
        error == ENOENT   ? absl::StatusCode::kNotFound
        : error == EACCES ? absl::StatusCode::kPermissionDenied
                          : absl::StatusCode::kFailedPrecondition,
        absl::StrCat("cannot read ", path, ": ", std::strerror(error)));
  }
  std::string bytes((std::istreambuf_iterator<char>(file)),
                    std::istreambuf_iterator<char>());
  if (file.bad()) {
    return absl::DataLossError(absl::StrCat("error reading ", path));
  }
  return bytes;
}

}  // namespace poold::client
