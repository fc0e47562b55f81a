// RaiseOpenFilesLimit with getrlimit/setrlimit.
#include "server/open_files_limit.h"

#include <sys/resource.h>

#include <cerrno>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace poold {

absl::StatusOr<OpenFilesLimit> RaiseOpenFilesLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat(
        "getrlimit(RLIMIT_NOFILE): ",
        std::error_code(errno, std::generic_category()).message()));
  }
  OpenFilesLimit result{.soft_before = limit.rlim_cur,
                        .soft = limit.rlim_cur,
                        .hard = limit.rlim_max};
  if (limit.rlim_cur == limit.rlim_max) return result;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    return absl::InternalError(absl::StrCat(
        "setrlimit(RLIMIT_NOFILE, ", limit.rlim_max,
        "): ", std::error_code(errno, std::generic_category()).message()));
  }
  result.soft = limit.rlim_max;
  return result;
}

}  // namespace poold
