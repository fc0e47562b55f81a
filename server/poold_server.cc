// PooldServer: server setup and graceful shutdown.
#include "server/poold_server.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <system_error>
#include <utility>

#include "absl/memory/memory.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "glog/logging.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "server/endpoints.h"
#include "server/metrics_renderer.h"
#include "server/open_files_limit.h"
#include "server/process_metrics.h"
#include "server/proto_convert.h"
#include "worker/process_memory.h"

namespace poold {
namespace {

// The socket file's mode: owner and group may connect.
constexpr mode_t kUnixSocketMode = 0660;

// `d` as a gRPC channel argument in milliseconds; INT_MAX (gRPC's "no
// limit") when infinite or too long.
int ChannelArgMillis(absl::Duration d) {
  if (d >= absl::Milliseconds(std::numeric_limits<int>::max())) {
    return std::numeric_limits<int>::max();
  }
  return static_cast<int>(absl::ToInt64Milliseconds(d));
}

}  // namespace

uint32_t PooldServer::EffectiveMaxConnections(uint32_t requested,
                                              uint64_t open_files_limit) {
  const uint64_t room =
      open_files_limit - std::min<uint64_t>(open_files_limit / 2, 256);
  const uint64_t fits =
      std::clamp<uint64_t>(room, 1, std::numeric_limits<uint32_t>::max());
  if (requested == 0 || requested > fits) return static_cast<uint32_t>(fits);
  return requested;
}

absl::Status PooldServer::ValidateOptions(const Options& options) {
  if (!options.testing_os_fault.empty()) {
    if (absl::StatusOr<pools::OsFaultSpec> spec =
            pools::ParseOsFaultSpec(options.testing_os_fault);
        !spec.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--testing_os_fault: ", spec.status().message()));
    }
  }
  if (options.listen.empty() && options.unix_socket.empty()) {
    return absl::InvalidArgumentError(
        "nothing to listen on: --listen and --unix_socket are both empty");
  }
  if (!options.listen.empty()) {
    absl::StatusOr<HostPort> address = ParseListenAddress(options.listen);
    if (!address.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--listen: ", address.status().message()));
    }
    if (absl::Status s =
            CheckPlaintextListener(address->host, options.tls.enabled(),
                                   options.allow_insecure_remote);
        !s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("--listen=", options.listen, ": ", s.message()));
    }
  } else if (options.tls.enabled()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file serves TLS on the TCP listener, but --listen is "
        "empty (the unix socket is always plaintext)");
  }
  if (absl::Status s = ValidateTlsSettings(options.tls); !s.ok()) return s;
  if (!(options.max_unknown_handles_per_second >= 0 &&
        options.max_unknown_handles_per_second <=
            UnknownHandleLimiter::kMaxPerSecond)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_unknown_handles_per_second must be 0 (no limit) "
                     "to ",
                     UnknownHandleLimiter::kMaxPerSecond));
  }
  if (!options.operator_identities.empty() && !options.tls.asks_client_cert()) {
    return absl::InvalidArgumentError(
        "--operator_identities needs mutual TLS (--tls_client_ca_file): "
        "without client certificates there are no identities");
  }
  if (!options.metrics_listen.empty()) {
    if (absl::StatusOr<HostPort> address =
            ParseListenAddress(options.metrics_listen);
        !address.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--metrics_listen: ", address.status().message()));
    }
  }
  if (!options.unix_socket.empty()) {
    if (absl::Status s = ValidateUnixSocketPath(options.unix_socket); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--unix_socket: ", s.message()));
    }
  }
  if (options.channel_capacity == 0 ||
      options.channel_capacity > kMaxChannelCapacity) {
    return absl::InvalidArgumentError(
        absl::StrCat("--channel_capacity must be from 1 to ",
                     kMaxChannelCapacity, ", not ", options.channel_capacity));
  }
  if (options.max_block_bytes == 0) {
    return absl::InvalidArgumentError("--max_block_bytes must be above 0");
  }
  if (options.max_message_bytes > kMaxMessageBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_message_bytes must be at most ", kMaxMessageBytes,
                     " (gRPC's limit)"));
  }
  if (options.max_message_bytes <
      options.max_block_bytes + kMessageOverheadBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_message_bytes (", options.max_message_bytes,
                     ") must be at least --max_block_bytes (",
                     options.max_block_bytes, ") + ", kMessageOverheadBytes,
                     ", or a whole block could not be written or read"));
  }
  if (const uint64_t most =
          options.max_message_bytes / 2 / PoolServiceImpl::kResultReserveBytes;
      options.max_batch_operations == 0 ||
      options.max_batch_operations > most) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_batch_operations must be from 1 to ", most,
                     " (half of --max_message_bytes at ",
                     PoolServiceImpl::kResultReserveBytes,
                     " bytes per result), not ", options.max_batch_operations));
  }
  if (options.max_stream_batches_in_flight == 0 ||
      options.max_stream_batches_in_flight > 64) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_stream_batches_in_flight must be from 1 to 64, "
                     "not ",
                     options.max_stream_batches_in_flight));
  }
  if (options.max_concurrent_streams == 0 ||
      options.max_concurrent_streams >
          static_cast<uint32_t>(std::numeric_limits<int>::max())) {
    return absl::InvalidArgumentError(
        absl::StrCat("--max_concurrent_streams must be from 1 to ",
                     std::numeric_limits<int>::max()));
  }
  if (options.max_metadata_bytes < kMinMetadataBytes ||
      options.max_metadata_bytes > kMaxMetadataBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--max_metadata_bytes must be from ", kMinMetadataBytes, " to ",
        kMaxMetadataBytes, ", not ", options.max_metadata_bytes));
  }
  if (options.grpc_memory_bytes != 0 &&
      options.grpc_memory_bytes < 2 * options.max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--grpc_memory_bytes (", options.grpc_memory_bytes,
        ") must be 0 (no quota) or at least twice --max_message_bytes (",
        options.max_message_bytes, "), or a largest message could not pass"));
  }
  for (const auto& [name, value] :
       {std::pair<const char*, absl::Duration>{"--keepalive_time",
                                               options.keepalive_time},
        {"--keepalive_timeout", options.keepalive_timeout},
        {"--min_client_ping_interval", options.min_client_ping_interval},
        {"--max_connection_idle", options.max_connection_idle},
        {"--max_connection_age", options.max_connection_age},
        {"--max_connection_age_grace", options.max_connection_age_grace}}) {
    if (value <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, " must be above 0 (\"inf\": no limit)"));
    }
  }
  if (options.listener_check_interval < absl::ZeroDuration() ||
      (options.listener_check_interval > absl::ZeroDuration() &&
       options.listener_check_interval < kMinListenerCheckInterval)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--listener_check_interval must be 0 (no checks) or at least ",
        absl::FormatDuration(kMinListenerCheckInterval)));
  }
  if (options.shutdown_grace < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--shutdown_grace must not be negative");
  }
  if (options.shutdown_drain < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--shutdown_drain must not be negative");
  }
  if (options.defrag_slice < kMinDefragSlice ||
      options.defrag_slice > kMaxDefragSlice) {
    return absl::InvalidArgumentError(
        absl::StrCat("--defrag_slice_us must be from ",
                     absl::ToInt64Microseconds(kMinDefragSlice), " to ",
                     absl::ToInt64Microseconds(kMaxDefragSlice), ", not ",
                     absl::ToInt64Microseconds(options.defrag_slice)));
  }
  if (options.cache_decay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--cache_decay must not be negative");
  }
  if (options.testing_slice_pause < absl::ZeroDuration() ||
      options.testing_slice_pause > absl::Seconds(1)) {
    return absl::InvalidArgumentError(
        "--testing_defrag_slice_pause must be from 0 to 1s");
  }
  if (options.heap_arenas > kMaxHeapArenas) {
    return absl::InvalidArgumentError(
        absl::StrCat("--heap_arenas must be from 0 (glibc's default) to ",
                     kMaxHeapArenas, ", not ", options.heap_arenas));
  }
  if (options.heap_mmap_threshold_bytes > kMaxHeapMmapThreshold) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--heap_mmap_threshold_bytes must be at most ", kMaxHeapMmapThreshold,
        " (glibc's limit), not ", options.heap_mmap_threshold_bytes));
  }
  if (const std::string error = AutoDefragOptionsError(options.auto_defrag);
      !error.empty()) {
    return absl::InvalidArgumentError(error);
  }
  for (const grpc::Service* service : options.extra_services) {
    if (service == nullptr) {
      return absl::InvalidArgumentError("extra_services holds a null service");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<PooldServer>> PooldServer::Start(
    const Options& options) {
  if (absl::Status s = ValidateOptions(options); !s.ok()) return s;
  if (!options.unix_socket.empty()) {
    if (absl::Status s = ClaimUnixSocketPath(options.unix_socket); !s.ok()) {
      return s;
    }
  }
  pools::PoolSetOptions pool_options;
  pool_options.max_block_bytes = options.max_block_bytes;
  pool_options.memory_limit_bytes = options.memory_limit_bytes;
  pool_options.cache_decay = options.cache_decay;
  std::unique_ptr<pools::FaultInjectingOs> testing_os;
  if (!options.testing_os_fault.empty()) {
    const pools::OsFaultSpec spec =
        *pools::ParseOsFaultSpec(options.testing_os_fault);
    testing_os = std::make_unique<pools::FaultInjectingOs>();
    testing_os->FailAt(spec.call, spec.nth, EIO, spec.repeat);
    pool_options.os[pools::PoolIndex(spec.pool)] = testing_os.get();
  }
  absl::StatusOr<std::unique_ptr<pools::PoolSet>> pools =
      pools::PoolSet::Create(pool_options);
  if (!pools.ok()) {
    return absl::Status(
        pools.status().code(),
        absl::StrCat("cannot set up the pools: ", pools.status().message()));
  }
  if (options.heap_mmap_threshold_bytes > 0 &&
      !ProcessMemory::SetMmapThreshold(options.heap_mmap_threshold_bytes)) {
    LOG(WARNING) << "the C library refused --heap_mmap_threshold_bytes="
                 << options.heap_mmap_threshold_bytes
                 << "; large messages may stay in the heap until it is "
                    "trimmed";
  }
  // Debian's abseil checks every absl::Mutex acquisition for lock-order
  // cycles (gRPC takes several per call, and a global graph of them), which
  // cost about 2 % of the server's CPU under load: a debugging aid, off in
  // optimized builds. (TSan, in CI, finds lock-order inversions itself.)
#ifdef NDEBUG
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  const char* tunables = getenv("GLIBC_TUNABLES");
  if (getenv("MALLOC_ARENA_MAX") != nullptr ||
      (tunables != nullptr && absl::StrContains(tunables, "arena_max"))) {
    LOG(INFO) << "the environment sets glibc's arena limit; --heap_arenas="
              << options.heap_arenas << " is not applied";
  } else if (options.heap_arenas > 0 &&
             !ProcessMemory::SetArenaLimit(options.heap_arenas)) {
    LOG(WARNING) << "the C library refused --heap_arenas="
                 << options.heap_arenas;
  }
  // More connections before accept() runs out of descriptors (which stops
  // gRPC 1.51's listener for good: the watchdog below catches that).
  if (absl::StatusOr<OpenFilesLimit> files = RaiseOpenFilesLimit();
      !files.ok()) {
    LOG(WARNING) << "open files limit unchanged: " << files.status();
  } else if (files->soft != files->soft_before) {
    LOG(INFO) << "open files limit raised from " << files->soft_before
              << " to the hard limit, " << files->soft;
  }
  auto server = absl::WrapUnique(
      new PooldServer(options, std::move(testing_os), *std::move(pools)));
  // Before gRPC: an address in use stops poold before it serves anything.
  if (!options.metrics_listen.empty()) {
    const PooldServer* self = server.get();
    absl::StatusOr<std::unique_ptr<MetricsHttpServer>> metrics =
        MetricsHttpServer::Start(options.metrics_listen,
                                 [self] { return self->RenderMetrics(); });
    if (!metrics.ok()) return metrics.status();
    server->metrics_ = *std::move(metrics);
    LOG(INFO) << "poold serving metrics at " << server->metrics_->url();
  }
  if (absl::Status s = server->StartGrpc(); !s.ok()) return s;
  if (options.listener_check_interval > absl::ZeroDuration() &&
      !options.unix_socket.empty()) {
    PooldServer* self = server.get();
    std::vector<ListenerWatchdog::Target> targets;
    // gRPC's own listener, the unix socket's, can stop on EMFILE; poold's
    // TCP acceptor cannot (and checking it over a connection would read a
    // full --max_connections as a dead listener).
    for (const std::string& target : server->targets_) {
      if (absl::StartsWith(target, "unix:")) targets.push_back({target, false});
    }
    server->watchdog_ = std::make_unique<ListenerWatchdog>(
        std::move(targets), options.listener_check_interval,
        kListenerChecksBeforeFailure,
        [self](const std::string& target, const std::string& error) {
          self->OnListenerDead(
              target, absl::StrCat(error, " (", kListenerChecksBeforeFailure,
                                   " checks in a row)"));
        });
  }

  LOG(INFO)
      << "poold started: listen=\"" << options.listen << "\" unix_socket=\""
      << options.unix_socket
      << "\" channel_capacity=" << options.channel_capacity
      << " max_message_bytes=" << options.max_message_bytes
      << " max_batch_operations=" << options.max_batch_operations
      << " max_block_bytes=" << options.max_block_bytes
      << " max_payload_bytes_in_flight=" << options.max_payload_bytes_in_flight
      << " max_concurrent_streams=" << options.max_concurrent_streams
      << " max_connections=" << options.max_connections
      << " max_connections_per_address=" << options.max_connections_per_address
      << " max_metadata_bytes=" << options.max_metadata_bytes
      << " grpc_memory_bytes=" << options.grpc_memory_bytes
      << " memory_limit_bytes=" << options.memory_limit_bytes
      << " defrag_slice=" << absl::FormatDuration(options.defrag_slice)
      << " cache_decay=" << absl::FormatDuration(options.cache_decay)
      << " heap_mmap_threshold_bytes=" << options.heap_mmap_threshold_bytes
      << " heap_arenas=" << options.heap_arenas
      << " shutdown_grace=" << absl::FormatDuration(options.shutdown_grace)
      << " shutdown_drain=" << absl::FormatDuration(options.shutdown_drain)
      << " auto_defrag=" << (options.auto_defrag.enabled ? "true" : "false")
      << " auto_defrag_min_reclaimable_bytes="
      << options.auto_defrag.min_reclaimable_bytes
      << " auto_defrag_start_fragmentation="
      << options.auto_defrag.start_fragmentation
      << " auto_defrag_stop_fragmentation="
      << options.auto_defrag.stop_fragmentation
      << " auto_defrag_cpu=" << options.auto_defrag.min_cpu_share << ".."
      << options.auto_defrag.max_cpu_share << " auto_defrag_interval="
      << absl::FormatDuration(options.auto_defrag.interval)
      << " auto_defrag_min_interval="
      << absl::FormatDuration(options.auto_defrag.min_interval);
  for (const std::string& target : server->targets_) {
    LOG(INFO) << "poold listening on " << target;
  }
  if (options.max_concurrent_streams > options.channel_capacity) {
    LOG(WARNING) << "--max_concurrent_streams="
                 << options.max_concurrent_streams
                 << " is above --channel_capacity=" << options.channel_capacity
                 << ": one client connection can fill the command channel and "
                    "see RESOURCE_EXHAUSTED";
  }
  if (options.testing_hold_worker) {
    LOG(WARNING) << "TESTING ONLY (--testing_hold_worker): the worker takes "
                    "no commands until shutdown";
  }
  if (options.testing_slice_pause > absl::ZeroDuration()) {
    LOG(WARNING) << "TESTING ONLY (--testing_defrag_slice_pause="
                 << absl::FormatDuration(options.testing_slice_pause)
                 << "): the worker sleeps after every defragmentation slice";
  }
  if (!options.testing_os_fault.empty()) {
    LOG(WARNING) << "TESTING ONLY (--testing_os_fault="
                 << options.testing_os_fault
                 << "): calls of that pool to the OS are made to fail";
  }
  return server;
}

PooldServer::PooldServer(const Options& options,
                         std::unique_ptr<pools::FaultInjectingOs> testing_os,
                         std::unique_ptr<pools::PoolSet> pools)
    : options_(options),
      testing_os_(std::move(testing_os)),
      worker_(
          Worker::Options{
              .channel_capacity = options.channel_capacity,
              .start_paused = options.testing_hold_worker,
              .defrag_slice = options.defrag_slice,
              .auto_defrag = options.auto_defrag,
              .stats_sink = &stats_board_,
              .testing_slice_pause = options.testing_slice_pause,
          },
          std::move(pools)),
      service_(&worker_, &stats_board_, options.max_block_bytes,
               options.max_payload_bytes_in_flight,
               HandleRules{
                   .identities = options.tls.asks_client_cert(),
                   .operators = options.operator_identities,
                   .unknown_handles_per_second =
                       options.max_unknown_handles_per_second,
               },
               BatchLimits{
                   .max_operations = options.max_batch_operations,
                   .max_answer_bytes = options.max_message_bytes,
                   .stream_credit = options.max_stream_batches_in_flight,
               }) {
  // Set before any thread can read it (the metrics server starts later);
  // the acceptor is seen once StartGrpc has started it.
  service_.SetConnectionStats([this](v1::TransportStats* transport) {
    const TcpAcceptor* acceptor =
        acceptor_view_.load(std::memory_order_acquire);
    if (acceptor == nullptr) return;
    transport->set_connections_open(acceptor->open_connections());
    transport->set_connections_accepted(acceptor->accepted());
    // Each counter read once, the total their sum: the "other" reason
    // (total minus the rest) never goes down.
    const uint64_t at_limit =
        acceptor->refused(TcpAcceptor::Refusal::kMaxConnections);
    const uint64_t per_address =
        acceptor->refused(TcpAcceptor::Refusal::kMaxPerAddress);
    const uint64_t open_files =
        acceptor->refused(TcpAcceptor::Refusal::kOpenFiles);
    const uint64_t other = acceptor->refused(TcpAcceptor::Refusal::kOther);
    transport->set_connections_refused(at_limit + per_address + open_files +
                                       other);
    transport->set_connections_refused_max_connections(at_limit);
    transport->set_connections_refused_per_address(per_address);
    transport->set_connections_refused_open_files(open_files);
    transport->set_max_connections(acceptor->limits().max_connections);
    transport->set_max_connections_per_address(
        acceptor->limits().max_per_address);
  });
}

PooldServer::~PooldServer() { Shutdown(); }

absl::Status PooldServer::StartGrpc() {
  // Reflection describes the services from the generated descriptors linked
  // into the binary. Nothing else references the health messages (gRPC's own
  // health service does not use them), so touch one: the linker then keeps
  // health.pb.cc and reflection can describe grpc.health.v1.Health.
  CHECK(grpc::health::v1::HealthCheckRequest::descriptor() != nullptr);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();

  grpc::ServerBuilder builder;
  // A second server on the same port must fail, not share the traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(options_.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
  // What one client may make gRPC hold (docs/SECURITY.md).
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             static_cast<int>(options_.max_concurrent_streams));
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE,
                             static_cast<int>(options_.max_metadata_bytes));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                             ChannelArgMillis(options_.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                             ChannelArgMillis(options_.keepalive_timeout));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      ChannelArgMillis(options_.min_client_ping_interval));
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
  // A connection that does not finish its handshake (HTTP/2 preface, TLS)
  // soon gives its place back (gRPC's default waits 120 s).
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             ChannelArgMillis(kHandshakeTimeout));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                             ChannelArgMillis(options_.max_connection_idle));
  builder.AddChannelArgument(GRPC_ARG_MAX_CONNECTION_AGE_MS,
                             ChannelArgMillis(options_.max_connection_age));
  builder.AddChannelArgument(
      GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
      ChannelArgMillis(options_.max_connection_age_grace));
  if (options_.grpc_memory_bytes > 0) {
    grpc::ResourceQuota quota("poold");
    quota.Resize(static_cast<size_t>(options_.grpc_memory_bytes));
    builder.SetResourceQuota(quota);
  }

  // poold accepts TCP connections itself and hands them to gRPC, with the
  // server's credentials: so it can limit them, and keep accepting when out
  // of descriptors (gRPC 1.51's own listener would stop for good).
  std::optional<HostPort> tcp;
  if (!options_.listen.empty()) {
    absl::StatusOr<HostPort> address = ParseListenAddress(options_.listen);
    if (!address.ok()) return address.status();
    tcp = *address;
    rlimit files{};
    const uint64_t files_limit = getrlimit(RLIMIT_NOFILE, &files) == 0
                                     ? files.rlim_cur
                                     : std::numeric_limits<uint64_t>::max();
    const uint32_t max_connections =
        EffectiveMaxConnections(options_.max_connections, files_limit);
    if (max_connections != options_.max_connections) {
      LOG(WARNING) << "--max_connections=" << options_.max_connections
                   << " lowered to " << max_connections
                   << " to fit the open-files limit, " << files_limit;
    }
    absl::StatusOr<std::unique_ptr<TcpAcceptor>> acceptor = TcpAcceptor::Listen(
        *tcp, {.max_connections = max_connections,
               .max_per_address = options_.max_connections_per_address});
    if (!acceptor.ok()) return acceptor.status();
    tcp_acceptor_ = *std::move(acceptor);
    tcp_door_ = builder.experimental().AddExternalConnectionAcceptor(
        grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD,
        options_.tls.enabled() ? MakeTlsServerCredentials(options_.tls)
                               : grpc::InsecureServerCredentials());
  }
  const std::string unix_target =
      options_.unix_socket.empty() ? "" : "unix:" + options_.unix_socket;
  // gRPC binds the socket under a name of this process's, and poold renames
  // it into place once it listens: at shutdown gRPC unlinks the path it
  // bound, which by then names nothing, rather than --unix_socket, which a
  // newer poold may hold by then. (A path too long for the suffix is bound
  // directly.)
  std::string bind_path = absl::StrCat(options_.unix_socket, ".", getpid());
  if (!ValidateUnixSocketPath(bind_path).ok()) {
    bind_path = options_.unix_socket;
  }
  if (!unix_target.empty()) {
    builder.AddListeningPort("unix:" + bind_path,
                             grpc::InsecureServerCredentials());
  }
  builder.RegisterService(&service_);
  for (grpc::Service* service : options_.extra_services) {
    builder.RegisterService(service);
  }

  // The socket file is created with mode 0660 from the start.
  const mode_t old_umask = umask(0777 & ~kUnixSocketMode);
  server_ = builder.BuildAndStart();
  umask(old_umask);

  if (server_ == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ",
                     unix_target.empty() ? options_.listen : unix_target,
                     ": see the gRPC error above"));
  }

  if (tcp.has_value()) {
    targets_.push_back(FormatHostPort(tcp->host, tcp_acceptor_->port()));
  }
  if (!unix_target.empty() && bind_path != options_.unix_socket &&
      rename(bind_path.c_str(), options_.unix_socket.c_str()) != 0) {
    const std::string error =
        std::error_code(errno, std::generic_category()).message();
    server_->Shutdown();
    server_->Wait();
    server_.reset();
    return absl::UnavailableError(
        absl::StrCat("cannot move unix socket ", bind_path, " to ",
                     options_.unix_socket, ": ", error));
  }
  if (!unix_target.empty()) {
    // Ours to remove at shutdown only while it is this very file.
    if (absl::StatusOr<FileId> id = UnixSocketFileId(options_.unix_socket);
        id.ok()) {
      owns_unix_socket_ = true;
      unix_socket_id_ = *id;
    } else {
      LOG(WARNING) << "the unix socket will not be removed at shutdown: "
                   << id.status();
    }
    if (chmod(options_.unix_socket.c_str(), kUnixSocketMode) != 0) {
      LOG(WARNING) << "chmod 0660 " << options_.unix_socket << ": "
                   << std::error_code(errno, std::generic_category()).message();
    }
    targets_.push_back(unix_target);
  }
  // Last: gRPC leaks (does not close) what it is handed before it has
  // started or after it has shut down, so connections flow only in between.
  if (tcp.has_value()) {
    tcp_acceptor_->Start(
        [door = tcp_door_.get()](int listener_fd, int fd) {
          grpc::experimental::ExternalConnectionAcceptor::
              NewConnectionParameters connection;
          connection.listener_fd = listener_fd;
          connection.fd = fd;
          door->HandleNewConnection(&connection);
        },
        [this, target = targets_.front()](const std::string& error) {
          OnListenerDead(target, error);
        });
    acceptor_view_.store(tcp_acceptor_.get(), std::memory_order_release);
  }
  server_->GetHealthCheckService()->SetServingStatus(
      v1::PoolService::service_full_name(), true);
  return absl::OkStatus();
}

