#include "rpc/grpc_inference_backend.h"

#include <algorithm>
#include <cstdio>
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

// splitmix64's finalizer: spreads FNV's weak low bits over the whole word.
uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

GrpcBackendOptions BackendOptionsFromConfig(const config::CompositingConfig& config) {
  GrpcBackendOptions options;
  if (config.inference_server.urls.empty()) {
    options.target = config.inference_server.url;
  } else {
    options.targets = config.inference_server.urls;
  }
  options.max_message_size_mb = config.server.max_message_size_mb;
  options.timeout = std::chrono::milliseconds(
      static_cast<int64_t>(config.inference_server.timeout_seconds * 1000.0));
  options.max_retries = config.inference_server.max_retries;
  options.api_key = config.inference_server.api_key;
  options.tls_ca_path = config.inference_server.tls_ca_path;
  return options;
}

std::vector<size_t> RendezvousOrder(const std::vector<std::string>& targets,
                                    const std::string& model_id) {
  std::vector<std::pair<uint64_t, size_t>> scored;
  scored.reserve(targets.size());
  for (size_t i = 0; i < targets.size(); ++i) {
    uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a over "target\0model_id"
    auto feed = [&h](unsigned char byte) {
      h ^= byte;
      h *= 0x100000001b3ull;
    };
    for (unsigned char c : targets[i]) feed(c);
    feed(0);
    for (unsigned char c : model_id) feed(c);
    scored.emplace_back(Mix64(h), i);
  }
  // Highest weight first; ties (never in practice) by index, so the order is total.
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<size_t> order;
  order.reserve(scored.size());
  for (const auto& entry : scored) order.push_back(entry.second);
  return order;
}

std::string RetryServiceConfig(const GrpcBackendOptions& options) {
  if (options.max_retries <= 0) return R"({"methodConfig":[{"name":[{}]}]})";
  const int attempts = std::min(options.max_retries, 4) + 1;
  auto seconds = [](std::chrono::milliseconds ms) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3fs", std::max<int64_t>(1, ms.count()) / 1000.0);
    return std::string(text);
  };
  // name [{}]: every method of every service on this channel.
  return std::string(R"({"methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":)") +
         std::to_string(attempts) + R"(,"initialBackoff":")" + seconds(options.initial_backoff) +
         R"(","maxBackoff":")" + seconds(std::max(options.max_backoff, options.initial_backoff)) +
         R"(","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}]})";
}

Expected<std::unique_ptr<GrpcInferenceBackend>> GrpcInferenceBackend::Create(
    GrpcBackendOptions options) {
  if (!options.target.empty() && !options.targets.empty()) {
    return Status::InvalidArgument(
        "both one inference server address and a list are set; expected one of them");
  }
  std::vector<std::string> targets =
      options.targets.empty() ? std::vector<std::string>{options.target} : options.targets;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (targets[i].empty()) {
      return Status::InvalidArgument("inference server address is empty; expected host:port");
    }
    if (std::find(targets.begin(), targets.begin() + i, targets[i]) != targets.begin() + i) {
      return Status::InvalidArgument("inference server '" + targets[i].substr(0, 256) +
                                     "' is listed twice; expected each server once");
    }
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
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 1);
  args.SetServiceConfigJSON(RetryServiceConfig(options));
  // gRPC keeps only 256 KiB of a call for retries by default: a batch is megabytes, so
  // it would never be retried. Room for the largest message the channel may send.
  args.SetInt(GRPC_ARG_PER_RPC_RETRY_BUFFER_SIZE,
              max_bytes > INT32_MAX - (1 << 20) ? INT32_MAX : max_bytes + (1 << 20));
  // A server that comes back is found again within max_reconnect_backoff. (The minimum
  // reconnect backoff stays gRPC's: it is also the connect timeout, 20 s.)
  const int reconnect_ms =
      static_cast<int>(std::clamp<int64_t>(options.max_reconnect_backoff.count(), 100, 60000));
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, std::min(100, reconnect_ms));
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, reconnect_ms);
  std::vector<Endpoint> endpoints;
  for (const std::string& target : targets) {
    Endpoint endpoint;
    endpoint.target = target;
    endpoint.channel = grpc::CreateCustomChannel(target, credentials, args);
    endpoint.stub = pb::InferenceService::NewStub(endpoint.channel);
    endpoints.push_back(std::move(endpoint));
  }
  return std::unique_ptr<GrpcInferenceBackend>(
      new GrpcInferenceBackend(std::move(options), std::move(endpoints)));
}

