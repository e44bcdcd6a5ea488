#include "rpc/grpc_inference_backend.h"

#include <fstream>
#include <sstream>
#include <thread>

#include "common/log.h"
#include "rpc/grpc_status.h"
#include "rpc/inference_service.h"

namespace lipsync::rpc {
namespace {

namespace pb = ::inference;
namespace admin = ::lipsync::admin;
using inference::Clock;

std::chrono::system_clock::time_point ToSystem(Clock::time_point steady) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(steady - Clock::now());
}

}  // namespace

GrpcBackendOptions BackendOptionsFromConfig(const config::CompositingConfig& config) {
  GrpcBackendOptions options;
  options.target = config.inference_server.url;
  options.max_message_size_mb = config.server.max_message_size_mb;
  options.timeout = std::chrono::milliseconds(
      static_cast<int64_t>(config.inference_server.timeout_seconds * 1000.0));
  options.max_retries = config.inference_server.max_retries;
  options.api_key = config.inference_server.api_key;
  options.tls_ca_path = config.inference_server.tls_ca_path;
  return options;
}

Expected<std::unique_ptr<GrpcInferenceBackend>> GrpcInferenceBackend::Create(
    GrpcBackendOptions options) {
  if (options.target.empty()) {
    return Status::InvalidArgument("inference server address is empty; expected host:port");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!options.tls_ca_path.empty()) {
    std::ifstream in(options.tls_ca_path, std::ios::binary);
    if (!in) {
      return Status::FailedPrecondition("cannot read the inference server's CA '" +
                                        options.tls_ca_path + "'; expected a readable PEM file");
    }
    std::stringstream pem;
    pem << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = pem.str();
    credentials = grpc::SslCredentials(ssl);
  }
  grpc::ChannelArguments args;
  const int max_bytes = options.max_message_size_mb > 2047
                            ? INT32_MAX
                            : std::max(1, options.max_message_size_mb) * 1024 * 1024;
  args.SetMaxReceiveMessageSize(max_bytes);
  args.SetMaxSendMessageSize(max_bytes);
  auto channel = grpc::CreateCustomChannel(options.target, credentials, args);
  return std::unique_ptr<GrpcInferenceBackend>(
      new GrpcInferenceBackend(std::move(options), std::move(channel)));
}

GrpcInferenceBackend::GrpcInferenceBackend(GrpcBackendOptions options,
                                           std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      stub_(pb::InferenceService::NewStub(channel_)) {}

template <typename Rpc>
Status GrpcInferenceBackend::CallWithRetry(std::optional<Clock::time_point> deadline,
                                           const std::string& model_id, Rpc&& rpc) {
  const Clock::time_point end = deadline ? *deadline : Clock::now() + options_.timeout;
  std::chrono::milliseconds backoff = options_.initial_backoff;
  for (int attempt = 0;; ++attempt) {
    grpc::ClientContext context;
    context.set_deadline(ToSystem(end));
    if (!options_.api_key.empty()) {
      context.AddMetadata("authorization", "Bearer " + options_.api_key);
    }
    if (!model_id.empty()) context.AddMetadata("x-model-id", model_id);
    ++attempts_;
    const grpc::Status status = rpc(&context);
    if (status.ok()) return Status::Ok();
    const bool retry = status.error_code() == grpc::StatusCode::UNAVAILABLE &&
                       attempt < options_.max_retries && Clock::now() + backoff < end;
    if (!retry) {
      Status error = FromGrpc(status);
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
        error = error.WithContext("inference server " + options_.target + " (after " +
                                  std::to_string(attempt + 1) + " attempts)");
      } else if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
                 Clock::now() >= end) {
        // Our deadline on the inference hop ran out (gRPC's own text is bare): say which
        // hop and which limit, and leave a trace in the log.
        const bool configured = !deadline.has_value();
        error = Status::DeadlineExceeded(
            "inference server " + options_.target + " did not answer within " +
            (configured ? "inference_server.timeout_seconds (" +
                              std::to_string(options_.timeout.count()) + " ms)"
                        : std::string("the call's deadline (the client's, capped by "
                                      "inference_server.timeout_seconds)")) +
            " for model '" + model_id.substr(0, 128) + "' (" + status.error_message() +
            "); expected an answer in time: raise the deadline or add inference capacity");
        LOG_WARN("%s", error.message().c_str());
      }
      return error;
    }
    std::this_thread::sleep_for(backoff);
    backoff *= 2;
  }
}

