// Shared plumbing for the gRPC servers (inference and compositing): listening address,
// message size limit, optional TLS (config::TlsConfig), and graceful shutdown with a
// grace period. The services stay translation only.
// Also the operations every server gets (rpc/server_ops.h): credentials, rate limits,
// audit log, metrics endpoint, the standard grpc.health.v1 service (NOT_SERVING until
// the server is ready, SERVING while accepting calls, NOT_SERVING from SetServing(false)
// or Shutdown on), and server reflection (grpc.reflection.v1alpha, so grpcurl-style
// tools list and call the services without the .proto files).
//
// GrpcServer is thread-safe for Shutdown/Wait from any thread. It does not own the
// services it serves: they must outlive it.
#pragma once

#include <grpcpp/grpcpp.h>
#include <signal.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "rpc/server_ops.h"

namespace lipsync::rpc {

struct ServerOptions {
  std::string listen_address;  // "host:port"; port 0 picks a free one
  int max_message_size_mb = 100;
  config::TlsConfig tls;  // cert_path empty: plaintext
  OpsOptions ops;         // credentials, rate limits, audit log, metrics; all off by default
  // grpc.health.v1 names reported besides "" (the whole server), e.g.
  // "inference.InferenceService".
  std::vector<std::string> health_service_names;
  config::ConnectionConfig connection;  // transport limits (rpc/connection_limits.h)
  // false: grpc.health.v1 says NOT_SERVING until SetServing(true) (a command calls it
  // once everything it serves is ready).
  bool serving_at_start = true;
};

// A server's options from its config file: listen address (server.port), message
// size, TLS, credentials (auth.*, server.api_key), rate limits, audit log and metrics.
// INVALID_ARGUMENT for a bad port.
Expected<ServerOptions> ServerOptionsFromConfig(const config::InferenceConfig& config);
Expected<ServerOptions> ServerOptionsFromConfig(const config::CompositingConfig& config);

class GrpcServer {
 public:
  // Binds and starts serving `services`, each attached to this server's ServerOps.
  // UNAVAILABLE when the address (or the metrics port) cannot be bound,
  // FAILED_PRECONDITION when TLS files or the audit log cannot be opened, the
  // credentials file's error when it cannot be read.
  static Expected<std::unique_ptr<GrpcServer>> Start(const ServerOptions& options,
                                                     const std::vector<OpsService*>& services);
  ~GrpcServer();  // Shutdown with no grace if still serving

  // The port actually bound (resolves port 0).
  int port() const { return port_; }
  // Stops accepting calls and lets calls in progress finish for up to `grace`, then
  // cancels the rest. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);
  // Blocks until Shutdown has completed.
  void Wait();
  // The last step of a drain, once the core behind the services has finished its
  // requests (`drained`) or the grace period ending at `end` ran out: replies still
  // being written get up to 200 ms (never past `end`, none when not drained), calls
  // still open (e.g. health Watch streams) are cancelled, then Wait.
  void Close(std::chrono::steady_clock::time_point end, bool drained);
  // What grpc.health.v1 answers for every name. Call SetServing(false) when draining
  // starts so load balancers stop sending new work before Shutdown.
  void SetServing(bool serving);
  // Credentials, rate limiter, metrics and audit log of this server; valid while it lives.
  ServerOps& ops() { return *ops_; }

 private:
  GrpcServer(std::unique_ptr<grpc::Server> server, int port, std::unique_ptr<ServerOps> ops,
             std::vector<std::string> health_names);
  std::unique_ptr<grpc::Server> server_;
  int port_;
  std::unique_ptr<ServerOps> ops_;
  std::vector<std::string> health_names_;
  std::once_flag shutdown_once_;
};

// Waits (sigwait) for SIGINT or SIGTERM among `signals` and returns it. Each SIGHUP on
// the way reopens the audit logs and re-reads the credentials files of `ops` (logged).
int WaitForStopSignal(const sigset_t* signals, const std::vector<ServerOps*>& ops);

// Time left until `end`; zero once it has passed.
std::chrono::milliseconds Remaining(std::chrono::steady_clock::time_point end);

// The caller's gRPC deadline as a steady-clock time, or nullopt when it has none.
std::optional<std::chrono::steady_clock::time_point> SteadyDeadline(
    const grpc::ServerContext& context);

}  // namespace lipsync::rpc
