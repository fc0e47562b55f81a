// server_flags: poold's command-line flags and the PooldServer::Options they
// make.
#include "server/server_flags.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/time.h"

namespace {
const poold::PooldServer::Options kDefaults;
}  // namespace

ABSL_FLAG(std::string, listen, kDefaults.listen,
          "TCP address to serve on: host:port or [ipv6]:port; port 0 picks a "
          "free port; empty disables TCP.");
ABSL_FLAG(std::string, unix_socket, kDefaults.unix_socket,
          "Unix socket path to serve on as well (file mode 0660); empty: "
          "none. A stale socket file is removed; a live one makes poold "
          "refuse to start.");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate chain of the server: the TCP listener speaks TLS "
          "(with --tls_key_file). Reread every --tls_reload_interval, so "
          "rotated certificates serve new connections without a restart.");
ABSL_FLAG(std::string, tls_key_file, "",
          "PEM private key (unencrypted) of --tls_cert_file.");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM bundle of the CAs whose client certificates poold accepts; "
          "clients are asked for a certificate (mutual TLS). Empty: they are "
          "not.");
ABSL_FLAG(bool, tls_require_client_cert, false,
          "Refuse, in the TLS handshake, clients without a certificate "
          "signed by --tls_client_ca_file.");
ABSL_FLAG(absl::Duration, tls_reload_interval, absl::Seconds(10),
          "How often poold rereads the TLS files (at least 1s).");
ABSL_FLAG(bool, allow_insecure_remote, false,
          "Serve plaintext on a --listen address other than loopback. "
          "Without it poold refuses: anyone who reaches the port could read, "
          "overwrite and free every block. Prefer TLS.");
ABSL_FLAG(std::vector<std::string>, operator_identities, {},
          "Under mutual TLS, the operators: client identities (a URI or DNS "
          "SAN of their certificates; never the common name), comma "
          "separated. A block belongs to the identity that allocated it and "
          "other identities get NOT_FOUND for it, except operators. When the "
          "list is not empty, only operators and unix socket clients may "
          "call TriggerDefragmentation, AnalyzeFragmentation and GetStats; "
          "other TCP clients get PERMISSION_DENIED.");
ABSL_FLAG(double, max_unknown_handles_per_second,
          kDefaults.max_unknown_handles_per_second,
          "Unknown, freed or other identities' handles (NOT_FOUND) one "
          "client may name per second in the long run, after a burst of ten "
          "times as many; past that its Read, Write and Free calls answer "
          "RESOURCE_EXHAUSTED until its budget refills. A client is its TLS "
          "identity, its IPv4 address or its IPv6 /64 (all unix socket "
          "clients are one). Slows handle guessers down; 0: no limit, at "
          "most 1000000.");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9741",
          "Where to serve Prometheus metrics over HTTP (GET /metrics): "
          "host:port or [ipv6]:port; port 0 picks a free port; empty: no "
          "metrics. Loopback by default; in a pod, use :9741 (all "
          "interfaces) so that Prometheus can scrape it. An address in use "
          "stops poold at start.");
ABSL_FLAG(uint64_t, channel_capacity, kDefaults.channel_capacity,
          "Commands queued for the worker thread; when full, RPCs answer "
          "RESOURCE_EXHAUSTED at once.");
ABSL_FLAG(uint64_t, max_message_bytes, kDefaults.max_message_bytes,
          "Largest gRPC message received or sent; at least --max_block_bytes "
          "+ 4096.");
ABSL_FLAG(uint64_t, max_block_bytes, kDefaults.max_block_bytes,
          "Largest block Allocate accepts.");
ABSL_FLAG(uint64_t, max_batch_operations, kDefaults.max_batch_operations,
          "Operations one Batch call may carry; a larger batch answers "
          "INVALID_ARGUMENT. At most --max_message_bytes / 1024.");
ABSL_FLAG(uint64_t, max_stream_batches_in_flight,
          kDefaults.max_stream_batches_in_flight,
          "Batches one BatchStream may have read and not yet answered "
          "(1..64); the stream reads no further request until one is "
          "answered.");
ABSL_FLAG(uint64_t, max_payload_bytes_in_flight,
          kDefaults.max_payload_bytes_in_flight,
          "Block bytes that calls in flight may hold: Allocate and Write data "
          "until answered, Read responses until the client has read them. A "
          "call beyond it answers RESOURCE_EXHAUSTED (one call of any size "
          "passes when nothing is held); 0: no limit.");
