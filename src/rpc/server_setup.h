// Shared plumbing for the gRPC servers (inference and compositing): listening address,
// message size limit, optional TLS (config::TlsConfig), the optional API key check,
// and graceful shutdown with a grace period. The services stay translation only.
//
// GrpcServer is thread-safe for Shutdown/Wait from any thread. It does not own the
// services it serves: they must outlive it.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"

namespace lipsync::rpc {

struct ServerOptions {
  std::string listen_address;  // "host:port"; port 0 picks a free one
  int max_message_size_mb = 100;
  config::TlsConfig tls;  // cert_path empty: plaintext
};

class GrpcServer {
 public:
  // Binds and starts serving `services`. UNAVAILABLE when the address cannot be bound,
  // FAILED_PRECONDITION when TLS files cannot be read.
  static Expected<std::unique_ptr<GrpcServer>> Start(const ServerOptions& options,
                                                     const std::vector<grpc::Service*>& services);
  ~GrpcServer();  // Shutdown with no grace if still serving

  // The port actually bound (resolves port 0).
  int port() const { return port_; }
  // Stops accepting calls and lets calls in progress finish for up to `grace`, then
  // cancels the rest. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);
  // Blocks until Shutdown has completed.
  void Wait();

 private:
  GrpcServer(std::unique_ptr<grpc::Server> server, int port);
  std::unique_ptr<grpc::Server> server_;
  int port_;
  std::once_flag shutdown_once_;
};

// The API key check the services run first in every call: OK when `api_key` is empty
// or the call carries "authorization: Bearer <api_key>"; otherwise UNAUTHENTICATED
// saying what was expected. Compares in constant time.
grpc::Status CheckApiKey(const grpc::ServerContext& context, const std::string& api_key);

// The caller's gRPC deadline as a steady-clock time, or nullopt when it has none.
std::optional<std::chrono::steady_clock::time_point> SteadyDeadline(
    const grpc::ServerContext& context);

}  // namespace lipsync::rpc
