// The plumbing around every RPC of one server, in one place: authentication and
// authorization (auth::Authenticator: who calls, which tenants and scopes), rate limits
// per tenant and per credential, the audit log and metrics (with their HTTP endpoint,
// GET /metrics on the product's HTTP server, http/http_server.h).
//
// Services stay translation only: each derives from OpsService, and every method body
// runs inside ServerOps::Handle, which admits the call (credential, scope, tenant,
// rate limits, audit health), runs the body, and records the audit line and metrics
// whatever the outcome. GrpcServer::Start hands each service its ServerOps before
// serving starts; nothing is looked up in process-wide state.
//
// ServerOps is thread-safe. It must outlive the calls that use it: GrpcServer owns it
// and destroys it only after its gRPC server has stopped.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "auth/authenticator.h"
#include "common/status.h"
#include "http/http_server.h"
#include "rpc/audit_log.h"
#include "rpc/cache_stats_log.h"
#include "rpc/grpc_status.h"
#include "rpc/metrics.h"
#include "rpc/rate_limiter.h"

namespace google::protobuf {
class Message;
}

namespace lipsync::rpc {

struct OpsOptions {
  std::string server_name = "server";      // "inference" / "compositing": labels and audit field
  auth::AuthOptions auth;                  // no file and no legacy key: authentication off
  RateLimitOptions rate_limit;             // per tenant; frames_per_second 0: off
  RateLimitOptions credential_rate_limit;  // per credential; 0: off
  std::string audit_log_path;              // empty: no audit log
  bool audit_fail_closed = false;          // refuse calls while the audit log cannot be written
  std::string metrics_host = "127.0.0.1";
  int metrics_port = -1;  // -1: no /metrics endpoint; 0: any free port
  // Clients written against the deployment guide read failures from the response:
  // a failed call whose response has success/error fields is answered status OK with
  // success=false and error "<CODE>: <message>" (audit and metrics keep the real code).
  bool legacy_errors = false;
  // Admission control: calls that do work (those needing a scope: infer, admin) in
  // flight at once at most; more are refused RESOURCE_EXHAUSTED at once. Health,
  // ListModels and GetModelStats are always admitted. 0: no bound.
  int max_inflight_requests = 0;
  // logging.log_cache_stats: one INFO line of cache statistics per interval.
  bool log_cache_stats = false;
  std::chrono::milliseconds cache_stats_interval{60000};
};

class ServerOps;

// What the plumbing needs to know about one call before its body runs.
struct CallSpec {
  const char* method = "";  // e.g. "InferBatch"
  // The scope the call needs; nullopt: any authenticated caller (Health, ListModels).
  std::optional<auth::Scope> scope;
  std::string_view model_id;  // the tenant the call acts on; empty: none
  int64_t frames = 0;         // frames requested (rate limits, metrics)
};

// One admitted call, as its body sees it. Not thread-safe (one call, one thread).
class Call {
 public:
  // The verified caller (the anonymous principal when authentication is off).
  const auth::Principal& principal() const { return principal_; }
  // The stage times this call measured (metrics histograms).
  void SetTimings(const StageTimings& timings) { timings_ = timings; }

 private:
  friend class ServerOps;
  Call(ServerOps* ops, grpc::ServerContext* context, const CallSpec& spec,
       const google::protobuf::Message& request);
  grpc::Status Admit();
  grpc::Status Finish(grpc::Status status, const google::protobuf::Message& response);

  ServerOps* ops_;
  grpc::ServerContext* context_;
  CallSpec spec_;
  std::chrono::system_clock::time_point start_wall_;
  std::chrono::steady_clock::time_point start_;
  int64_t bytes_in_ = 0;
  auth::Principal principal_;
  StageTimings timings_;
  bool holds_inflight_slot_ = false;  // released by Finish
};

// One long-lived stream (StreamSession, or the WebSocket session of the web front), as
// its body sees it. The credential is checked at stream start (gRPC metadata) or when
// the open message brings it (WebSocket); the tenant and scope once the open message
// names the model (Open). Rate limits apply per session start: Open takes one second of
// video (fps frames) from the tenant's and the credential's buckets. One audit line and
// one metrics sample at the end (Finish): frames sent, code. Not thread-safe: the
// stream's handler thread calls it (AddFrames is atomic and may come from any thread).
class StreamCall {
 public:
  // For transports outside gRPC; ServerOps::HandleStream does all of it for gRPC.
  StreamCall(ServerOps* ops, const char* method, std::string peer);
  // Who calls (audit_fail_closed first): UNAUTHENTICATED / UNAVAILABLE.
  grpc::Status Authenticate(std::string_view authorization, std::string_view cert_subject);
  // The open message arrived: PERMISSION_DENIED without `scope` or the tenant,
  // RESOURCE_EXHAUSTED when a rate limit cannot admit `frames`.
  grpc::Status Open(std::string_view model_id, auth::Scope scope, int64_t frames);
  const auth::Principal& principal() const { return principal_; }
  bool authenticated() const { return authenticated_; }
  void AddFrames(int64_t frames) { frames_.fetch_add(frames, std::memory_order_relaxed); }
  void AddBytes(int64_t in, int64_t out) {
    bytes_in_.fetch_add(in, std::memory_order_relaxed);
    bytes_out_.fetch_add(out, std::memory_order_relaxed);
  }
  // A live session's stage times (each batch, each frame it encodes) into the server's
  // stage histograms, as they happen; from any thread.
  void AddStages(const StageTimings& timings);
  // Records the audit line and the metrics sample; returns `status`.
  grpc::Status Finish(grpc::Status status);

