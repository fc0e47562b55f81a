// PooldServer: builds, starts and stops the poold gRPC server, its worker and
// its listening endpoints.
#ifndef POOLD_SERVER_POOLD_SERVER_H_
#define POOLD_SERVER_POOLD_SERVER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "server/endpoints.h"
#include "server/listener_watchdog.h"
#include "server/metrics_http_server.h"
#include "server/pool_service_impl.h"
#include "server/stats_board.h"
#include "server/tcp_acceptor.h"
#include "server/tls_settings.h"
#include "worker/pools/fault_injecting_os.h"
#include "worker/worker.h"

namespace poold {

// A running poold: the PoolService, the standard health service (SERVING
// while up) and server reflection, on TCP and/or a unix socket.
class PooldServer {
 public:
  struct Options {
    // TCP address, host:port or [ipv6]:port; port 0 picks a free port;
    // empty disables TCP.
    std::string listen = "127.0.0.1:50051";
    // Unix socket path (file mode 0660); empty: none. Always plaintext (the
    // pod's own app and probes).
    std::string unix_socket;
    // TLS on the TCP listener; off by default.
    TlsSettings tls;
    // Plaintext TCP on an address other than loopback is refused unless
    // this is set (the network itself is trusted).
    bool allow_insecure_remote = false;
    // Under mutual TLS, the operators' identities: they may name the blocks
    // of every identity (each block belongs to the identity that allocated
    // it), and when the list is not empty only they (and unix socket
    // clients) may call TriggerDefragmentation, AnalyzeFragmentation and
    // GetStats over TCP; other clients get PERMISSION_DENIED.
    std::vector<std::string> operator_identities;
    // Unknown handles (NOT_FOUND) one client (its identity, or its address)
    // may name per second in the long run, after a burst of ten times as
    // many; past that its Read, Write and Free calls answer
    // RESOURCE_EXHAUSTED. 0: no limit.
    double max_unknown_handles_per_second = 100;
    // Commands queued for the worker before RPCs are refused.
    uint64_t channel_capacity = 1024;
    // Largest gRPC message received or sent.
    uint64_t max_message_bytes = (64 + 1) << 20;
    // Largest block Allocate accepts.
    uint64_t max_block_bytes = 64 << 20;
    // Operations one Batch call may carry; more: INVALID_ARGUMENT. At most
    // max_message_bytes / 2 / PoolServiceImpl::kResultReserveBytes.
    uint64_t max_batch_operations = 1024;
    // Batches one BatchStream may have read and not yet answered (1 .. 64).
    uint64_t max_stream_batches_in_flight = 4;
    // Block bytes that calls in flight may hold: an Allocate's or a Write's
    // data, a Read's response, each until gRPC is done with the call (a
    // client that does not read its responses holds them). A call beyond it
    // answers RESOURCE_EXHAUSTED, unless nothing is held. 0: no limit.
    uint64_t max_payload_bytes_in_flight = 128 << 20;
    // Streams (calls) one HTTP/2 connection may have open at once; a client
    // with more waits inside its own gRPC library. Kept below
    // channel_capacity, one connection never fills the channel.
    uint32_t max_concurrent_streams = 100;
    // TCP connections open at once (0: no limit), and from one client
    // address (an IPv4 address, an IPv6 /64; 0: no limit). A connection
    // beyond either is closed as soon as it is accepted. max_connections is
    // lowered to fit the open-files limit (see EffectiveMaxConnections). The
    // unix socket has no such limit (its clients are the pod's own).
    uint32_t max_connections = 1024;
    uint32_t max_connections_per_address = 256;
    // Largest header block (metadata) of a call.
    uint32_t max_metadata_bytes = 16 << 10;
    // Memory gRPC may use for its connections and calls (a resource quota);
    // beyond it gRPC shrinks its buffers and windows. 0: no quota.
    uint64_t grpc_memory_bytes = 1 << 30;
    // How often poold pings a client connection without traffic, and how
    // long it waits for the answer before closing it (dead peers).
    absl::Duration keepalive_time = absl::Minutes(1);
    absl::Duration keepalive_timeout = absl::Seconds(20);
    // Clients may ping at most this often (also without calls); faster
    // pingers are told "too many pings" and disconnected.
    absl::Duration min_client_ping_interval = absl::Seconds(10);
    // A connection without calls for this long is closed (infinite: never).
    absl::Duration max_connection_idle = absl::Minutes(30);
    // A connection older than this is asked to reconnect; calls in flight
    // get max_connection_age_grace to finish (infinite: never).
    absl::Duration max_connection_age = absl::InfiniteDuration();
    absl::Duration max_connection_age_grace = absl::Seconds(30);
    // How long Shutdown waits for RPCs in flight before cancelling them.
    absl::Duration shutdown_grace = absl::Seconds(10);
    // How long main() keeps the drain stage (between BeginShutdown and
    // Shutdown) before closing the listeners; a second signal ends it.
    absl::Duration shutdown_drain = absl::ZeroDuration();
    // Resident bytes the pools may hold (0 = no limit). An allocation beyond
    // it waits for a defragmentation in slices (other commands flow between
    // them) when that can make room, then fails with RESOURCE_EXHAUSTED.
    uint64_t memory_limit_bytes = 0;
    // Time budget of one defragmentation slice.
    absl::Duration defrag_slice = absl::Milliseconds(1);
    // Empty memory unused this long goes back to the OS.
    absl::Duration cache_decay = absl::Seconds(1);
    // glibc malloc serves allocations of at least this many bytes (gRPC's
    // and protobuf's buffers of large messages) with mappings of their own,
    // returned to the OS when freed; 0 keeps glibc's adaptive threshold,
    // which grows after large frees and leaves such buffers in the heap.
    // Process-wide: Start() applies it.
    uint64_t heap_mmap_threshold_bytes = 64 << 10;
    // glibc malloc arenas at most (0: glibc's default, eight per core, which
    // gives each thread that allocates an arena of its own). Few arenas keep
    // the free memory gRPC's threads leave after traffic in few heaps, which
    // a trim empties; one arena costs more calls per second than two (docs/
    // PERFORMANCE.md, section 5). Process-wide: Start() applies it.
    uint32_t heap_arenas = 2;
    // Automatic defragmentation (see AutoDefragOptions); on by default.
    AutoDefragOptions auto_defrag = DefaultAutoDefrag();
    // How often poold checks, over a new connection to each of its own
    // addresses, that its listeners still accept (zero: never). After three
    // failed checks in a row: health NOT_SERVING, on_listener_failure, and
    // listener_failed() is true.
    absl::Duration listener_check_interval = absl::Seconds(10);
    // Called once (from the checking thread) when a listener stopped
    // accepting; poold's main() signals itself to stop, then exits 1. It
    // must not shut the server down itself (it would join its own thread).
    std::function<void()> on_listener_failure;
    // Where to serve Prometheus metrics over HTTP (GET /metrics), as
    // host:port or [ipv6]:port (port 0 picks a free one); empty: nowhere.
    // poold's --metrics_listen defaults to 127.0.0.1:9741.
    std::string metrics_listen;
    // TESTING ONLY: the worker takes no command until shutdown, so the
    // channel fills up and RESOURCE_EXHAUSTED can be tested deterministically.
    bool testing_hold_worker = false;
    // TESTING ONLY: the worker sleeps this long after every defragmentation
    // slice (zero: never), so a test's defragmentation outlasts its deadline.
    absl::Duration testing_slice_pause = absl::ZeroDuration();
    // TESTING ONLY: a fault to inject into one pool's calls to the OS, as
    // pools::ParseOsFaultSpec reads it ("medium:purge:1:always": every
    // purge of the medium pool fails with EIO). Empty: none.
    std::string testing_os_fault;
    // More services to serve beside PoolService on the same server, threads
    // and listeners (poold itself has none; the benchmarks add a no-op
    // service so gRPC's own cost can be measured on the same build).
    // Registered as given; not owned: each must outlive the PooldServer.
    // Their RPCs are not drained by BeginShutdown; they end with Shutdown.
    std::vector<grpc::Service*> extra_services;
  };

