// StatsBoard: serializing a published snapshot and handing it out.
#include "server/stats_board.h"

#include <utility>

#include "google/protobuf/message_lite.h"
#include "grpc/slice.h"
#include "poold/v1/pool_service.pb.h"
#include "server/proto_convert.h"

namespace poold {
namespace {

// `message` serialized into a slice of its own (no intermediate copy).
grpc::Slice SerializeToSlice(const google::protobuf::MessageLite& message) {
  const size_t size = message.ByteSizeLong();
  grpc_slice slice = grpc_slice_malloc(size);
  message.SerializeWithCachedSizesToArray(GRPC_SLICE_START_PTR(slice));
  return grpc::Slice(slice, grpc::Slice::STEAL_REF);
}

}  // namespace

void StatsBoard::Publish(StatsSnapshot snapshot) {
  Published fresh;
  fresh.sequence = snapshot.sequence;
  v1::GetStatsResponse stats;
  StatsSnapshotToProto(snapshot, &stats);
  if (snapshot.history_unchanged) {
    absl::MutexLock lock(&mu_);
    fresh.history = latest_.history;  // a reference to the same bytes
  } else {
    v1::GetStatsResponse history;
    history.mutable_recent_defragmentations()->Swap(
        stats.mutable_recent_defragmentations());
    fresh.history = SerializeToSlice(history);
  }
  fresh.with_classes = SerializeToSlice(stats);
  for (v1::PoolStats& pool : *stats.mutable_pools()) pool.clear_classes();
  fresh.without_classes = SerializeToSlice(stats);
  {
    absl::MutexLock lock(&mu_);
    std::swap(latest_, fresh);
  }
  // The previous snapshot's references are dropped here, outside the lock.
}

StatsBoard::Published StatsBoard::Latest() const {
  absl::MutexLock lock(&mu_);
  return latest_;
}

}  // namespace poold