ABSL_FLAG(uint32_t, max_concurrent_streams, kDefaults.max_concurrent_streams,
          "Calls one client connection may have open at once; the client's "
          "gRPC queues the rest, so one connection cannot fill the command "
          "channel while this stays below --channel_capacity.");
ABSL_FLAG(uint32_t, max_connections, kDefaults.max_connections,
          "TCP connections open at once; one beyond it is closed as soon as "
          "accepted. Lowered to fit the open-files limit; 0: that limit "
          "only. The unix socket has no such limit.");
ABSL_FLAG(uint32_t, max_connections_per_address,
          kDefaults.max_connections_per_address,
          "TCP connections open at once from one client address (an IPv4 "
          "address, an IPv6 /64); 0: no limit.");
ABSL_FLAG(uint32_t, max_metadata_bytes, kDefaults.max_metadata_bytes,
          "Largest header block (metadata) of a call, 1024 to 1048576.");
ABSL_FLAG(uint64_t, grpc_memory_bytes, kDefaults.grpc_memory_bytes,
          "Memory gRPC may use for connections and calls (its resource "
          "quota): past it gRPC shrinks its buffers and flow-control "
          "windows. At least twice --max_message_bytes; 0: no quota.");
ABSL_FLAG(absl::Duration, keepalive_time, kDefaults.keepalive_time,
          "poold pings a client connection quiet for this long...");
ABSL_FLAG(absl::Duration, keepalive_timeout, kDefaults.keepalive_timeout,
          "...and closes it when the ping is not answered within this.");
ABSL_FLAG(absl::Duration, min_client_ping_interval,
          kDefaults.min_client_ping_interval,
          "Clients may send keepalive pings this often at most (also without "
          "calls); faster pingers are disconnected (\"too_many_pings\").");
ABSL_FLAG(absl::Duration, max_connection_idle, kDefaults.max_connection_idle,
          "A client connection without calls for this long is closed; "
          "\"inf\": never.");
ABSL_FLAG(absl::Duration, max_connection_age, kDefaults.max_connection_age,
          "A client connection older than this is asked to reconnect "
          "(GOAWAY); \"inf\": never.");
ABSL_FLAG(absl::Duration, max_connection_age_grace,
          kDefaults.max_connection_age_grace,
          "Time the calls of a connection past --max_connection_age get to "
          "finish before it is closed.");
ABSL_FLAG(absl::Duration, listener_check_interval,
          kDefaults.listener_check_interval,
          "How often poold health-checks its own addresses over new "
          "connections; after 3 failures in a row (a listener that stopped "
          "accepting, e.g. when accept() ran out of file descriptors) health "
          "goes NOT_SERVING and poold exits 1 so that it is restarted. 0: no "
          "checks.");
ABSL_FLAG(absl::Duration, shutdown_grace, kDefaults.shutdown_grace,
          "On SIGTERM/SIGINT, how long RPCs in flight may still finish "
          "before they are cancelled.");
ABSL_FLAG(absl::Duration, shutdown_drain, kDefaults.shutdown_drain,
          "On SIGTERM/SIGINT, how long poold keeps its listeners open while "
          "draining (health NOT_SERVING, new RPCs UNAVAILABLE) before it "
          "closes them; a second signal ends the drain at once. \"inf\": "
          "until the second signal.");
ABSL_FLAG(uint64_t, memory_limit_bytes, kDefaults.memory_limit_bytes,
          "Resident bytes the pools may hold, metadata included (0: no "
          "limit). An allocation that would pass it waits while the worker "
          "defragments the pools in slices, then fails with "
          "RESOURCE_EXHAUSTED if that cannot make room. Leave room above it "
          "for gRPC's own buffers when sizing a container.");
ABSL_FLAG(uint64_t, defrag_slice_us,
          absl::ToInt64Microseconds(kDefaults.defrag_slice),
          "Time budget of one defragmentation slice, in microseconds; "
          "between slices the worker serves other requests.");
ABSL_FLAG(absl::Duration, cache_decay, kDefaults.cache_decay,
          "Empty memory the pools keep for quick reuse goes back to the OS "
          "after this long unused.");