  // The automatic defragmentation poold runs with unless told otherwise.
  static AutoDefragOptions DefaultAutoDefrag() {
    AutoDefragOptions options;
    options.enabled = true;
    return options;
  }

  // Shortest listener_check_interval (a check may take up to 5 s).
  static constexpr absl::Duration kMinListenerCheckInterval = absl::Seconds(1);
  // How long a new connection may take to finish its handshake (HTTP/2
  // preface; TLS) before gRPC closes it and its place is free again.
  static constexpr absl::Duration kHandshakeTimeout = absl::Seconds(10);
  // Bounds of max_metadata_bytes.
  static constexpr uint32_t kMinMetadataBytes = 1 << 10;
  static constexpr uint32_t kMaxMetadataBytes = 1 << 20;

  // Largest accepted values of channel_capacity and max_message_bytes.
  static constexpr uint64_t kMaxChannelCapacity = uint64_t{1} << 20;
  static constexpr uint64_t kMaxMessageBytes = (uint64_t{1} << 31) - 1;
  // max_message_bytes must leave this much room above max_block_bytes for
  // the framing of a Read response or an Allocate request.
  static constexpr uint64_t kMessageOverheadBytes = 4096;
  // Bounds of defrag_slice.
  static constexpr absl::Duration kMinDefragSlice = absl::Microseconds(10);
  static constexpr absl::Duration kMaxDefragSlice = absl::Seconds(1);
  // Largest heap_mmap_threshold_bytes glibc accepts (HEAP_MAX_SIZE / 2).
  static constexpr uint64_t kMaxHeapMmapThreshold = uint64_t{32} << 20;
  // Largest heap_arenas.
  static constexpr uint32_t kMaxHeapArenas = 1024;