void PooldServer::OnListenerDead(const std::string& target,
                                 const std::string& why) {
  LOG(ERROR) << "poold no longer accepts connections on " << target << ": "
             << why
             << "; health goes NOT_SERVING and poold stops, so that it can be "
                "restarted";
  listener_failed_.store(true, std::memory_order_release);
  server_->GetHealthCheckService()->SetServingStatus(false);
  if (options_.on_listener_failure) options_.on_listener_failure();
}

void PooldServer::BeginShutdown() {
  // (Its thread may be in OnListenerDead: this waits for it.)
  watchdog_.reset();
  if (draining_) return;
  draining_ = true;
  if (server_ != nullptr) {
    LOG(INFO) << "poold draining: health NOT_SERVING, new RPCs UNAVAILABLE, "
                 "completing queued commands";
    // Refuse first, then tell: a client that saw NOT_SERVING must find new
    // RPCs refused.
    service_.StartDraining();
    server_->GetHealthCheckService()->Shutdown();
  }
  // Completes every queued command, which finishes its RPC.
  worker_.Stop();
}

std::string PooldServer::RenderMetrics() const {
  const StatsBoard::Published latest = stats_board_.Latest();
  v1::GetStatsResponse stats;
  const std::string bytes(latest.with_classes.begin(),
                          latest.with_classes.end());
  if (!stats.ParseFromString(bytes)) {
    LOG(DFATAL) << "the published statistics do not parse";
  }
  service_.TransportStatsToProto(stats.mutable_transport());
  MetricsInput input;
  input.stats = &stats;
  input.queue_depth = worker_.queue_depth();
  if (absl::StatusOr<ProcessMetrics> process = ReadProcessMetrics();
      process.ok()) {
    input.process = *process;
  } else {
    LOG_EVERY_N(WARNING, 100)
        << "metrics: no process_* metrics: " << process.status();
  }
  return poold::RenderMetrics(input);
}

void PooldServer::Shutdown() {
  if (shut_down_) return;
  BeginShutdown();
  shut_down_ = true;
  if (tcp_acceptor_ != nullptr) tcp_acceptor_->Stop();
  if (server_ != nullptr) {
    LOG(INFO) << "poold closing the listeners; RPCs in flight get "
              << absl::FormatDuration(options_.shutdown_grace);
    server_->Shutdown(
        absl::ToChronoTime(absl::Now() + options_.shutdown_grace));
    server_->Wait();
  }
  // After gRPC: scrapes show the drain until the listeners close.
  if (metrics_ != nullptr) metrics_->Stop();
  if (owns_unix_socket_) {
    RemoveUnixSocketFile(options_.unix_socket, unix_socket_id_);
  }
  if (server_ != nullptr) LOG(INFO) << "poold stopped";
}

}  // namespace poold