 private:
  ServerOps* ops_;
  const char* method_;
  std::string peer_;
  std::string model_id_;
  std::chrono::system_clock::time_point start_wall_;
  std::chrono::steady_clock::time_point start_;
  auth::Principal principal_;
  bool authenticated_ = false;
  std::atomic<int64_t> frames_{0}, bytes_in_{0}, bytes_out_{0};
};

class ServerOps {
 public:
  // FAILED_PRECONDITION when the audit log cannot be opened, UNAVAILABLE when the
  // metrics port cannot be bound, the credentials file's error when it cannot be read.
  static Expected<std::unique_ptr<ServerOps>> Create(OpsOptions options);
  ~ServerOps();

  const std::string& server_name() const { return options_.server_name; }
  RateLimiter& rate_limiter() { return rate_limiter_; }
  MetricsRegistry& metrics() { return metrics_; }
  AuditLog* audit_log() { return audit_log_.get(); }  // null when off
  auth::Authenticator& authenticator() { return *authenticator_; }
  // The bound metrics port, or -1 when the endpoint is off.
  int metrics_port() const { return metrics_http_ ? metrics_http_->port() : -1; }
  // SIGHUP: reopens the audit log (after logrotate renamed it) and re-reads the
  // credentials file; each outcome is logged.
  void Reopen();
  // Adds a scrape-time gauge source (a service's own gauges). Call before serving.
  void AddGaugeSource(std::function<std::vector<Gauge>()> source);
  // Starts the log_cache_stats thread (when on); GrpcServer::Start calls it once every
  // gauge source is added.
  void StartCacheStatsLog();

  // Runs one RPC: admits it (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED or,
  // with audit_fail_closed, UNAVAILABLE), then `body(call)` (returning the call's
  // status), then writes the audit line and the metrics sample. A refused call's
  // response gets success=false and the message in `error` where it has those fields;
  // with OpsOptions::legacy_errors every failed call with those fields is answered
  // status OK, success=false, error "<CODE>: <message>" (the guide's clients).
  template <typename Response, typename Body>
  grpc::Status Handle(grpc::ServerContext* context, const CallSpec& spec,
                      const google::protobuf::Message& request, Response* response, Body&& body) {
    Call call(this, context, spec, request);
    grpc::Status status = call.Admit();
    if (status.ok()) {
      status = body(call);
    } else {
      if constexpr (requires { response->set_success(false); }) response->set_success(false);
      if constexpr (requires { response->set_error(std::string()); }) {
        response->set_error(status.error_message());
      }
    }
    status = call.Finish(std::move(status), *response);
    if constexpr (requires {
                    response->set_success(false);
                    response->set_error(std::string());
                  }) {
      if (!status.ok() && options_.legacy_errors) {
        response->Clear();
        response->set_success(false);
        response->set_error(std::string(StatusCodeName(status.error_code())) + ": " +
                            status.error_message());
        return grpc::Status::OK;
      }
    }
    return status;
  }

  // Runs one streaming RPC: authenticates from the metadata at stream start, then
  // `body(call)` (which calls call.Open once its first message names the tenant), then
  // writes the audit line (frames sent, code) and the metrics sample.
  grpc::Status HandleStream(grpc::ServerContext* context, const char* method,
                            const std::function<grpc::Status(StreamCall&)>& body);

 private:
  friend class Call;
  friend class StreamCall;
  explicit ServerOps(OpsOptions options);
  std::vector<Gauge> OpsGauges() const;

  const OpsOptions options_;
  std::atomic<int> inflight_{0};  // admitted calls holding a slot (max_inflight_requests)
  std::unique_ptr<auth::Authenticator> authenticator_;
  RateLimiter rate_limiter_;             // per tenant
  RateLimiter credential_rate_limiter_;  // per credential
  MetricsRegistry metrics_;
  std::unique_ptr<AuditLog> audit_log_;
  std::unique_ptr<http::Handler> metrics_handler_;  // GET /metrics
  std::unique_ptr<http::HttpServer> metrics_http_;
  std::vector<std::function<std::vector<Gauge>()>> gauge_sources_;
  std::unique_ptr<CacheStatsLogger> cache_stats_log_;  // log_cache_stats; null when off
};

// A gRPC service whose calls run through a ServerOps. GrpcServer::Start attaches the
// server's ServerOps before serving; a service is attached to one server at a time.
class OpsService {
 public:
  virtual ~OpsService() = default;
  virtual grpc::Service* grpc_service() = 0;
  // Scrape-time gauges this service knows (e.g. loaded models); none by default.
  virtual std::vector<Gauge> Gauges() { return {}; }
  void AttachOps(ServerOps* ops) { ops_ = ops; }

 protected:
  // The attached ServerOps (GrpcServer::Start guarantees one before any call).
  ServerOps& ops() { return *ops_; }

 private:
  ServerOps* ops_ = nullptr;
};

}  // namespace lipsync::rpc
