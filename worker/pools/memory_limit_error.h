// MemoryLimitError: the RESOURCE_EXHAUSTED status of an allocation that the
// memory limit refused, carrying how many more resident bytes it needed, so
// the owner can tell it from other exhaustion (a full handle table, a failed
// mmap) and judge whether a defragmentation could make room.
#ifndef POOLD_WORKER_POOLS_MEMORY_LIMIT_ERROR_H_
#define POOLD_WORKER_POOLS_MEMORY_LIMIT_ERROR_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace poold::pools {

// RESOURCE_EXHAUSTED with `message`, marked as a memory-limit refusal of an
// allocation that needed `growth` more resident bytes.
absl::Status MemoryLimitError(absl::string_view message, uint64_t growth);

// The growth a memory-limit refusal needed; nullopt for any other status.
std::optional<uint64_t> MemoryLimitGrowth(const absl::Status& status);

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_MEMORY_LIMIT_ERROR_H_
