// PoolClient: a blocking C++ client of poold (poold.v1.PoolService and the
// standard grpc.health.v1 service), one method per RPC, errors as
// absl::Status values.
#ifndef POOLD_CLIENT_POOL_CLIENT_H_
#define POOLD_CLIENT_POOL_CLIENT_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/channel.h"
#include "poold/v1/pool_service.grpc.pb.h"

namespace poold::client {

// Example:
//
//   absl::StatusOr<PoolClient> client = PoolClient::Create("unix:/run/poold");
//   if (!client.ok()) return client.status();
//   absl::StatusOr<v1::AllocateResponse> block = client->Allocate(5, "hello");
//   if (!block.ok()) return block.status();
//   absl::StatusOr<std::string> bytes = client->Read(block->handle());
//
// Every call has its own deadline, `timeout` after it starts. Calls do not
// wait for a connection: when poold cannot be reached they fail at once with
// UNAVAILABLE. Call Connect() first to tell "cannot connect" apart from an
// RPC that the server answered with an error.
//
// A PoolClient may be used by several threads at once (gRPC stubs are
// thread-safe). It is movable, not copyable.
class PoolClient {
 public:
  // Above poold's default --max_message_bytes (65 MiB), so a whole 64 MiB
  // block fits in one Allocate or Read, with room for a server configured
  // somewhat larger.
  static constexpr int kDefaultMaxMessageBytes = 128 << 20;

  struct Options {
    // Deadline of each call, counted from its start. InfiniteDuration():
    // no deadline. Must be positive.
    absl::Duration timeout = absl::Seconds(30);
    // Largest message sent or received. Must be positive.
    int max_message_bytes = kDefaultMaxMessageBytes;
    // TLS (poolctl's --tls_ca_file and friends). All empty: plaintext.
    // ca_file: PEM CAs that sign the server's certificate (empty: the
    // system's); cert_file and key_file: this client's certificate and key
    // for mutual TLS; server_name: the name expected in the server's
    // certificate when the target's host is not it (an IP address, say).
    struct Tls {
      std::string ca_file;
      std::string cert_file;
      std::string key_file;
      std::string server_name;
      bool enabled() const {
        return !ca_file.empty() || !cert_file.empty() || !key_file.empty() ||
               !server_name.empty();
      }
    } tls;
  };

  // A client of the poold at `target`: "host:port", "[ipv6]:port",
  // "unix:/path/to/socket" or any other gRPC target name. Does not connect
  // yet (the TLS files are read now). INVALID_ARGUMENT for an empty target,
  // an unreadable TLS file, a certificate without its key, "unix:" without
  // a path, or
  // invalid options.
  static absl::StatusOr<PoolClient> Create(const std::string& target,
                                           const Options& options);
  static absl::StatusOr<PoolClient> Create(const std::string& target) {
    return Create(target, Options());
  }

  // A client over an existing channel (for example an in-process one).
  // REQUIRES: `channel` is not null and `options` are valid.
  PoolClient(std::shared_ptr<grpc::Channel> channel, std::string target,
             const Options& options);

  PoolClient(PoolClient&&) = default;
  PoolClient& operator=(PoolClient&&) = default;

  // Waits until the channel is connected to the server. UNAVAILABLE with
  // gRPC's reason when connecting failed (nothing listens, no such socket,
  // name not resolved); DEADLINE_EXCEEDED when `timeout` passed while still
  // connecting.
  absl::Status Connect(absl::Duration timeout);

  // Allocates a block of `size` bytes whose first bytes are `data` (the rest
  // is zero). With `size` 0 the block is exactly `data`. Returns its handle,
  // pool and sizes. INVALID_ARGUMENT for size 0 without data, a size above
  // the server's limit, or data longer than `size`; RESOURCE_EXHAUSTED when
  // the server is out of memory or busy.
  absl::StatusOr<v1::AllocateResponse> Allocate(uint64_t size,
                                                absl::string_view data = {});

  // Overwrites the bytes at `offset` of block `handle` with `data`.
  // NOT_FOUND for an unknown or freed handle; OUT_OF_RANGE when the bytes
  // do not fit in the block.
  absl::Status Write(uint64_t handle, uint64_t offset, absl::string_view data);

  // Returns `length` bytes of block `handle` from `offset`; `length` 0 means
  // to the end of the block. NOT_FOUND, OUT_OF_RANGE as for Write.
  absl::StatusOr<std::string> Read(uint64_t handle, uint64_t offset = 0,
                                   uint64_t length = 0);

  // Frees block `handle`; the handle never names a block again. NOT_FOUND
  // for an unknown or already freed handle.
  absl::Status Free(uint64_t handle);

  // Runs `request`'s operations in one call, in order; the answer holds one
  // result per operation, each with its own code (see
  // poold.v1.BatchResult). An error status only when the whole batch was
  // refused (too many operations, the server busy or shutting down) or the
  // call failed; then no operation ran, unless the call broke off after
  // the server took it (DEADLINE_EXCEEDED, UNAVAILABLE from the network).
  absl::StatusOr<v1::BatchResponse> Batch(const v1::BatchRequest& request);

  // Statistics of every pool, of the server's worker and of its automatic
  // defragmentation; per size class too when `include_classes`, and the
  // last defragmentation reports when `include_defrag_history`. From the
  // latest snapshot the server's worker published (at once, even while it
  // is busy), or, when `consistent`, taken by the worker after every call
  // this client made before (see poold.v1.GetStatsRequest.consistent).
  absl::StatusOr<v1::GetStatsResponse> GetStats(
      bool include_classes = false, bool include_defrag_history = false,
      bool consistent = false);

  // Statistics plus what a defragmentation of `pools` (empty: all) would
  // move and reclaim. Changes nothing. INVALID_ARGUMENT for
  // POOL_UNSPECIFIED or an unknown pool.
  absl::StatusOr<v1::FragmentationReport> AnalyzeFragmentation(
      absl::Span<const v1::Pool> pools = {});

  // Defragments `pools` (empty: all) and returns the report. A run that
  // stopped early (the deadline neared, shutdown) is still OK, with
  // `complete` false. Large heaps may need a longer timeout than other
  // calls: see set_timeout().
  absl::StatusOr<v1::DefragReport> TriggerDefragmentation(
      absl::Span<const v1::Pool> pools = {});

  // The serving status of `service` ("" is the server as a whole,
  // "poold.v1.PoolService" the pool service) from grpc.health.v1.Health.
  // NOT_FOUND for a service the server does not know.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> Health(
      const std::string& service = "");

  const std::string& target() const { return target_; }
  absl::Duration timeout() const { return timeout_; }
  // Sets the deadline of the calls that start afterwards.
  // REQUIRES: `timeout` > 0 (InfiniteDuration() for none).
  void set_timeout(absl::Duration timeout) { timeout_ = timeout; }

  // The underlying channel, for callers that need gRPC's asynchronous API
  // (poolctl load).
  const std::shared_ptr<grpc::Channel>& channel() const { return channel_; }

 private:
  // Sets the call's deadline from timeout_.
  void PrepareContext(grpc::ClientContext* context) const;

  std::string target_;
  absl::Duration timeout_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::PoolService::Stub> pool_stub_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_stub_;
};

}  // namespace poold::client

#endif  // POOLD_CLIENT_POOL_CLIENT_H_
