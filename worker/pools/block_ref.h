// BlockRef: where a live block's bytes are right now. Valid only until the
// next call that can move or free blocks (allocate, free, compaction step).
#ifndef POOLD_WORKER_POOLS_BLOCK_REF_H_
#define POOLD_WORKER_POOLS_BLOCK_REF_H_

#include <cstdint>

namespace poold::pools {

struct BlockRef {
  char* data = nullptr;
  uint64_t size = 0;
};

}  // namespace poold::pools

#endif  // POOLD_WORKER_POOLS_BLOCK_REF_H_