  // The connection limit poold applies: `requested` (0: none), lowered so
  // that the connections fit under `open_files_limit` with room for poold's
  // own descriptors (half of the limit, at most 256 of it).
  static uint32_t EffectiveMaxConnections(uint32_t requested,
                                          uint64_t open_files_limit);

  // INVALID_ARGUMENT, with the flag to fix, when `options` cannot work
  // (or when an extra service is null).
  static absl::Status ValidateOptions(const Options& options);

  // Validates `options`, claims the unix socket path (removing a stale
  // socket file; refusing a live one), then starts the worker and the gRPC
  // server. Fails with a message that names the address when a port or
  // socket is in use.
  static absl::StatusOr<std::unique_ptr<PooldServer>> Start(
      const Options& options);

  // Shuts down if Shutdown() was not called.
  ~PooldServer();

  PooldServer(const PooldServer&) = delete;
  PooldServer& operator=(const PooldServer&) = delete;

  // True once a listener was found to accept no more connections.
  // Thread-safe.
  bool listener_failed() const {
    return listener_failed_.load(std::memory_order_acquire);
  }

  // The addresses served, as gRPC targets: "127.0.0.1:50051" (with the port
  // the OS picked for port 0), "unix:/run/poold.sock".
  const std::vector<std::string>& targets() const { return targets_; }

  // Where the metrics are served ("http://127.0.0.1:9741/metrics"); empty
  // without metrics_listen.
  std::string metrics_url() const {
    return metrics_ != nullptr ? metrics_->url() : std::string();
  }

  // The /metrics body now: the worker's latest snapshot, with the queue, the
  // transport and the process read now. Thread-safe; never waits for the
  // worker.
  std::string RenderMetrics() const;

  // First stage of a graceful stop: health goes NOT_SERVING (watchers are
  // told), every new PoolService RPC answers UNAVAILABLE, and every queued
  // command is completed. The listeners stay open, so clients see the drain.
  // Idempotent. Call from one thread.
  void BeginShutdown();

  // Graceful stop: BeginShutdown() if not done, then the listeners close,
  // RPCs still in flight get up to `shutdown_grace` before they are
  // cancelled, and the unix socket file is removed. Idempotent. Call from one
  // thread.
  void Shutdown();

 private:
  PooldServer(const Options& options,
              std::unique_ptr<pools::FaultInjectingOs> testing_os,
              std::unique_ptr<pools::PoolSet> pools);

  // Builds and starts the gRPC server and the TCP acceptor; fills targets_.
  absl::Status StartGrpc();
  // `target` accepts no more connections (`why`): logs, NOT_SERVING, tells
  // the owner.
  void OnListenerDead(const std::string& target, const std::string& why);

  // Failed listener checks in a row that mean a dead listener.
  static constexpr int kListenerChecksBeforeFailure = 3;

  const Options options_;
  // Destroyed in reverse order: the gRPC server before the service, the
  // service before the worker it submits to, the worker (and its pools)
  // before the testing fault's OsInterface they call.
  std::unique_ptr<pools::FaultInjectingOs> testing_os_;
  StatsBoard stats_board_;  // the worker publishes here until it stops
  Worker worker_;
  PoolServiceImpl service_;
  // The TCP listener (none without --listen), and the door it hands
  // connections to gRPC through. Destroyed after server_; stopped before.
  std::unique_ptr<TcpAcceptor> tcp_acceptor_;
  // tcp_acceptor_ once started, for the statistics (read by gRPC's and the
  // metrics threads).
  std::atomic<const TcpAcceptor*> acceptor_view_{nullptr};
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> tcp_door_;
  std::unique_ptr<grpc::Server> server_;
  std::vector<std::string> targets_;
  bool owns_unix_socket_ = false;
  FileId unix_socket_id_;  // when owns_unix_socket_
  bool draining_ = false;
  bool shut_down_ = false;
  std::atomic<bool> listener_failed_{false};
  // Destroyed before server_ (BeginShutdown resets it first).
  std::unique_ptr<ListenerWatchdog> watchdog_;
  // Destroyed first: its threads read the board, the service and the worker.
  std::unique_ptr<MetricsHttpServer> metrics_;
};

}  // namespace poold

#endif  // POOLD_SERVER_POOLD_SERVER_H_
