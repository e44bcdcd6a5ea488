#include "rpc/server_setup.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "rpc/connection_limits.h"

namespace lipsync::rpc {
namespace {

Expected<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::FailedPrecondition(std::string("cannot read TLS ") + what + " '" + path +
                                      "'; expected a readable PEM file");
  }
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

Expected<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(const config::TlsConfig& tls) {
  if (tls.cert_path.empty()) return grpc::InsecureServerCredentials();
  if (tls.key_path.empty()) {
    return Status::FailedPrecondition(
        "tls.cert_path is set but tls.key_path is empty; expected "
        "both the certificate chain and its private key");
  }
  grpc::SslServerCredentialsOptions ssl;
  LIPSYNC_ASSIGN_OR_RETURN(std::string cert, ReadPem(tls.cert_path, "certificate"));
  LIPSYNC_ASSIGN_OR_RETURN(std::string key, ReadPem(tls.key_path, "private key"));
  ssl.pem_key_cert_pairs.push_back({key, cert});
  if (!tls.client_ca_path.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPem(tls.client_ca_path, "client CA"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

template <typename Config>
OpsOptions OpsFromConfig(const char* server_name, const Config& config) {
  const config::RateLimitConfig& rate_limit = config.server.rate_limit;
  const config::LoggingConfig& logging = config.logging;
  const config::MetricsConfig& metrics = config.metrics;
  OpsOptions ops;
  ops.server_name = server_name;
  ops.auth.credentials_file = config.auth.credentials_file;
  ops.auth.legacy_api_key = config.server.api_key;
  ops.auth.reload_interval =
      std::chrono::milliseconds(static_cast<int64_t>(config.auth.reload_interval_seconds * 1000.0));
  ops.rate_limit.frames_per_second = rate_limit.frames_per_second_per_model;
  ops.rate_limit.burst_frames = rate_limit.burst_frames;
  ops.credential_rate_limit.frames_per_second = rate_limit.frames_per_second_per_credential;
  ops.credential_rate_limit.burst_frames = rate_limit.credential_burst_frames;
  ops.audit_log_path = logging.audit_log_path;
  ops.audit_fail_closed = logging.audit_fail_closed;
  ops.metrics_host = metrics.host;
  ops.metrics_port = metrics.port == 0 ? -1 : metrics.port;  // config 0 means off
  ops.legacy_errors = config.server.legacy_errors;
  ops.log_cache_stats = logging.log_cache_stats;
  ops.cache_stats_interval = std::chrono::milliseconds(
      static_cast<int64_t>(logging.cache_stats_interval_seconds * 1000.0));
  return ops;
}

template <typename Config>
Expected<ServerOptions> CommonOptions(const Config& config) {
  ServerOptions options;
  LIPSYNC_ASSIGN_OR_RETURN(options.listen_address, config::ListenAddress(config.server.port));
  options.max_message_size_mb = config.server.max_message_size_mb;
  options.tls = config.server.tls;
  options.connection = config.server.connection;
  return options;
}

}  // namespace

Expected<ServerOptions> ServerOptionsFromConfig(const config::InferenceConfig& config) {
  LIPSYNC_ASSIGN_OR_RETURN(ServerOptions options, CommonOptions(config));
  options.ops = OpsFromConfig("inference", config);
  options.health_service_names = {"inference.InferenceService"};
  return options;
}

Expected<ServerOptions> ServerOptionsFromConfig(const config::CompositingConfig& config) {
  LIPSYNC_ASSIGN_OR_RETURN(ServerOptions options, CommonOptions(config));
  options.ops = OpsFromConfig("compositing", config);
  options.ops.max_inflight_requests = config.server.max_inflight_requests;
  options.health_service_names = {"compositing.CompositingService"};
  return options;
}

Expected<std::unique_ptr<GrpcServer>> GrpcServer::Start(const ServerOptions& options,
                                                        const std::vector<OpsService*>& services) {
  if (options.max_message_size_mb < 1) {
    return Status::InvalidArgument("max_message_size_mb is " +
                                   std::to_string(options.max_message_size_mb) +
                                   "; expected at least 1");
  }
  LIPSYNC_ASSIGN_OR_RETURN(auto credentials, MakeCredentials(options.tls));
  LIPSYNC_ASSIGN_OR_RETURN(std::unique_ptr<ServerOps> ops, ServerOps::Create(options.ops));
  // Process-wide switch, read when a server is built: every server gets grpc.health.v1.
  grpc::EnableDefaultHealthCheckService(true);
  // Likewise process-wide: every server gets grpc.reflection.v1alpha.ServerReflection.
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  ApplyConnectionLimits(&builder, options.connection);
  int port = 0;
  builder.AddListeningPort(options.listen_address, credentials, &port);
  const int max_bytes =
      options.max_message_size_mb > 2047 ? INT32_MAX : options.max_message_size_mb * 1024 * 1024;
  builder.SetMaxReceiveMessageSize(max_bytes);
  builder.SetMaxSendMessageSize(max_bytes);
  for (OpsService* service : services) {
    LIPSYNC_RETURN_IF_ERROR(BoundRequestReads(service->grpc_service(), options.connection));
    builder.RegisterService(service->grpc_service());
    // Attached before serving starts, so the first call already sees its operations.
    service->AttachOps(ops.get());
    ops->AddGaugeSource([service] { return service->Gauges(); });
  }
  ops->StartCacheStatsLog();  // every gauge source is in
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    return Status::Unavailable("cannot listen on '" + options.listen_address +
                               "'; expected a free host:port (is another server using it?)");
  }
  auto grpc_server = std::unique_ptr<GrpcServer>(
      new GrpcServer(std::move(server), port, std::move(ops), options.health_service_names));
  grpc_server->SetServing(options.serving_at_start);
  return grpc_server;
}

GrpcServer::GrpcServer(std::unique_ptr<grpc::Server> server, int port,
                       std::unique_ptr<ServerOps> ops, std::vector<std::string> health_names)
    : server_(std::move(server)),
      port_(port),
      ops_(std::move(ops)),
      health_names_(std::move(health_names)) {}

GrpcServer::~GrpcServer() {
  Shutdown(std::chrono::milliseconds(0));
  server_->Wait();
}

void GrpcServer::SetServing(bool serving) {
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  if (health == nullptr) return;
  health->SetServingStatus(serving);  // "" and every registered name
  for (const std::string& name : health_names_) health->SetServingStatus(name, serving);
}

void GrpcServer::Shutdown(std::chrono::milliseconds grace) {
  std::call_once(shutdown_once_, [&] {
    // NOT_SERVING first, and frozen there: probes during the grace period see it.
    if (grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService()) {
      health->Shutdown();
    }
    server_->Shutdown(std::chrono::system_clock::now() + grace);
  });
}

void GrpcServer::Wait() { server_->Wait(); }

void GrpcServer::Close(std::chrono::steady_clock::time_point end, bool drained) {
  Shutdown(drained ? std::min(Remaining(end), std::chrono::milliseconds(200))
                   : std::chrono::milliseconds(0));
  Wait();
}

std::chrono::milliseconds Remaining(std::chrono::steady_clock::time_point end) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now());
  return std::max(left, std::chrono::milliseconds(0));
}

int WaitForStopSignal(const sigset_t* signals, const std::vector<ServerOps*>& ops) {
  while (true) {
    int signal_number = 0;
    if (sigwait(signals, &signal_number) != 0) continue;
    if (signal_number != SIGHUP) return signal_number;
    for (ServerOps* server : ops) server->Reopen();
  }
}

std::optional<std::chrono::steady_clock::time_point> SteadyDeadline(
    const grpc::ServerContext& context) {
  const auto deadline = context.deadline();
  // gRPC reports "no deadline" as a time far in the future.
  const auto remaining = deadline - std::chrono::system_clock::now();
  if (remaining > std::chrono::hours(24 * 365)) return std::nullopt;
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(remaining);
}

}  // namespace lipsync::rpc
