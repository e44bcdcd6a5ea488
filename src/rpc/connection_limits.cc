#include "rpc/connection_limits.h"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <grpcpp/alarm.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/support/method_handler.h>
#include <grpcpp/support/proto_buffer_reader.h>
#include <grpcpp/support/sync_stream.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <memory>
#include <mutex>
#include <vector>

#include "common/log.h"
#include "compositing.grpc.pb.h"
#include "inference.grpc.pb.h"

namespace lipsync::rpc {
namespace {

using WireFormat = google::protobuf::internal::WireFormatLite;

// Client pings on a connection without calls in flight are accepted this often; more
// often is a "ping strike" (GOAWAY after GRPC_ARG_HTTP2_MAX_PING_STRIKES of them).
constexpr int kMinClientPingIntervalMs = 10'000;
constexpr int kMaxPingStrikes = 2;

int Milliseconds(double seconds) {
  const double ms = seconds * 1000.0;
  if (ms >= static_cast<double>(INT_MAX)) return INT_MAX;
  return std::max(1, static_cast<int>(ms));
}

std::atomic<int64_t> g_read_timeouts{0};
std::atomic<int64_t> g_last_timeout_log_ms{0};

// One warning per 10 s at most: a client trickling requests must not flood the log.
void LogReadTimeout(std::string peer, const char* method, double seconds) {
  const int64_t total = g_read_timeouts.fetch_add(1) + 1;
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::steady_clock::now().time_since_epoch())
                             .count();
  int64_t last = g_last_timeout_log_ms.load();
  if (last != 0 && now_ms - last < 10'000) return;
  if (!g_last_timeout_log_ms.compare_exchange_strong(last, now_ms)) return;
  if (peer.size() > 64) peer.resize(64);
  LOG_WARN(
      "cancelled %s from %s: the request message did not arrive within %.1f s "
      "(server.connection.request_read_timeout_seconds; %lld such calls so far)",
      method, peer.c_str(), seconds, static_cast<long long>(total));
}

enum class ReadOutcome { kMessage, kNoMessage, kCallGone };

// Reads the call's one request message into `bytes`, cancelling the call when it has
// not fully arrived within `timeout`.
ReadOutcome ReadRequestBytes(grpc::internal::ReaderInterface<grpc::ByteBuffer>* stream,
                             grpc::ServerContext* context, std::chrono::milliseconds timeout,
                             const char* method, grpc::ByteBuffer* bytes) {
  struct Watch {
    std::mutex mu;
    bool done = false;   // the read finished; the alarm must not touch the call
    bool fired = false;  // the alarm cancelled the call
    std::string peer;    // taken before the cancel (a cancelled call forgets it)
  };
  auto watch = std::make_shared<Watch>();
  grpc::Alarm alarm;
  alarm.Set(std::chrono::system_clock::now() + timeout, [watch, context](bool expired) {
    if (!expired) return;
    std::lock_guard<std::mutex> lock(watch->mu);
    if (watch->done) return;
    watch->fired = true;
    watch->peer = context->peer();
    context->TryCancel();  // RST_STREAM to the client; the read below fails
  });
  const bool got = stream->Read(bytes);
  bool fired;
  {
    std::lock_guard<std::mutex> lock(watch->mu);
    watch->done = true;
    fired = watch->fired;
  }
  alarm.Cancel();
  if (fired) {
    LogReadTimeout(std::move(watch->peer), method, std::chrono::duration<double>(timeout).count());
    return ReadOutcome::kCallGone;
  }
  if (got) return ReadOutcome::kMessage;
  // No message: the client half-closed without one, or the call ended (cancelled by
  // the client, or the message was over the size limit and gRPC failed the call).
  return context->IsCancelled() ? ReadOutcome::kCallGone : ReadOutcome::kNoMessage;
}

std::string Flatten(const grpc::ByteBuffer& bytes) {
  std::vector<grpc::Slice> slices;
  std::string flat;
  if (!bytes.Dump(&slices).ok()) return flat;
  for (const grpc::Slice& slice : slices) {
    flat.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return flat;
}

grpc::Status ParseRequest(grpc::ByteBuffer* bytes, google::protobuf::Message* request) {
  {
    grpc::ProtoBufferReader reader(bytes);
    if (request->ParseFromZeroCopyStream(&reader) && reader.status().ok()) {
      return grpc::Status::OK;
    }
  }
  return grpc::Status(
      grpc::StatusCode::INVALID_ARGUMENT,
      MalformedRequestMessage(request->GetDescriptor()->full_name(), Flatten(*bytes)));
}

// A unary method registered as a stream, so that it runs when the call's headers
// arrive: reads the request under the bound, then calls the service's own method. The
// response goes out with the status in one batch (last_message), as a unary call's does.
template <class Service, class Request, class Response>
grpc::internal::MethodHandler* NewBoundedUnaryHandler(
    Service* service,
    grpc::Status (Service::*method)(grpc::ServerContext*, const Request*, Response*),
    std::chrono::milliseconds timeout, std::string name) {
  using Stream = grpc::ServerReaderWriter<Response, grpc::ByteBuffer>;
  return new grpc::internal::TemplatedBidiStreamingHandler<Stream, false>(
      [service, method, timeout, name = std::move(name)](grpc::ServerContext* context,
                                                         Stream* stream) {
        grpc::ByteBuffer bytes;
        switch (ReadRequestBytes(stream, context, timeout, name.c_str(), &bytes)) {
          case ReadOutcome::kCallGone:
            return grpc::Status(grpc::StatusCode::CANCELLED, "call ended before its request");
          case ReadOutcome::kNoMessage:
            return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                "the call ended without a request message; expected one "
                                "serialized " +
                                    Request::descriptor()->full_name());
          case ReadOutcome::kMessage:
            break;
        }
        Request request;
        grpc::Status status = ParseRequest(&bytes, &request);
        if (!status.ok()) return status;
        Response response;
        status = (service->*method)(context, &request, &response);
        if (status.ok() && !stream->Write(response, grpc::WriteOptions().set_last_message())) {
          return grpc::Status(
              grpc::StatusCode::INTERNAL,
              "cannot serialize the " + Response::descriptor()->full_name() + " response");
        }
        return status;
      });
}

// Derives from grpc::Service only to name its protected MarkMethodStreamed; never
// instantiated.
struct ServiceAccess : grpc::Service {
  static void MarkStreamed(grpc::Service* service, int index,
                           grpc::internal::MethodHandler* handler) {
    (service->*(&ServiceAccess::MarkMethodStreamed))(index, handler);
  }
};

// Installs BoundedUnaryHandler for method `index` after checking it against the
// generated descriptor (name, request and response type, unary).
class Binder {
 public:
  Binder(grpc::Service* service, const google::protobuf::ServiceDescriptor* descriptor,
         std::chrono::milliseconds timeout)
      : service_(service), descriptor_(descriptor), timeout_(timeout) {}

