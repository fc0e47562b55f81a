// LoadGenerator: the workload behind `poolctl load`. It allocates blocks
// with sizes from a SizeDistribution, fills them, then frees a random
// fraction of them, with many RPCs in flight, so a server's pools fragment
// the way a real application's would.
#ifndef POOLD_CLIENT_LOAD_GENERATOR_H_
#define POOLD_CLIENT_LOAD_GENERATOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/load_summary.h"
#include "client/pool_client.h"
#include "client/size_distribution.h"
#include "grpcpp/channel.h"
#include "poold/v1/pool_service.grpc.pb.h"

namespace poold::client {

struct LoadOptions {
  // Blocks to allocate.
  uint64_t count = 10000;
  // Their sizes.
  SizeDistribution sizes = SizeDistribution::Fixed(128);
  // Fraction of the allocated blocks to free afterwards, in [0, 1], chosen
  // at random; the number freed is rounded to the nearest block.
  double free_fraction = 0.5;
  // RPCs in flight at once (1 .. kMaxConcurrency).
  int concurrency = 32;
  // Blocks per call (1 .. kMaxBatch): above 1, each call is a Batch of up
  // to this many allocations or frees (fewer when their bytes would not fit
  // in one message); 1: one Allocate or Free call per block.
  int batch = 64;
  // Block bytes one Batch call carries at most (a larger block goes alone).
  // Sharing a call pays off for small blocks only, and the server's
  // --max_message_bytes, which the client cannot know, may be as small as
  // its largest block (as in the sidecar): a batch of several large blocks
  // would be refused whole.
  uint64_t max_batch_bytes = 1 << 20;
  // Caps the block bytes in flight (at least one call is always allowed),
  // so large blocks do not pile up in memory.
  uint64_t max_in_flight_bytes = 256 << 20;
  // Seeds the sizes and the choice of blocks to free: the same seed gives
  // the same workload.
  uint64_t seed = 1;
  // Deadline of each RPC. InfiniteDuration(): none.
  absl::Duration timeout = absl::Seconds(30);
  // The channel's largest message: blocks must fit in one Allocate.
  int max_message_bytes = PoolClient::kDefaultMaxMessageBytes;
};

// Where a run is, for progress reports.
struct LoadProgress {
  // "allocate", "allocate (retrying alone)" or "free".
  const char* phase = "";
  uint64_t done = 0;
  uint64_t total = 0;
  absl::Duration elapsed;  // since the phase began
  // The last report of the phase.
  bool finished = false;
};

class LoadGenerator {
 public:
  static constexpr int kMaxConcurrency = 1024;
  // poold's default --max_batch_operations.
  static constexpr int kMaxBatch = 1024;

  // Room for the rest of an AllocateRequest besides the data.
  static constexpr uint64_t kMessageOverhead = 1024;

  // Validates `options`: INVALID_ARGUMENT for a concurrency outside
  // 1..kMaxConcurrency, a batch outside 1..kMaxBatch, a free fraction outside
  // [0, 1], a non-positive timeout, or sizes that do not fit in one message
  // (max_message_bytes - kMessageOverhead). REQUIRES: `channel` is not null.
  static absl::StatusOr<LoadGenerator> Create(
      std::shared_ptr<grpc::Channel> channel, LoadOptions options);

  LoadGenerator(LoadGenerator&&) = default;
  LoadGenerator& operator=(LoadGenerator&&) = default;

  // Calls `callback` on the calling thread of Run at most every `interval`
  // while a phase runs, and once when it ends.
  void set_progress_callback(std::function<void(const LoadProgress&)> callback,
                             absl::Duration interval);

  // Runs the workload: allocates options.count blocks, each filled with a
  // byte pattern, then frees the chosen fraction. With batches, the
  // allocations a batch could not make for lack of room (RESOURCE_EXHAUSTED)
  // are made again afterwards, one Allocate call each: under the server's
  // memory limit such a call waits for a defragmentation to make room. Returns
  // OK, or the first failed RPC's status with what it was doing; after a
  // failure no new calls start and those in flight are awaited, and the free
  // phase does not start if allocation failed. `summary` says what was done
  // either way, so the blocks left behind can be found.
  absl::Status Run(LoadSummary* summary);

 private:
  LoadGenerator(std::shared_ptr<grpc::Channel> channel, LoadOptions options);

  // The state of one RPC in flight.
  template <typename Request, typename Response>
  struct Call;

  // What one call of a phase carries.
  struct CallSize {
    uint64_t bytes = 0;  // block data
    uint64_t items = 1;  // blocks
  };

  // Runs `calls` calls of one kind, `items` blocks in all, with at most
  // options_.concurrency in flight. `prepare(i, request)` fills request i
  // and returns what it carries; `start(context, request, cq)` prepares
  // the async call; `done(i, response)` takes a successful answer and
  // returns the error of an operation in it, if any. Returns the first
  // error.
  template <typename Request, typename Response, typename Prepare,
            typename Start, typename Done>
  absl::Status RunPhase(const char* phase, uint64_t calls, uint64_t items,
                        Prepare prepare, Start start, Done done);

  // The blocks of each call, as [begin, end) of `sizes` (indexes into it):
  // up to options_.batch blocks, and (for allocations, `sizes` not null)
  // no more bytes than max_batch_bytes, one message or max_in_flight_bytes
  // hold (one block at least).
  std::vector<std::pair<uint64_t, uint64_t>> Groups(
      uint64_t count, const std::vector<uint64_t>* sizes) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PoolService::Stub> stub_;
  LoadOptions options_;
  std::function<void(const LoadProgress&)> progress_;
  absl::Duration progress_interval_ = absl::Milliseconds(200);
};

}  // namespace poold::client

#endif  // POOLD_CLIENT_LOAD_GENERATOR_H_
