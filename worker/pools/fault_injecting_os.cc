// FaultInjectingOs: counts each kind of call and fails the chosen one with
// the status the real OsInterface would return for the same errno.
#include "worker/pools/fault_injecting_os.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace poold::pools {

absl::string_view OsCallName(OsCall call) {
  switch (call) {
    case OsCall::kReserve:
      return "mmap";
    case OsCall::kUnmap:
      return "munmap";
    case OsCall::kCommit:
      return "madvise(MADV_POPULATE_WRITE)";
    case OsCall::kPurge:
      return "madvise(MADV_DONTNEED)";
  }
  return "?";
}

absl::StatusOr<OsFaultSpec> ParseOsFaultSpec(absl::string_view text) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  const auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("fault \"", text, "\": ", why,
                     " (want POOL:CALL:N[:always], POOL small|medium|large, "
                     "CALL map|unmap|commit|purge, N >= 1)"));
  };
  if (parts.size() != 3 && parts.size() != 4) return bad("wrong shape");
  OsFaultSpec spec;
  const auto* pool =
      std::find_if(kAllPools.begin(), kAllPools.end(),
                   [&](PoolKind p) { return PoolName(p) == parts[0]; });
  if (pool == kAllPools.end()) return bad("unknown pool");
  spec.pool = *pool;
  if (parts[1] == "map") {
    spec.call = OsCall::kReserve;
  } else if (parts[1] == "unmap") {
    spec.call = OsCall::kUnmap;
  } else if (parts[1] == "commit") {
    spec.call = OsCall::kCommit;
  } else if (parts[1] == "purge") {
    spec.call = OsCall::kPurge;
  } else {
    return bad("unknown call");
  }
  if (!absl::SimpleAtoi(parts[2], &spec.nth) || spec.nth == 0) {
    return bad("N is not a positive number");
  }
  if (parts.size() == 4) {
    if (parts[3] != "always") return bad("the fourth part can only be always");
    spec.repeat = true;
  }
  return spec;
}

FaultInjectingOs::FaultInjectingOs(OsInterface& os) : os_(os) {}

void FaultInjectingOs::FailAt(OsCall call, uint64_t nth, int error,
                              bool repeat) {
  const size_t k = static_cast<size_t>(call);
  faults_[k] = Fault{nth == 0 ? 0 : calls_[k] + nth, error, repeat};
}

void FaultInjectingOs::Heal() { faults_ = {}; }

absl::Status FaultInjectingOs::Count(OsCall call, uint64_t bytes) {
  const size_t k = static_cast<size_t>(call);
  const uint64_t n = ++calls_[k];
  const Fault& fault = faults_[k];
  if (fault.at == 0 || n < fault.at || (n > fault.at && !fault.repeat)) {
    return absl::OkStatus();
  }
  ++failures_;
  return OsCallFailed(OsCallName(call), bytes, fault.error,
                      /*exhausted=*/call == OsCall::kReserve, " (injected)");
}

absl::StatusOr<char*> FaultInjectingOs::Reserve(uint64_t bytes) {
  if (absl::Status s = Count(OsCall::kReserve, bytes); !s.ok()) return s;
  return os_.Reserve(bytes);
}

absl::Status FaultInjectingOs::Unmap(char* base, uint64_t bytes) {
  if (absl::Status s = Count(OsCall::kUnmap, bytes); !s.ok()) return s;
  return os_.Unmap(base, bytes);
}

absl::Status FaultInjectingOs::Commit(char* base, uint64_t bytes) {
  if (absl::Status s = Count(OsCall::kCommit, bytes); !s.ok()) return s;
  return os_.Commit(base, bytes);
}

absl::Status FaultInjectingOs::Purge(char* base, uint64_t bytes) {
  if (absl::Status s = Count(OsCall::kPurge, bytes); !s.ok()) return s;
  return os_.Purge(base, bytes);
}

}  // namespace poold::pools
