// Parsers of poolctl's argument values: handles, byte sizes, pool lists and
// --data. Each returns INVALID_ARGUMENT, with a message naming the bad
// value, for input it cannot use.
#ifndef POOLD_CLIENT_POOLCTL_ARGS_H_
#define POOLD_CLIENT_POOLCTL_ARGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "poold/v1/pool_service.pb.h"

namespace poold::client {

// A block handle in decimal ("42") or hexadecimal with a 0x prefix
// ("0x2a"). Handle 0 is accepted here; the server answers NOT_FOUND.
absl::StatusOr<uint64_t> ParseHandle(absl::string_view text);

// A byte count: digits, optionally followed by a binary unit, case
// insensitive: B, K or KiB (1024), M or MiB, G or GiB, T or TiB. A space
// between number and unit is allowed. "100", "64KiB", "1 M".
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

// A comma-separated list of pools: "small", "medium", "large" (also
// "all"). The empty string, like "all", means every pool and gives an empty
// list, which the RPCs read as all pools. Duplicates are dropped.
absl::StatusOr<std::vector<v1::Pool>> ParsePools(absl::string_view text);

// The name poolctl prints for a pool: "small", "medium", "large", or
// "unspecified" / "pool 7" for values it does not know.
std::string PoolName(int pool);

// The bytes --data stands for: the bytes of FILE for "@FILE", standard
// input for "@-", else the text itself. NOT_FOUND / PERMISSION_DENIED etc.
// (with the path) when the file cannot be read.
absl::StatusOr<std::string> ResolveData(absl::string_view data_flag);

}  // namespace poold::client

#endif  // POOLD_CLIENT_POOLCTL_ARGS_H_
