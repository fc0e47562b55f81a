// BlockInfo: what the engine tells the caller about a block it allocated.
#ifndef POOLD_WORKER_POOLS_BLOCK_INFO_H_
#define POOLD_WORKER_POOLS_BLOCK_INFO_H_

#include <cstdint>

#include "worker/pools/pool_kind.h"

namespace poold::pools {

struct BlockInfo {
  uint64_t handle = 0;  // never 0 for a real block
  PoolKind pool = PoolKind::kSmall;
  uint64_t size = 0;        // requested size; what a full Read returns
  uint64_t slot_bytes = 0;  // what the pool set aside (class or extent size)
  // Large pool: the block's pages came fresh from the OS (never used since
  // they were last returned), so bytes nobody wrote read as zero once
  // committed; the `written_next` bytes of Allocate need no zeroing.
  bool fresh_pages = false;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_BLOCK_INFO_H_