  template <class Service, class Request, class Response>
  Status Bind(int index, const char* name,
              grpc::Status (Service::*method)(grpc::ServerContext*, const Request*, Response*)) {
    const std::string where = descriptor_->full_name() + "/" + name;
    if (index >= descriptor_->method_count()) {
      return Status::Internal("connection_limits.cc lists " + where + " as method " +
                              std::to_string(index) + " but the service has " +
                              std::to_string(descriptor_->method_count()) +
                              "; expected its table to match the .proto");
    }
    const google::protobuf::MethodDescriptor* m = descriptor_->method(index);
    if (m->name() != name || m->input_type() != Request::descriptor() ||
        m->output_type() != Response::descriptor() || m->client_streaming() ||
        m->server_streaming()) {
      return Status::Internal("connection_limits.cc lists " + where + " as unary method " +
                              std::to_string(index) + " but the .proto has " + m->full_name() +
                              " there; expected its table to match the .proto");
    }
    ++bound_;
    ServiceAccess::MarkStreamed(
        service_, index,
        NewBoundedUnaryHandler(static_cast<Service*>(service_), method, timeout_, "/" + where));
    return Status::Ok();
  }

  // Every unary method of the service is covered (streaming methods read their own
  // messages and are left as they are).
  Status Complete() const {
    int unary = 0;
    for (int i = 0; i < descriptor_->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* m = descriptor_->method(i);
      if (!m->client_streaming() && !m->server_streaming()) ++unary;
    }
    if (bound_ == unary) return Status::Ok();
    return Status::Internal(descriptor_->full_name() + " has " + std::to_string(unary) +
                            " unary methods but connection_limits.cc binds " +
                            std::to_string(bound_) + "; expected every unary method in its table");
  }

 private:
  grpc::Service* const service_;
  const google::protobuf::ServiceDescriptor* const descriptor_;
  const std::chrono::milliseconds timeout_;
  int bound_ = 0;
};

Status BindInference(::inference::InferenceService::Service* service,
                     std::chrono::milliseconds timeout) {
  using S = ::inference::InferenceService::Service;
  const auto* descriptor =
      ::inference::InferBatchRequest::descriptor()->file()->FindServiceByName("InferenceService");
  if (descriptor == nullptr)
    return Status::Internal("inference.InferenceService not in inference.proto");
  Binder b(service, descriptor, timeout);
  LIPSYNC_RETURN_IF_ERROR(b.Bind(0, "InferBatch", &S::InferBatch));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(1, "Health", &S::Health));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(2, "ListModels", &S::ListModels));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(3, "LoadModel", &S::LoadModel));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(4, "UnloadModel", &S::UnloadModel));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(5, "GetModelStats", &S::GetModelStats));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(6, "PrefetchModel", &S::PrefetchModel));
  return b.Complete();
}