GrpcInferenceBackend::GrpcInferenceBackend(GrpcBackendOptions options,
                                           std::vector<Endpoint> endpoints)
    : options_(std::move(options)), endpoints_(std::move(endpoints)) {
  for (const Endpoint& endpoint : endpoints_) targets_.push_back(endpoint.target);
}

std::vector<GrpcInferenceBackend::Endpoint*> GrpcInferenceBackend::Candidates(
    const std::string& model_id) {
  std::vector<Endpoint*> order;
  for (size_t i : RendezvousOrder(targets_, model_id)) order.push_back(&endpoints_[i]);
  if (order.size() < 2) return order;
  // A server known to be down is tried last (its models fail over at once instead of
  // waiting out the retries first); asking for the state makes an idle one reconnect.
  std::stable_partition(order.begin(), order.end(), [](Endpoint* endpoint) {
    return endpoint->channel->GetState(/*try_to_connect=*/true) != GRPC_CHANNEL_TRANSIENT_FAILURE;
  });
  return order;
}

template <typename Rpc>
Status GrpcInferenceBackend::Call(std::optional<Clock::time_point> deadline,
                                  const std::string& model_id, Rpc&& rpc) {
  const Clock::time_point end = deadline ? *deadline : Clock::now() + options_.timeout;
  const std::vector<Endpoint*> candidates = Candidates(model_id);
  std::string tried;
  for (size_t i = 0; i < candidates.size(); ++i) {
    Endpoint& endpoint = *candidates[i];
    grpc::ClientContext context;
    context.set_deadline(ToSystem(end));
    if (!options_.api_key.empty()) {
      context.AddMetadata("authorization", "Bearer " + options_.api_key);
    }
    if (!model_id.empty()) context.AddMetadata("x-model-id", model_id);
    ++attempts_;
    const grpc::Status status = rpc(*endpoint.stub, &context);
    if (status.ok()) return Status::Ok();
    tried += (tried.empty() ? "" : ", ") + endpoint.target;
    if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
      if (i + 1 < candidates.size() && Clock::now() < end) {
        LOG_WARN("inference server %s unavailable for model '%s' (%s); trying %s",
                 endpoint.target.c_str(), model_id.substr(0, 128).c_str(),
                 status.error_message().substr(0, 200).c_str(), candidates[i + 1]->target.c_str());
        continue;
      }
      return FromGrpc(status).WithContext(
          "inference server" + std::string(candidates.size() > 1 ? "s " : " ") + tried +
          " (retried up to " + std::to_string(std::min(options_.max_retries, 4)) + " times each)");
    }
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && Clock::now() >= end) {
      // Our deadline on the inference hop ran out (gRPC's own text is bare): say which
      // hop and which limit, and leave a trace in the log.
      const bool configured = !deadline.has_value();
      Status error = Status::DeadlineExceeded(
          "inference server " + endpoint.target + " did not answer within " +
          (configured ? "inference_server.timeout_seconds (" +
                            std::to_string(options_.timeout.count()) + " ms)"
                      : std::string("the call's deadline (the client's, capped by "
                                    "inference_server.timeout_seconds)")) +
          " for model '" + model_id.substr(0, 128) + "' (" + status.error_message() +
          "); expected an answer in time: raise the deadline or add inference capacity");
      LOG_WARN("%s", error.message().c_str());
      return error;
    }
    return FromGrpc(status);
  }
  return Status::Unavailable("no inference server configured");
}

