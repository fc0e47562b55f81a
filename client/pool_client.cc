// PoolClient: channel set-up, connection, and one blocking call per RPC.
#include "client/pool_client.h"

#include <cerrno>
#include <fstream>
#include <sstream>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/status_convert.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace poold::client {
namespace {

using ::grpc::health::v1::HealthCheckRequest;
using ::grpc::health::v1::HealthCheckResponse;

// How long Connect's follow-up call may take to fetch gRPC's reason for a
// failed connection. It fails at once in practice: the channel is in
// TRANSIENT_FAILURE, so the call is not even sent.
constexpr absl::Duration kReasonTimeout = absl::Seconds(1);

// The contents of `file` (named by `flag` in errors).
absl::StatusOr<std::string> ReadPem(absl::string_view flag,
                                    const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, "=", file, ": cannot be read: ",
        std::error_code(errno ? errno : ENOENT, std::generic_category())
            .message()));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> TlsCredentials(
    const PoolClient::Options::Tls& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls_cert_file and --tls_key_file go together (mutual TLS)");
  }
  grpc::SslCredentialsOptions ssl;
  if (!tls.ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem("tls_ca_file", tls.ca_file);
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!tls.cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPem("tls_cert_file", tls.cert_file);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem("tls_key_file", tls.key_file);
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace

absl::StatusOr<PoolClient> PoolClient::Create(const std::string& target,
                                              const Options& options) {
  if (target.empty()) return absl::InvalidArgumentError("empty target");
  if (target == "unix:" || target == "unix://") {
    return absl::InvalidArgumentError(
        absl::StrCat("target \"", target, "\" names no socket path"));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout must be positive, not ",
                     absl::FormatDuration(options.timeout)));
  }
  if (options.max_message_bytes <= 0) {
    return absl::InvalidArgumentError("max_message_bytes must be positive");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      grpc::InsecureChannelCredentials();
  if (options.tls.enabled()) {
    absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> tls =
        TlsCredentials(options.tls);
    if (!tls.ok()) return tls.status();
    credentials = *std::move(tls);
    if (!options.tls.server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls.server_name);
    }
  }
  return PoolClient(grpc::CreateCustomChannel(target, credentials, args),
                    target, options);
}

PoolClient::PoolClient(std::shared_ptr<grpc::Channel> channel,
                       std::string target, const Options& options)
    : target_(std::move(target)),
      timeout_(options.timeout),
      channel_(std::move(channel)),
      pool_stub_(v1::PoolService::NewStub(channel_)),
      health_stub_(grpc::health::v1::Health::NewStub(channel_)) {}

void PoolClient::PrepareContext(grpc::ClientContext* context) const {
  if (timeout_ != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  }
}

absl::Status PoolClient::Connect(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  grpc_connectivity_state state = channel_->GetState(/*try_to_connect=*/true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE ||
        state == GRPC_CHANNEL_SHUTDOWN) {
      // The channel keeps the reason to itself; a call made now fails at
      // once and carries it.
      grpc::ClientContext context;
      context.set_deadline(absl::ToChronoTime(absl::Now() + kReasonTimeout));
      HealthCheckResponse ignored;
      const absl::Status call = FromGrpcStatus(
          health_stub_->Check(&context, HealthCheckRequest(), &ignored));
      if (call.ok()) return absl::OkStatus();  // it came back meanwhile
      return absl::UnavailableError(
          absl::StrCat("cannot connect to ", target_, ": ", call.message()));
    }
    if (!channel_->WaitForStateChange(state, absl::ToChronoTime(deadline))) {
      return absl::DeadlineExceededError(
          absl::StrCat("cannot connect to ", target_, " within ",
                       absl::FormatDuration(timeout)));
    }
    state = channel_->GetState(/*try_to_connect=*/true);
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::AllocateResponse> PoolClient::Allocate(
    uint64_t size, absl::string_view data) {
  v1::AllocateRequest request;
  request.set_size(size);
  request.set_data(std::string(data));
  v1::AllocateResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  absl::Status status =
      FromGrpcStatus(pool_stub_->Allocate(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::Status PoolClient::Write(uint64_t handle, uint64_t offset,
                               absl::string_view data) {
  v1::WriteRequest request;
  request.set_handle(handle);
  request.set_offset(offset);
  request.set_data(std::string(data));
  v1::WriteResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  return FromGrpcStatus(pool_stub_->Write(&context, request, &response));
}

absl::StatusOr<std::string> PoolClient::Read(uint64_t handle, uint64_t offset,
                                             uint64_t length) {
  v1::ReadRequest request;
  request.set_handle(handle);
  request.set_offset(offset);
  request.set_length(length);
  v1::ReadResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  absl::Status status =
      FromGrpcStatus(pool_stub_->Read(&context, request, &response));
  if (!status.ok()) return status;
  return std::move(*response.mutable_data());
}

absl::Status PoolClient::Free(uint64_t handle) {
  v1::FreeRequest request;
  request.set_handle(handle);
  v1::FreeResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  return FromGrpcStatus(pool_stub_->Free(&context, request, &response));
}

absl::StatusOr<v1::BatchResponse> PoolClient::Batch(
    const v1::BatchRequest& request) {
  v1::BatchResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  grpc::Status status = pool_stub_->Batch(&context, request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  if (response.results_size() != request.operations_size()) {
    return absl::InternalError(absl::StrCat(
        "the server answered ", response.results_size(), " results for ",
        request.operations_size(), " operations"));
  }
  return response;
}

absl::StatusOr<v1::GetStatsResponse> PoolClient::GetStats(
    bool include_classes, bool include_defrag_history, bool consistent) {
  v1::GetStatsRequest request;
  request.set_include_classes(include_classes);
  request.set_include_defrag_history(include_defrag_history);
  request.set_consistent(consistent);
  v1::GetStatsResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  absl::Status status =
      FromGrpcStatus(pool_stub_->GetStats(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::FragmentationReport> PoolClient::AnalyzeFragmentation(
    absl::Span<const v1::Pool> pools) {
  v1::AnalyzeFragmentationRequest request;
  for (v1::Pool pool : pools) request.add_pools(pool);
  v1::FragmentationReport response;
  grpc::ClientContext context;
  PrepareContext(&context);
  absl::Status status = FromGrpcStatus(
      pool_stub_->AnalyzeFragmentation(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::DefragReport> PoolClient::TriggerDefragmentation(
    absl::Span<const v1::Pool> pools) {
  v1::TriggerDefragmentationRequest request;
  for (v1::Pool pool : pools) request.add_pools(pool);
  v1::DefragReport response;
  grpc::ClientContext context;
  PrepareContext(&context);
  absl::Status status = FromGrpcStatus(
      pool_stub_->TriggerDefragmentation(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<HealthCheckResponse::ServingStatus> PoolClient::Health(
    const std::string& service) {
  HealthCheckRequest request;
  request.set_service(service);
  HealthCheckResponse response;
  grpc::ClientContext context;
  PrepareContext(&context);
  absl::Status status =
      FromGrpcStatus(health_stub_->Check(&context, request, &response));
  if (!status.ok()) return status;
  return response.status();
}

}  // namespace poold::client