Expected<inference::InferResult> GrpcInferenceBackend::Infer(
    const inference::InferRequest& request) {
  pb::InferBatchRequest message;
  message.set_model_id(request.model_id);
  message.set_batch_size(request.batch_size);
  message.set_visual_frames(request.visual_frames.data(), request.visual_frames.size());
  message.set_visual_format(static_cast<pb::VisualFormat>(request.visual_format));
  message.set_audio_features(request.audio_features.data(), request.audio_features.size());
  message.set_raw_audio(request.raw_audio.data(), request.raw_audio.size());
  message.set_sample_rate(request.sample_rate);
  message.set_start_frame_idx(request.start_frame_idx);
  message.set_utterance_frames(request.utterance_frames);
  message.set_end_of_utterance(request.end_of_utterance);
  message.set_output_format(static_cast<pb::OutputFormat>(request.output_format));
  pb::InferBatchResponse response;
  LIPSYNC_RETURN_IF_ERROR(
      CallWithRetry(request.deadline, request.model_id, [&](grpc::ClientContext* context) {
        response.Clear();
        return stub_->InferBatch(context, message, &response);
      }));
  if (!response.success()) {
    return Status::Internal("inference server answered OK without success: " + response.error());
  }
  inference::InferResult result;
  result.output = std::move(*response.mutable_output_frames());
  result.batch_size = response.batch_size();
  result.height = response.output_height();
  result.width = response.output_width();
  result.output_format = static_cast<inference::OutputFormat>(response.output_format());
  result.device_id = response.gpu_id();
  result.worker_id = response.worker_id();
  result.inference_ms = response.inference_time_ms();
  result.queue_wait_ms = response.queue_wait_ms();
  result.total_ms = response.total_time_ms();
  result.loaded_on_demand = response.model_loaded_on_demand();
  result.model_load_ms = response.model_load_time_ms();
  result.audio_processing_ms = response.audio_processing_ms();
  result.dynamic_batch_frames = response.dynamic_batch_frames();
  return result;
}

Expected<inference::HealthInfo> GrpcInferenceBackend::Health(
    std::optional<Clock::time_point> deadline) {
  pb::HealthResponse response;
  LIPSYNC_RETURN_IF_ERROR(CallWithRetry(deadline, "", [&](grpc::ClientContext* context) {
    return stub_->Health(context, pb::HealthRequest(), &response);
  }));
  return FromProto(response);
}

Expected<std::vector<inference::ModelStats>> GrpcInferenceBackend::ListModels(
    bool include_available, int limit) {
  admin::ListModelsRequest request;
  request.set_include_available(include_available);
  request.set_limit(limit);
  admin::ListModelsResponse response;
  LIPSYNC_RETURN_IF_ERROR(CallWithRetry(std::nullopt, "", [&](grpc::ClientContext* context) {
    return stub_->ListModels(context, request, &response);
  }));
  std::vector<inference::ModelStats> models;
  for (const auto& info : response.models()) models.push_back(FromProto(info));
  return models;
}

Expected<inference::LoadResult> GrpcInferenceBackend::LoadModel(const std::string& model_id,
                                                                bool force_reload) {
  admin::LoadModelRequest request;
  request.set_model_id(model_id);
  request.set_force_reload(force_reload);
  admin::LoadModelResponse response;
  LIPSYNC_RETURN_IF_ERROR(CallWithRetry(std::nullopt, model_id, [&](grpc::ClientContext* context) {
    return stub_->LoadModel(context, request, &response);
  }));
  inference::LoadResult result;
  result.load_time_ms = response.load_time_ms();
  result.already_loaded = response.already_loaded();
  result.stats = FromProto(response.model());
  return result;
}

Expected<bool> GrpcInferenceBackend::UnloadModel(const std::string& model_id) {
  admin::UnloadModelRequest request;
  request.set_model_id(model_id);
  admin::UnloadModelResponse response;
  LIPSYNC_RETURN_IF_ERROR(CallWithRetry(std::nullopt, model_id, [&](grpc::ClientContext* context) {
    return stub_->UnloadModel(context, request, &response);
  }));
  return response.was_loaded();
}

Expected<std::vector<inference::ModelStats>> GrpcInferenceBackend::GetModelStats(
    const std::string& model_id) {
  admin::GetModelStatsRequest request;
  request.set_model_id(model_id);
  admin::GetModelStatsResponse response;
  LIPSYNC_RETURN_IF_ERROR(CallWithRetry(std::nullopt, model_id, [&](grpc::ClientContext* context) {
    return stub_->GetModelStats(context, request, &response);
  }));
  std::vector<inference::ModelStats> models;
  for (const auto& info : response.models()) models.push_back(FromProto(info));
  return models;
}

}  // namespace lipsync::rpc