template <typename Rpc>
std::vector<Status> GrpcInferenceBackend::CallEach(std::optional<Clock::time_point> deadline,
                                                   Rpc&& rpc) {
  const Clock::time_point end = deadline ? *deadline : Clock::now() + options_.timeout;
  // Asked together, so one slow server costs one deadline, not one each.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<grpc::Status> statuses(endpoints_.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts[i]->set_deadline(ToSystem(end));
    if (!options_.api_key.empty()) {
      contexts[i]->AddMetadata("authorization", "Bearer " + options_.api_key);
    }
    ++attempts_;
  }
  if (endpoints_.size() == 1) {
    statuses[0] = rpc(size_t{0}, *endpoints_[0].stub, contexts[0].get());
  } else {
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      threads.emplace_back(
          [&, i] { statuses[i] = rpc(i, *endpoints_[i].stub, contexts[i].get()); });
    }
    for (std::thread& thread : threads) thread.join();
  }
  std::vector<Status> result;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    Status status = FromGrpc(statuses[i]);
    if (!status.ok()) status = status.WithContext("inference server " + endpoints_[i].target);
    result.push_back(std::move(status));
  }
  return result;
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
  LIPSYNC_RETURN_IF_ERROR(Call(request.deadline, request.model_id,
                               [&](pb::InferenceService::Stub& stub, grpc::ClientContext* context) {
                                 response.Clear();
                                 return stub.InferBatch(context, message, &response);
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
  std::vector<pb::HealthResponse> responses(endpoints_.size());
  const std::vector<Status> statuses = CallEach(
      deadline, [&](size_t i, pb::InferenceService::Stub& stub, grpc::ClientContext* context) {
        return stub.Health(context, pb::HealthRequest(), &responses[i]);
      });
  std::optional<inference::HealthInfo> total;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    if (!statuses[i].ok()) continue;
    inference::HealthInfo info = FromProto(responses[i]);
    if (!total) {
      total = std::move(info);
      continue;
    }
    total->healthy = total->healthy || info.healthy;
    total->loaded_models += info.loaded_models;
    total->max_models += info.max_models;
    total->gpu_count += info.gpu_count;
    total->cuda_available = total->cuda_available || info.cuda_available;
    total->queue_depth += info.queue_depth;
    total->queue_capacity += info.queue_capacity;
    for (auto& gpu : info.gpus) total->gpus.push_back(std::move(gpu));
  }
  if (!total) return statuses.back();
  return *total;
}

Expected<std::vector<inference::ModelStats>> GrpcInferenceBackend::ListModels(
    bool include_available, int limit) {
  admin::ListModelsRequest request;
  request.set_include_available(include_available);
  request.set_limit(limit);
  std::vector<admin::ListModelsResponse> responses(endpoints_.size());
  const std::vector<Status> statuses = CallEach(
      std::nullopt, [&](size_t i, pb::InferenceService::Stub& stub, grpc::ClientContext* context) {
        return stub.ListModels(context, request, &responses[i]);
      });
  std::vector<inference::ModelStats> models;
  bool any = false;
  for (size_t i = 0; i < endpoints_.size(); ++i) {
    if (!statuses[i].ok()) continue;
    any = true;
    for (const auto& info : responses[i].models()) models.push_back(FromProto(info));
  }
  if (!any) return statuses.back();
  return models;
}

Expected<inference::LoadResult> GrpcInferenceBackend::LoadModel(const std::string& model_id,
                                                                bool force_reload) {
  admin::LoadModelRequest request;
  request.set_model_id(model_id);
  request.set_force_reload(force_reload);
  admin::LoadModelResponse response;
  LIPSYNC_RETURN_IF_ERROR(Call(std::nullopt, model_id,
                               [&](pb::InferenceService::Stub& stub, grpc::ClientContext* context) {
                                 return stub.LoadModel(context, request, &response);
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
  LIPSYNC_RETURN_IF_ERROR(Call(std::nullopt, model_id,
                               [&](pb::InferenceService::Stub& stub, grpc::ClientContext* context) {
                                 return stub.UnloadModel(context, request, &response);
                               }));
  return response.was_loaded();
}

Expected<std::vector<inference::ModelStats>> GrpcInferenceBackend::GetModelStats(
    const std::string& model_id) {
  admin::GetModelStatsRequest request;
  request.set_model_id(model_id);
  std::vector<admin::GetModelStatsResponse> responses(endpoints_.size());
  std::vector<Status> statuses;
  if (model_id.empty()) {  // every model: every server
    statuses = CallEach(std::nullopt, [&](size_t i, pb::InferenceService::Stub& stub,
                                          grpc::ClientContext* context) {
      return stub.GetModelStats(context, request, &responses[i]);
    });
  } else {
    responses.resize(1);
    statuses.push_back(Call(std::nullopt, model_id,
                            [&](pb::InferenceService::Stub& stub, grpc::ClientContext* context) {
                              return stub.GetModelStats(context, request, &responses[0]);
                            }));
  }
  std::vector<inference::ModelStats> models;
  bool any = false;
  for (size_t i = 0; i < statuses.size(); ++i) {
    if (!statuses[i].ok()) continue;
    any = true;
    for (const auto& info : responses[i].models()) models.push_back(FromProto(info));
  }
  if (!any) return statuses.back();
  return models;
}

GrpcInferenceBackend::~GrpcInferenceBackend() {
  std::unique_lock<std::mutex> lock(prefetch_mu_);
  prefetch_cv_.wait(lock, [&] { return prefetches_in_flight_ == 0; });
}

Expected<inference::PrefetchResult> GrpcInferenceBackend::PrefetchModel(
    const std::string& model_id) {
  {
    std::lock_guard<std::mutex> lock(prefetch_mu_);
    if (prefetches_in_flight_ >= std::max(options_.max_prefetches_in_flight, 0)) {
      return inference::PrefetchResult::kDropped;
    }
    ++prefetches_in_flight_;
  }
  // The call's state lives until its callback (gRPC's thread) runs, and is deleted there.
  // Not owned by the callback (a shared_ptr captured in it): the callback is freed with the
  // call, which the context's destructor releases, so the context would be destroyed from
  // inside its own destructor (gRPC's "prior > 0" abort).
  struct Hint {
    grpc::ClientContext context;
    pb::PrefetchModelRequest request;
    pb::PrefetchModelResponse response;
  };
  auto* hint = new Hint;
  hint->request.set_model_id(model_id);
  hint->context.set_deadline(ToSystem(Clock::now() + options_.prefetch_timeout));
  if (!options_.api_key.empty()) {
    hint->context.AddMetadata("authorization", "Bearer " + options_.api_key);
  }
  hint->context.AddMetadata("x-model-id", model_id);
  // The server the model's Infer calls go to first (no failover: it is only a hint).
  const std::vector<Endpoint*> candidates = Candidates(model_id);
  ++attempts_;
  candidates.front()->stub->async()->PrefetchModel(
      &hint->context, &hint->request, &hint->response, [this, hint](grpc::Status status) {
        if (!status.ok()) {
          LOG_DEBUG("prefetch of model '%s' not taken: %s",
                    hint->request.model_id().substr(0, 128).c_str(),
                    status.error_message().substr(0, 200).c_str());
        }
        delete hint;
        std::lock_guard<std::mutex> lock(prefetch_mu_);
        --prefetches_in_flight_;
        prefetch_cv_.notify_all();
      });
  return inference::PrefetchResult::kSent;
}

}  // namespace lipsync::rpc
