#include "rpc/server_ops.h"

#include <google/protobuf/message.h>

#include <shared_mutex>
#include <unordered_map>

#include "rpc/grpc_status.h"

namespace lipsync::rpc {
namespace {

struct Attachments {
  std::shared_mutex mu;
  std::unordered_map<const void*, ServerOps*> by_service;
};

Attachments& attachments() {
  static Attachments* instance = new Attachments();  // never destroyed: used at exit
  return *instance;
}

}  // namespace

Expected<std::unique_ptr<ServerOps>> ServerOps::Create(OpsOptions options) {
  std::unique_ptr<ServerOps> ops(new ServerOps(std::move(options)));
  if (!ops->options_.audit_log_path.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(ops->audit_log_, AuditLog::Open(ops->options_.audit_log_path));
  }
  if (ops->options_.metrics_port >= 0) {
    LIPSYNC_ASSIGN_OR_RETURN(ops->metrics_http_,
                             MetricsHttpServer::Start(ops->options_.metrics_host,
                                                      ops->options_.metrics_port, &ops->metrics_));
  }
  return ops;
}

ServerOps::ServerOps(OpsOptions options)
    : options_(std::move(options)),
      rate_limiter_(options_.rate_limit),
      metrics_(options_.server_name) {}

ServerOps::~ServerOps() {
  // Stop scrapes before the registry they read goes away.
  metrics_http_.reset();
}

void ServerOps::SetGaugeSourceOnce(
    const std::function<std::function<std::vector<Gauge>()>()>& make) {
  std::call_once(gauges_once_, [&] { metrics_.SetGaugeSource(make()); });
}

void ServerOps::Attach(const void* service, ServerOps* ops) {
  std::unique_lock lock(attachments().mu);
  attachments().by_service[service] = ops;
}

void ServerOps::Detach(const void* service, ServerOps* ops) {
  std::unique_lock lock(attachments().mu);
  auto it = attachments().by_service.find(service);
  if (it != attachments().by_service.end() && it->second == ops) {
    attachments().by_service.erase(it);
  }
}

ServerOps* ServerOps::ForService(const void* service) {
  std::shared_lock lock(attachments().mu);
  auto it = attachments().by_service.find(service);
  return it == attachments().by_service.end() ? nullptr : it->second;
}

CallScope::CallScope(const void* service, grpc::ServerContext* context, const char* method,
                     const google::protobuf::Message& request)
    : ops_(ServerOps::ForService(service)), context_(context), method_(method) {
  if (ops_ == nullptr) return;
  start_wall_ = std::chrono::system_clock::now();
  start_ = std::chrono::steady_clock::now();
  bytes_in_ = static_cast<int64_t>(request.ByteSizeLong());
}

void CallScope::SetModel(const std::string& model_id, int64_t frames) {
  if (ops_ == nullptr) return;
  model_id_ = model_id;
  frames_ = frames;
}

grpc::Status CallScope::Admit() {
  if (ops_ == nullptr) return grpc::Status::OK;
  return ToGrpc(ops_->rate_limiter().Admit(model_id_, frames_));
}

void CallScope::SetTimings(double queue_wait_ms, double inference_ms, double composite_ms) {
  queue_wait_ms_ = queue_wait_ms;
  inference_ms_ = inference_ms;
  composite_ms_ = composite_ms;
}

grpc::Status CallScope::Finish(grpc::Status status, const google::protobuf::Message& response) {
  if (ops_ == nullptr) return status;
  const double duration_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count();
  const char* code = StatusCodeName(status.error_code());
  CallSample sample;
  sample.method = method_;
  sample.code = code;
  sample.frames = frames_;
  sample.duration_ms = duration_ms;
  sample.queue_wait_ms = queue_wait_ms_;
  sample.inference_ms = inference_ms_;
  sample.composite_ms = composite_ms_;
  ops_->metrics().Record(sample);
  if (AuditLog* audit = ops_->audit_log()) {
    AuditRecord record;
    record.time = start_wall_;
    record.server = ops_->server_name();
    record.peer = context_->peer();
    record.method = method_;
    record.model_id = model_id_;
    record.frames = frames_;
    record.code = code;
    record.error = status.error_message();
    record.duration_ms = duration_ms;
    record.bytes_in = bytes_in_;
    record.bytes_out = status.ok() ? static_cast<int64_t>(response.ByteSizeLong()) : 0;
    audit->Write(record);
  }
  return status;
}

}  // namespace lipsync::rpc