ABSL_FLAG(uint64_t, heap_mmap_threshold_bytes,
          kDefaults.heap_mmap_threshold_bytes,
          "The C library's malloc serves allocations of at least this many "
          "bytes (gRPC's buffers of large messages) with their own mappings, "
          "returned to the OS when freed; 0 keeps glibc's adaptive "
          "threshold, which keeps such buffers in the heap. At most 33554432.");
ABSL_FLAG(uint32_t, heap_arenas, kDefaults.heap_arenas,
          "glibc malloc arenas at most, shared by all threads: the free "
          "memory gRPC leaves after traffic stays in few heaps, which the "
          "worker's trims empty. 0: glibc's default (eight per core, an arena "
          "per thread). At most 1024.");
ABSL_FLAG(bool, auto_defrag, kDefaults.auto_defrag.enabled,
          "Defragment on its own: at each look (--auto_defrag_interval) the "
          "worker starts a run when the exact reclaimable bytes reach "
          "--auto_defrag_min_reclaimable_bytes and fragmentation (1 - live / "
          "resident, all pools) reaches --auto_defrag_start_fragmentation; "
          "the run stops below --auto_defrag_stop_fragmentation, uses at "
          "most its CPU share, gives way to TriggerDefragmentation and "
          "memory-limit runs, and backs off when runs return little. "
          "GetStats.auto_defrag says what it does and why.");
ABSL_FLAG(uint64_t, auto_defrag_min_reclaimable_bytes,
          kDefaults.auto_defrag.min_reclaimable_bytes,
          "No automatic run unless a full defragmentation would return at "
          "least this many bytes to the OS.");
ABSL_FLAG(double, auto_defrag_start_fragmentation,
          kDefaults.auto_defrag.start_fragmentation,
          "Fragmentation (0..1) at which an automatic run starts.");
ABSL_FLAG(double, auto_defrag_stop_fragmentation,
          kDefaults.auto_defrag.stop_fragmentation,
          "Fragmentation (0..1, at most the start one) below which an "
          "automatic run stops.");
ABSL_FLAG(double, auto_defrag_min_cpu, kDefaults.auto_defrag.min_cpu_share,
          "Share of one core (0..1) an automatic run may use at the start "
          "threshold; it rises linearly to --auto_defrag_max_cpu at twice "
          "that fragmentation.");
ABSL_FLAG(double, auto_defrag_max_cpu, kDefaults.auto_defrag.max_cpu_share,
          "Share of one core (0..1) an automatic run may use at most.");
ABSL_FLAG(absl::Duration, auto_defrag_interval, kDefaults.auto_defrag.interval,
          "Time between two looks at the pools' statistics; runs that "
          "return little double the wait before the next run, up to 64 times "
          "(fragmentation at twice the start threshold ends the wait).");
ABSL_FLAG(absl::Duration, auto_defrag_min_interval,
          kDefaults.auto_defrag.min_interval,
          "While the pools' waste (resident - live) grows, the next look "
          "comes when half the room left below the start threshold would be "
          "used at the growth rate seen, but no sooner than this (at most "
          "--auto_defrag_interval; looks happen on the worker's 100 ms "
          "maintenance tick).");
ABSL_FLAG(bool, testing_hold_worker, false,
          "TESTING ONLY, never in production: the worker takes no commands "
          "until shutdown, so the command channel fills up (used by the "
          "end-to-end test of RESOURCE_EXHAUSTED).");
ABSL_FLAG(absl::Duration, testing_defrag_slice_pause, absl::ZeroDuration(),
          "TESTING ONLY, never in production: the worker sleeps this long "
          "after every defragmentation slice, serving nothing meanwhile (used "
          "by the end-to-end test of a defragmentation stopped at its "
          "deadline).");

ABSL_FLAG(std::string, testing_os_fault, "",
          "TESTING ONLY, never in production: POOL:CALL:N[:always] makes "
          "that pool's Nth call of that kind to the OS fail with EIO (and "
          "every later one with :always); POOL is small, medium or large, "
          "CALL map, unmap, commit or purge (used by the end-to-end test of "
          "a pool that fails its defragmentation).");

