#include "rpc/server_ops.h"

#include <google/protobuf/message.h>
#include <grpc/grpc_security_constants.h>

#include "common/log.h"
#include "rpc/connection_limits.h"
#include "rpc/grpc_status.h"

namespace lipsync::rpc {
namespace {

// The "authorization" metadata value, or empty.
std::string_view AuthorizationOf(const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return {};
  return std::string_view(it->second.data(), it->second.size());
}

// The verified TLS client certificate's subject, or empty (no mTLS on this call).
std::string CertSubjectOf(const grpc::ServerContext& context) {
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (!auth || !auth->IsPeerAuthenticated()) return {};
  std::vector<grpc::string_ref> subjects =
      auth->FindPropertyValues(GRPC_X509_SUBJECT_PROPERTY_NAME);
  if (subjects.empty()) return {};
  return std::string(subjects.front().data(), subjects.front().size());
}

// GET /metrics: the registry's text; 404 elsewhere, 405 for other methods.
class MetricsHandler : public http::Handler {
 public:
  explicit MetricsHandler(const MetricsRegistry* registry) : registry_(registry) {}
  http::Response Handle(const http::Request& request) override {
    namespace bhttp = boost::beast::http;
    const std::string_view target = request.target();
    if (target.substr(0, target.find('?')) != "/metrics") {
      return http::TextResponse(request, bhttp::status::not_found, "not found; expected /metrics",
                                kMetricsServerName);
    }
    if (request.method() != bhttp::verb::get && request.method() != bhttp::verb::head) {
      http::Response res = http::TextResponse(request, bhttp::status::method_not_allowed,
                                              "expected GET", kMetricsServerName);
      res.set(bhttp::field::allow, "GET, HEAD");
      return res;
    }
    http::Response res = http::TextResponse(request, bhttp::status::ok, "", kMetricsServerName);
    res.set(bhttp::field::content_type, kMetricsContentType);
    std::string body = registry_->Render();
    if (request.method() == bhttp::verb::head) {
      res.body().clear();
      res.content_length(body.size());
    } else {
      res.body() = std::move(body);
      res.prepare_payload();
    }
    return res;
  }

