// FragmentationStats arithmetic.
#include "worker/pools/fragmentation_stats.h"

#include <algorithm>

namespace poold::pools {

void FragmentationStats::Add(const FragmentationStats& other) {
  live_bytes += other.live_bytes;
  allocated_bytes += other.allocated_bytes;
  resident_bytes += other.resident_bytes;
  metadata_bytes += other.metadata_bytes;
  free_bytes += other.free_bytes;
  blocks += other.blocks;
  spans += other.spans;
  partial_spans += other.partial_spans;
  empty_spans += other.empty_spans;
  reclaimable_bytes += other.reclaimable_bytes;
  free_extents += other.free_extents;
  largest_free_extent_bytes =
      std::max(largest_free_extent_bytes, other.largest_free_extent_bytes);
  unpurged_bytes += other.unpurged_bytes;
}

}  // namespace poold::pools
