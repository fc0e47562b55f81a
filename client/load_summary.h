// LoadSummary: what one `poolctl load` run did, for its report.
#ifndef POOLD_CLIENT_LOAD_SUMMARY_H_
#define POOLD_CLIENT_LOAD_SUMMARY_H_

#include <cstdint>
#include <map>
#include <vector>

#include "absl/time/time.h"

namespace poold::client {

struct LoadSummary {
  // Blocks allocated, their requested bytes and the slot bytes the pools
  // set aside for them.
  uint64_t blocks_allocated = 0;
  uint64_t bytes_allocated = 0;
  uint64_t slot_bytes_allocated = 0;
  // Blocks a batch could not allocate for lack of room (RESOURCE_EXHAUSTED,
  // as under the server's memory limit), retried alone afterwards: one
  // Allocate call each, which waits for a defragmentation to make room;
  // and how many of them those calls allocated (included in
  // blocks_allocated).
  uint64_t blocks_refused_in_batches = 0;
  uint64_t blocks_allocated_alone = 0;
  // Blocks allocated per pool (a v1::Pool value).
  std::map<int, uint64_t> blocks_by_pool;
  // Blocks freed again and their requested bytes.
  uint64_t blocks_freed = 0;
  uint64_t bytes_freed = 0;
  // Handles of the blocks still allocated, in allocation order, and their
  // requested bytes.
  std::vector<uint64_t> kept_handles;
  uint64_t bytes_kept = 0;
  // Wall time of the two phases.
  absl::Duration allocate_time;
  absl::Duration free_time;
};

}  // namespace poold::client

#endif  // POOLD_CLIENT_LOAD_SUMMARY_H_