 private:
  static constexpr const char* kMetricsServerName = "lipsync-metrics";
  const MetricsRegistry* registry_;
};

}  // namespace

Expected<std::unique_ptr<ServerOps>> ServerOps::Create(OpsOptions options) {
  std::unique_ptr<ServerOps> ops(new ServerOps(std::move(options)));
  LIPSYNC_ASSIGN_OR_RETURN(ops->authenticator_, auth::Authenticator::Create(ops->options_.auth));
  if (!ops->options_.audit_log_path.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(ops->audit_log_, AuditLog::Open(ops->options_.audit_log_path));
  }
  ServerOps* raw = ops.get();
  auto all_gauges = [raw] {
    std::vector<Gauge> gauges = raw->OpsGauges();
    for (const auto& source : raw->gauge_sources_) {
      std::vector<Gauge> more = source();
      gauges.insert(gauges.end(), std::make_move_iterator(more.begin()),
                    std::make_move_iterator(more.end()));
    }
    return gauges;
  };
  ops->metrics_.SetGaugeSource(all_gauges);
  if (ops->options_.log_cache_stats) {
    ops->cache_stats_log_ = std::make_unique<CacheStatsLogger>(
        ops->options_.server_name, all_gauges, ops->options_.cache_stats_interval);
  }
  if (ops->options_.metrics_port >= 0) {
    ops->metrics_handler_ = std::make_unique<MetricsHandler>(&ops->metrics_);
    http::HttpServerOptions http_options;
    http_options.name = ops->options_.server_name + " metrics";
    http_options.host = ops->options_.metrics_host;
    http_options.port = ops->options_.metrics_port;
    http_options.max_connections = 16;  // scrapers, not viewers
    http_options.request_timeout = std::chrono::seconds(10);
    LIPSYNC_ASSIGN_OR_RETURN(ops->metrics_http_,
                             http::HttpServer::Start(http_options, ops->metrics_handler_.get()));
  }
  return ops;
}

ServerOps::ServerOps(OpsOptions options)
    : options_(std::move(options)),
      rate_limiter_(options_.rate_limit),
      credential_rate_limiter_(options_.credential_rate_limit, &std::chrono::steady_clock::now,
                               "credential"),
      metrics_(options_.server_name) {}

ServerOps::~ServerOps() {
  // Stop scrapes and cache-stats lines before the registry and sources they read go away.
  cache_stats_log_.reset();
  metrics_http_.reset();
}

void ServerOps::StartCacheStatsLog() {
  if (cache_stats_log_) cache_stats_log_->Start();
}

void ServerOps::Reopen() {
  if (audit_log_) {
    Status s = audit_log_->Reopen();
    if (s.ok()) {
      LOG_INFO("%s: audit log reopened", server_name().c_str());
    } else {
      LOG_ERROR("%s: cannot reopen the audit log: %s", server_name().c_str(), s.message().c_str());
    }
  }
  if (authenticator_->enabled()) {
    Status s = authenticator_->Reload();
    if (s.ok()) {
      LOG_INFO("%s: credentials re-read", server_name().c_str());
    } else {
      LOG_ERROR("%s: credentials file kept as before: %s", server_name().c_str(),
                s.message().c_str());
    }
  }
}

void ServerOps::AddGaugeSource(std::function<std::vector<Gauge>()> source) {
  gauge_sources_.push_back(std::move(source));
}

std::vector<Gauge> ServerOps::OpsGauges() const {
  std::vector<Gauge> gauges;
  gauges.push_back({"lipsync_request_read_timeouts_total",
                    "Calls cut because their request was not fully received in time.",
                    {},
                    static_cast<double>(RequestReadTimeouts()),
                    Gauge::Kind::kCounter});
  if (audit_log_) {
    gauges.push_back({"lipsync_audit_write_failures_total",
                      "Audit lines that could not be written.",
                      {},
                      static_cast<double>(audit_log_->write_failures()),
                      Gauge::Kind::kCounter});
    gauges.push_back({"lipsync_audit_log_healthy",
                      "1 while the audit log can be written.",
                      {},
                      audit_log_->healthy() ? 1.0 : 0.0});
  }
  return gauges;
}

Call::Call(ServerOps* ops, grpc::ServerContext* context, const CallSpec& spec,
           const google::protobuf::Message& request)
    : ops_(ops),
      context_(context),
      spec_(spec),
      start_wall_(std::chrono::system_clock::now()),
      start_(std::chrono::steady_clock::now()),
      bytes_in_(static_cast<int64_t>(request.ByteSizeLong())) {}

grpc::Status Call::Admit() {
  // Fail-closed auditing: nothing runs that could not be recorded.
  if (ops_->options_.audit_fail_closed && ops_->audit_log_ && !ops_->audit_log_->healthy()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the audit log cannot be written and logging.audit_fail_closed is set; "
                        "expected a writable audit log (retry later)");
  }
  Expected<auth::Principal> principal =
      ops_->authenticator_->Authenticate(AuthorizationOf(*context_), CertSubjectOf(*context_));
  if (!principal.ok()) return ToGrpc(principal.status());
  principal_ = std::move(*principal);
  if (spec_.scope.has_value()) {
    if (Status s = principal_.Require(*spec_.scope); !s.ok()) return ToGrpc(s);
  }
  if (!spec_.model_id.empty()) {
    if (Status s = principal_.RequireTenant(spec_.model_id); !s.ok()) return ToGrpc(s);
  }
  // Admission control, after authentication (strangers take no slot) and before the
  // rate limits (a refused call spends no tokens). Finish releases the slot.
  if (const int max = ops_->options_.max_inflight_requests; max > 0 && spec_.scope.has_value()) {
    if (ops_->inflight_.fetch_add(1) >= max) {
      ops_->inflight_.fetch_sub(1);
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          ops_->server_name() + " server has " + std::to_string(max) +
                              " requests in flight (server.max_inflight_requests); expected "
                              "fewer concurrent requests: retry later with backoff");
    }
    holds_inflight_slot_ = true;
  }
  // After authentication, so strangers cannot drain a tenant's or a caller's bucket.
  if (spec_.frames > 0) {
    if (Status s = ops_->credential_rate_limiter_.Admit(principal_.id, spec_.frames); !s.ok()) {
      return ToGrpc(s);
    }
    if (!spec_.model_id.empty()) {
      const std::string tenant(spec_.model_id);
      if (Status s = ops_->rate_limiter_.Admit(tenant, spec_.frames); !s.ok()) {
        ops_->credential_rate_limiter_.Refund(principal_.id, spec_.frames);
        return ToGrpc(s);
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status Call::Finish(grpc::Status status, const google::protobuf::Message& response) {
  if (holds_inflight_slot_) {
    ops_->inflight_.fetch_sub(1);
    holds_inflight_slot_ = false;
  }
  const double duration_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  const char* code = StatusCodeName(status.error_code());
  CallSample sample;
  sample.method = spec_.method;
  sample.model = std::string(spec_.model_id);
  sample.code = code;
  sample.frames = spec_.frames;
  sample.duration_ms = duration_ms;
  sample.timings = timings_;
  ops_->metrics_.Record(sample);
  if (AuditLog* audit = ops_->audit_log_.get()) {
    AuditRecord record;
    record.time = start_wall_;
    record.server = ops_->server_name();
    record.peer = context_->peer();
    record.credential = principal_.id;  // empty when authentication failed
    record.method = spec_.method;
    record.model_id = std::string(spec_.model_id);
    record.frames = spec_.frames;
    record.code = code;
    record.error = status.error_message();
    record.duration_ms = duration_ms;
    record.bytes_in = bytes_in_;
    record.bytes_out = status.ok() ? static_cast<int64_t>(response.ByteSizeLong()) : 0;
    // A failed write is counted and logged by the audit log; with audit_fail_closed
    // the next calls are refused until it recovers.
    (void)audit->Write(record);
  }
  return status;
}

// ---- streams ----

grpc::Status ServerOps::HandleStream(grpc::ServerContext* context, const char* method,
                                     const std::function<grpc::Status(StreamCall&)>& body) {
  StreamCall call(this, method, context->peer());
  grpc::Status status = call.Authenticate(AuthorizationOf(*context), CertSubjectOf(*context));
  if (status.ok()) status = body(call);
  return call.Finish(std::move(status));
}

StreamCall::StreamCall(ServerOps* ops, const char* method, std::string peer)
    : ops_(ops),
      method_(method),
      peer_(std::move(peer)),
      start_wall_(std::chrono::system_clock::now()),
      start_(std::chrono::steady_clock::now()) {}

grpc::Status StreamCall::Authenticate(std::string_view authorization,
                                      std::string_view cert_subject) {
  if (ops_->options_.audit_fail_closed && ops_->audit_log_ && !ops_->audit_log_->healthy()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the audit log cannot be written and logging.audit_fail_closed is set; "
                        "expected a writable audit log (retry later)");
  }
  Expected<auth::Principal> principal =
      ops_->authenticator_->Authenticate(authorization, cert_subject);
  if (!principal.ok()) return ToGrpc(principal.status());
  principal_ = std::move(*principal);
  authenticated_ = true;
  return grpc::Status::OK;
}

grpc::Status StreamCall::Open(std::string_view model_id, auth::Scope scope, int64_t frames) {
  model_id_ = std::string(model_id.substr(0, 256));
  if (!authenticated_) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the stream is not authenticated");
  }
  if (Status s = principal_.Require(scope); !s.ok()) return ToGrpc(s);
  if (Status s = principal_.RequireTenant(model_id); !s.ok()) return ToGrpc(s);
  if (frames > 0) {
    if (Status s = ops_->credential_rate_limiter_.Admit(principal_.id, frames); !s.ok()) {
      return ToGrpc(s);
    }
    const std::string tenant(model_id);
    if (Status s = ops_->rate_limiter_.Admit(tenant, frames); !s.ok()) {
      ops_->credential_rate_limiter_.Refund(principal_.id, frames);
      return ToGrpc(s);
    }
  }
  return grpc::Status::OK;
}

void StreamCall::AddStages(const StageTimings& timings) { ops_->metrics_.RecordStages(timings); }

grpc::Status StreamCall::Finish(grpc::Status status) {
  const double duration_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  const char* code = StatusCodeName(status.error_code());
  CallSample sample;
  sample.method = method_;
  sample.model = model_id_;
  sample.code = code;
  sample.frames = frames_.load();
  sample.duration_ms = duration_ms;
  sample.stream = true;
  ops_->metrics_.Record(sample);
  if (AuditLog* audit = ops_->audit_log_.get()) {
    AuditRecord record;
    record.time = start_wall_;
    record.server = ops_->server_name();
    record.peer = peer_;
    record.credential = principal_.id;
    record.method = method_;
    record.model_id = model_id_;
    record.frames = frames_.load();
    record.code = code;
    record.error = status.error_message();
    record.duration_ms = duration_ms;
    record.bytes_in = bytes_in_.load();
    record.bytes_out = bytes_out_.load();
    (void)audit->Write(record);
  }
  return status;
}

}  // namespace lipsync::rpc