namespace poold {

PooldServer::Options ServerOptionsFromFlags() {
  PooldServer::Options options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.unix_socket = absl::GetFlag(FLAGS_unix_socket);
  options.tls.cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options.tls.key_file = absl::GetFlag(FLAGS_tls_key_file);
  options.tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  options.tls.require_client_cert =
      absl::GetFlag(FLAGS_tls_require_client_cert);
  options.tls.reload_interval = absl::GetFlag(FLAGS_tls_reload_interval);
  options.allow_insecure_remote = absl::GetFlag(FLAGS_allow_insecure_remote);
  options.operator_identities = absl::GetFlag(FLAGS_operator_identities);
  options.max_unknown_handles_per_second =
      absl::GetFlag(FLAGS_max_unknown_handles_per_second);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.channel_capacity = absl::GetFlag(FLAGS_channel_capacity);
  options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.max_block_bytes = absl::GetFlag(FLAGS_max_block_bytes);
  options.max_batch_operations = absl::GetFlag(FLAGS_max_batch_operations);
  options.max_stream_batches_in_flight =
      absl::GetFlag(FLAGS_max_stream_batches_in_flight);
  options.max_payload_bytes_in_flight =
      absl::GetFlag(FLAGS_max_payload_bytes_in_flight);
  options.max_concurrent_streams = absl::GetFlag(FLAGS_max_concurrent_streams);
  options.max_connections = absl::GetFlag(FLAGS_max_connections);
  options.max_connections_per_address =
      absl::GetFlag(FLAGS_max_connections_per_address);
  options.max_metadata_bytes = absl::GetFlag(FLAGS_max_metadata_bytes);
  options.grpc_memory_bytes = absl::GetFlag(FLAGS_grpc_memory_bytes);
  options.keepalive_time = absl::GetFlag(FLAGS_keepalive_time);
  options.keepalive_timeout = absl::GetFlag(FLAGS_keepalive_timeout);
  options.min_client_ping_interval =
      absl::GetFlag(FLAGS_min_client_ping_interval);
  options.max_connection_idle = absl::GetFlag(FLAGS_max_connection_idle);
  options.max_connection_age = absl::GetFlag(FLAGS_max_connection_age);
  options.max_connection_age_grace =
      absl::GetFlag(FLAGS_max_connection_age_grace);
  options.listener_check_interval =
      absl::GetFlag(FLAGS_listener_check_interval);
  options.shutdown_grace = absl::GetFlag(FLAGS_shutdown_grace);
  options.shutdown_drain = absl::GetFlag(FLAGS_shutdown_drain);
  options.memory_limit_bytes = absl::GetFlag(FLAGS_memory_limit_bytes);
  options.defrag_slice =
      absl::Microseconds(absl::GetFlag(FLAGS_defrag_slice_us));
  options.cache_decay = absl::GetFlag(FLAGS_cache_decay);
  options.heap_arenas = absl::GetFlag(FLAGS_heap_arenas);
  options.heap_mmap_threshold_bytes =
      absl::GetFlag(FLAGS_heap_mmap_threshold_bytes);
  options.auto_defrag.enabled = absl::GetFlag(FLAGS_auto_defrag);
  options.auto_defrag.min_reclaimable_bytes =
      absl::GetFlag(FLAGS_auto_defrag_min_reclaimable_bytes);
  options.auto_defrag.start_fragmentation =
      absl::GetFlag(FLAGS_auto_defrag_start_fragmentation);
  options.auto_defrag.stop_fragmentation =
      absl::GetFlag(FLAGS_auto_defrag_stop_fragmentation);
  options.auto_defrag.min_cpu_share = absl::GetFlag(FLAGS_auto_defrag_min_cpu);
  options.auto_defrag.max_cpu_share = absl::GetFlag(FLAGS_auto_defrag_max_cpu);
  options.auto_defrag.interval = absl::GetFlag(FLAGS_auto_defrag_interval);
  // A shorter --auto_defrag_interval lowers the minimum with it.
  options.auto_defrag.min_interval =
      std::min(absl::GetFlag(FLAGS_auto_defrag_min_interval),
               options.auto_defrag.interval);
  options.auto_defrag.max_backoff = 64 * options.auto_defrag.interval;
  options.testing_hold_worker = absl::GetFlag(FLAGS_testing_hold_worker);
  options.testing_slice_pause = absl::GetFlag(FLAGS_testing_defrag_slice_pause);
  options.testing_os_fault = absl::GetFlag(FLAGS_testing_os_fault);
  return options;
}

}  // namespace poold