Status BindCompositing(::compositing::CompositingService::Service* service,
                       std::chrono::milliseconds timeout) {
  using S = ::compositing::CompositingService::Service;
  const auto* descriptor =
      ::compositing::CompositeBatchRequest::descriptor()->file()->FindServiceByName(
          "CompositingService");
  if (descriptor == nullptr) {
    return Status::Internal("compositing.CompositingService not in compositing.proto");
  }
  Binder b(service, descriptor, timeout);
  LIPSYNC_RETURN_IF_ERROR(b.Bind(0, "InferBatchComposite", &S::InferBatchComposite));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(1, "Health", &S::Health));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(2, "ListModels", &S::ListModels));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(3, "LoadModel", &S::LoadModel));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(4, "UnloadModel", &S::UnloadModel));
  LIPSYNC_RETURN_IF_ERROR(b.Bind(5, "GetModelStats", &S::GetModelStats));
  return b.Complete();
}

// Where the wire data of `bytes` stops being a sequence of valid protobuf fields.
std::string DescribeWireError(const std::string& bytes) {
  google::protobuf::io::CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            static_cast<int>(bytes.size()));
  while (true) {
    const int at = in.CurrentPosition();
    const uint32_t tag = in.ReadTag();
    if (tag == 0) {
      if (at == static_cast<int>(bytes.size())) break;
      return "invalid field tag at byte " + std::to_string(at);
    }
    const int field = WireFormat::GetTagFieldNumber(tag);
    const int wire_type = static_cast<int>(WireFormat::GetTagWireType(tag));
    if (field == 0 || wire_type > 5) {
      return "invalid field tag at byte " + std::to_string(at) + " (field " +
             std::to_string(field) + ", wire type " + std::to_string(wire_type) + ")";
    }
    if (!WireFormat::SkipField(&in, tag)) {
      return "field " + std::to_string(field) + " at byte " + std::to_string(at) +
             " is truncated or malformed (wire type " + std::to_string(wire_type) + ")";
    }
  }
  return "the fields are well formed but a value is invalid for its field (e.g. a string "
         "field that is not valid UTF-8)";
}

}  // namespace

void ApplyConnectionLimits(grpc::ServerBuilder* builder, const config::ConnectionConfig& config) {
  builder->AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                              std::max(1, config.max_concurrent_streams));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS,
                              Milliseconds(config.keepalive_time_seconds));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                              Milliseconds(config.keepalive_timeout_seconds));
  // Our keepalive pings continue on a quiet long-lived stream (default: 2 pings, then
  // none until data flows, so a dead peer would go unnoticed).
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Clients may ping (keepalive) with or without calls in flight, every 10 s or slower.
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              kMinClientPingIntervalMs);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, kMaxPingStrikes);
  builder->AddChannelArgument(GRPC_ARG_MAX_CONNECTION_IDLE_MS,
                              Milliseconds(config.max_connection_idle_seconds));
  // TLS handshake and the client's HTTP/2 preface and SETTINGS must arrive in time too.
  builder->AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                              Milliseconds(config.request_read_timeout_seconds));
  grpc::ResourceQuota quota("lipsync-server");
  quota.Resize(static_cast<size_t>(std::max<int64_t>(1, config.resource_quota_mb)) << 20);
  quota.SetMaxThreads(std::max(1, config.max_threads));
  builder->SetResourceQuota(quota);
}

Status BoundRequestReads(grpc::Service* service, const config::ConnectionConfig& config) {
  const auto timeout = std::chrono::milliseconds(Milliseconds(config.request_read_timeout_seconds));
  if (service->has_async_methods() || service->has_callback_methods() ||
      service->has_generic_methods()) {
    return Status::Internal(
        "BoundRequestReads supports synchronous services only; expected every method of the "
        "service to be synchronous");
  }
  if (auto* inference = dynamic_cast<::inference::InferenceService::Service*>(service)) {
    return BindInference(inference, timeout);
  }
  if (auto* compositing = dynamic_cast<::compositing::CompositingService::Service*>(service)) {
    return BindCompositing(compositing, timeout);
  }
  return Status::Ok();
}

int64_t RequestReadTimeouts() { return g_read_timeouts.load(); }

std::string MalformedRequestMessage(const std::string& message_name, const std::string& bytes) {
  return "request is not a valid " + message_name + " (" + std::to_string(bytes.size()) +
         " bytes): " + DescribeWireError(bytes) + "; expected a serialized " + message_name;
}

}  // namespace lipsync::rpc
