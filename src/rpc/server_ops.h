// Operations around every RPC of one server: per-tenant rate limiting, the audit log,
// and metrics (with their HTTP endpoint). GrpcServer owns one ServerOps and attaches
// it to the services it serves; a service method opens a CallScope, which finds the
// ServerOps by the service's address, so service headers stay translation only.
//
// ServerOps is thread-safe. It must outlive the calls that use it: GrpcServer detaches
// it only after its gRPC server has stopped. A service with no attached ServerOps
// (e.g. served by a bare grpc::Server in a test) gets no-op CallScopes.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "rpc/audit_log.h"
#include "rpc/grpc_status.h"
#include "rpc/metrics.h"
#include "rpc/metrics_http_server.h"
#include "rpc/rate_limiter.h"

namespace google::protobuf {
class Message;
}

namespace lipsync::rpc {

struct OpsOptions {
  std::string server_name = "server";  // "inference" / "compositing": labels and audit field
  RateLimitOptions rate_limit;         // frames_per_second 0: off
  std::string audit_log_path;          // empty: no audit log
  std::string metrics_host = "127.0.0.1";
  int metrics_port = -1;  // -1: no /metrics endpoint; 0: any free port
};

class ServerOps {
 public:
  // FAILED_PRECONDITION when the audit log cannot be opened, UNAVAILABLE when the
  // metrics port cannot be bound.
  static Expected<std::unique_ptr<ServerOps>> Create(OpsOptions options);
  ~ServerOps();

  const std::string& server_name() const { return options_.server_name; }
  RateLimiter& rate_limiter() { return rate_limiter_; }
  MetricsRegistry& metrics() { return metrics_; }
  AuditLog* audit_log() { return audit_log_.get(); }  // null when off
  // The bound metrics port, or -1 when the endpoint is off.
  int metrics_port() const { return metrics_http_ ? metrics_http_->port() : -1; }
  // Installs the scrape-time gauges the first time it is called; later calls are cheap
  // no-ops. Services call it so gauges appear without the caller wiring anything.
  void SetGaugeSourceOnce(const std::function<std::function<std::vector<Gauge>()>()>& make);

  // Which ServerOps serves `service` (null: none). Attach replaces, Detach removes
  // only if `ops` is still the one attached.
  static void Attach(const void* service, ServerOps* ops);
  static void Detach(const void* service, ServerOps* ops);
  static ServerOps* ForService(const void* service);

 private:
  explicit ServerOps(OpsOptions options);
  const OpsOptions options_;
  RateLimiter rate_limiter_;
  MetricsRegistry metrics_;
  std::unique_ptr<AuditLog> audit_log_;
  std::unique_ptr<MetricsHttpServer> metrics_http_;
  std::once_flag gauges_once_;
};

// One RPC as operations see it. Construct first thing in a service method, then
// `return call.Finish(status, *response);`. Not thread-safe (one call, one thread).
class CallScope {
 public:
  CallScope(const void* service, grpc::ServerContext* context, const char* method,
            const google::protobuf::Message& request);

  ServerOps* ops() const { return ops_; }
  // Records the tenant and size of the call (for the audit line and metrics).
  void SetModel(const std::string& model_id, int64_t frames);
  // The rate limit for the model set by SetModel: OK, or RESOURCE_EXHAUSTED saying the
  // limit and when to retry.
  grpc::Status Admit();
  void SetTimings(double queue_wait_ms, double inference_ms, double composite_ms);
  // Writes the audit line and the metrics sample; returns `status` unchanged.
  grpc::Status Finish(grpc::Status status, const google::protobuf::Message& response);

 private:
  ServerOps* ops_;
  grpc::ServerContext* context_;
  const char* method_;
  std::chrono::system_clock::time_point start_wall_;
  std::chrono::steady_clock::time_point start_;
  int64_t bytes_in_ = 0;
  std::string model_id_;
  int64_t frames_ = 0;
  double queue_wait_ms_ = -1, inference_ms_ = -1, composite_ms_ = -1;
};

}  // namespace lipsync::rpc
