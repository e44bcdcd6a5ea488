#include "rpc/inference_service.h"

#include <map>
#include <utility>

#include "inference/gpu_info.h"
#include "rpc/grpc_status.h"
#include "rpc/server_setup.h"

namespace lipsync::rpc {
namespace {

namespace pb = ::inference;
namespace admin = ::lipsync::admin;
using inference::ModelState;

// Sets the response's success/error pair and returns the same error as the call status.
template <typename Response>
grpc::Status Fail(const Status& status, Response* response) {
  response->set_success(false);
  response->set_error(status.message());
  return ToGrpc(status);
}

// "cpu" for the CPU provider, else the GPU ordinal.
std::string DeviceLabel(int device) { return device < 0 ? "cpu" : std::to_string(device); }

// Scrape-time values from the backend: models (loaded, per device memory, load times,
// the registry's counts), the scheduler queue, and GPUs from NVML when present.
std::vector<Gauge> HealthGauges(inference::InferenceBackend* backend) {
  using Kind = Gauge::Kind;
  std::vector<Gauge> gauges;
  auto health = backend->Health(std::nullopt);
  if (!health.ok()) return gauges;
  gauges.push_back(
      {"lipsync_loaded_models", "Models loaded now.", {}, 1.0 * health->loaded_models});
  gauges.push_back({"lipsync_max_models",
                    "Models that may be loaded at once (all devices).",
                    {},
                    1.0 * health->max_models});
  gauges.push_back({"lipsync_queue_depth",
                    "Batches waiting for an inference worker.",
                    {},
                    1.0 * health->queue_depth});
  gauges.push_back({"lipsync_queue_capacity",
                    "Batches the queue holds before refusing.",
                    {},
                    1.0 * health->queue_capacity});
  const inference::ModelCounters& counts = health->model_counters;
  gauges.push_back({"lipsync_model_loads_total",
                    "Successful model loads and reloads.",
                    {},
                    static_cast<double>(counts.loads),
                    Kind::kCounter});
  gauges.push_back({"lipsync_model_load_failures_total",
                    "Failed model loads and reloads.",
                    {},
                    static_cast<double>(counts.load_failures),
                    Kind::kCounter});
  gauges.push_back({"lipsync_model_evictions_total",
                    "Models unloaded to make room (max_models_per_gpu or memory cap).",
                    {},
                    static_cast<double>(counts.evictions),
                    Kind::kCounter});
  gauges.push_back({"lipsync_model_cache_hits_total",
                    "Requests that found their model loaded.",
                    {},
                    static_cast<double>(counts.cache_hits),
                    Kind::kCounter});
  gauges.push_back({"lipsync_model_cache_misses_total",
                    "Requests that had to load their model (or wait for its load).",
                    {},
                    static_cast<double>(counts.cache_misses),
                    Kind::kCounter});
  gauges.push_back({"lipsync_model_idle_unloads_total",
                    "Models unloaded after idle_timeout.",
                    {},
                    static_cast<double>(counts.idle_unloads),
                    Kind::kCounter});
  for (const auto& [result, count] : {std::pair{"queued", counts.prefetches_queued},
                                      std::pair{"dropped", counts.prefetches_dropped}}) {
    gauges.push_back({"lipsync_model_prefetches_total",
                      "Model prefetch hints: queued a background load, or dropped (queue full).",
                      {{"result", result}},
                      static_cast<double>(count),
                      Kind::kCounter});
  }
  gauges.push_back({"lipsync_model_load_duration_seconds",
                    "Time successful model loads took.",
                    {},
                    counts.load_seconds,
                    Kind::kSummary,
                    static_cast<uint64_t>(counts.loads)});
  // Loaded models only: the label set is bounded by capacity.
  std::map<int, int64_t> bytes_by_device;
  if (auto loaded = backend->GetModelStats(""); loaded.ok()) {
    for (const inference::ModelStats& model : *loaded) {
      if (model.state != ModelState::kReady) continue;
      bytes_by_device[model.device_id] += model.memory_bytes;
      gauges.push_back({"lipsync_model_load_seconds",
                        "Time the loaded copy of a model took to load.",
                        {{"model", model.model_id}},
                        model.load_time_ms / 1000.0});
    }
  }
  for (const auto& [device, bytes] : bytes_by_device) {
    gauges.push_back({"lipsync_model_memory_bytes",
                      "Memory held by loaded models, per device.",
                      {{"device", DeviceLabel(device)}},
                      static_cast<double>(bytes)});
  }
  // NVML, when a driver is present (no GPU: none of these series).
  for (const inference::GpuStatus& gpu : inference::QueryGpus()) {
    const MetricLabels labels{{"gpu", std::to_string(gpu.device_id)}};
    gauges.push_back({"lipsync_gpu_memory_used_bytes", "GPU memory in use, all processes (NVML).",
                      labels, 1024.0 * 1024.0 * static_cast<double>(gpu.memory_used_mb)});
    gauges.push_back({"lipsync_gpu_memory_total_bytes", "GPU memory in all (NVML).", labels,
                      1024.0 * 1024.0 * static_cast<double>(gpu.memory_total_mb)});
    if (gpu.utilization_percent >= 0) {
      gauges.push_back({"lipsync_gpu_utilization_ratio",
                        "Share of the last sample period a kernel ran on the GPU (NVML), 0..1.",
                        labels, gpu.utilization_percent / 100.0});
    }
  }
  return gauges;
}

}  // namespace

bool SeesEveryTenant(const auth::Principal& principal) {
  for (const std::string& pattern : principal.tenant_patterns) {
    if (pattern == "*") return true;
  }
  return false;
}

void ToProto(const inference::ModelStats& stats, admin::ModelInfo* info) {
  info->set_model_id(stats.model_id);
  admin::InferenceModelStats* out = info->mutable_inference();
  out->set_state(static_cast<admin::ModelState>(stats.state));
  out->set_model_path(stats.model_path);
  out->set_device_id(stats.device_id);
  out->set_usage_count(stats.usage_count);
  out->set_last_used_unix_ms(stats.last_used_unix_ms);
  out->set_load_time_ms(stats.load_time_ms);
  out->set_memory_bytes(stats.memory_bytes);
  out->set_avg_inference_ms(stats.avg_inference_ms);
  out->set_frames_processed(stats.frames_processed);
  out->set_error(stats.error);
  out->set_loaded_at_unix_ms(stats.loaded_at_unix_ms);
  out->set_has_audio_encoder(stats.has_audio_encoder);
  out->set_in_flight(stats.in_flight);
}

inference::ModelStats FromProto(const admin::ModelInfo& info) {
  const admin::InferenceModelStats& in = info.inference();
  inference::ModelStats stats;
  stats.model_id = info.model_id();
  stats.state = in.state() == admin::MODEL_STATE_UNSPECIFIED ? ModelState::kAvailable
                                                             : static_cast<ModelState>(in.state());
  stats.model_path = in.model_path();
  stats.device_id = in.device_id();
  stats.usage_count = in.usage_count();
  stats.last_used_unix_ms = in.last_used_unix_ms();
  stats.load_time_ms = in.load_time_ms();
  stats.memory_bytes = in.memory_bytes();
  stats.avg_inference_ms = in.avg_inference_ms();
  stats.frames_processed = in.frames_processed();
  stats.error = in.error();
  stats.loaded_at_unix_ms = in.loaded_at_unix_ms();
  stats.has_audio_encoder = in.has_audio_encoder();
  stats.in_flight = in.in_flight();
  return stats;
}

void ToProto(const inference::HealthInfo& health, pb::HealthResponse* response) {
  response->set_healthy(health.healthy);
  response->set_loaded_models(health.loaded_models);
  response->set_max_models(health.max_models);
  response->set_gpu_count(health.gpu_count);
  response->set_version(health.version);
  response->set_cuda_available(health.cuda_available);
  for (const auto& gpu : health.gpus) {
    pb::GpuInfo* info = response->add_gpus();
    info->set_device_id(gpu.device_id);
    info->set_name(gpu.name);
    info->set_memory_used_mb(gpu.memory_used_mb);
    info->set_memory_total_mb(gpu.memory_total_mb);
    info->set_loaded_models(gpu.loaded_models);
    info->set_active_requests(gpu.active_requests);
  }
  response->set_execution_provider(health.execution_provider);
  response->set_queue_depth(health.queue_depth);
  response->set_queue_capacity(health.queue_capacity);
  response->set_onnxruntime_version(health.onnxruntime_version);
}

inference::HealthInfo FromProto(const pb::HealthResponse& response) {
  inference::HealthInfo health;
  health.healthy = response.healthy();
  health.loaded_models = response.loaded_models();
  health.max_models = response.max_models();
  health.gpu_count = response.gpu_count();
  health.version = response.version();
  health.cuda_available = response.cuda_available();
  for (const auto& info : response.gpus()) {
    inference::GpuStatus gpu;
    gpu.device_id = info.device_id();
    gpu.name = info.name();
    gpu.memory_used_mb = info.memory_used_mb();
    gpu.memory_total_mb = info.memory_total_mb();
    gpu.loaded_models = info.loaded_models();
    gpu.active_requests = info.active_requests();
    health.gpus.push_back(std::move(gpu));
  }
  health.execution_provider = response.execution_provider();
  health.queue_depth = response.queue_depth();
  health.queue_capacity = response.queue_capacity();
  health.onnxruntime_version = response.onnxruntime_version();
  return health;
}

InferenceServiceImpl::InferenceServiceImpl(inference::InferenceBackend* backend)
    : backend_(backend) {}

std::vector<Gauge> InferenceServiceImpl::Gauges() { return HealthGauges(backend_); }

grpc::Status InferenceServiceImpl::InferBatch(grpc::ServerContext* context,
                                              const pb::InferBatchRequest* request,
                                              pb::InferBatchResponse* response) {
  const CallSpec spec{"InferBatch", auth::Scope::kInfer, request->model_id(),
                      request->batch_size()};
  return ops().Handle(context, spec, *request, response, [&](Call& call) -> grpc::Status {
    inference::InferRequest in;
    in.model_id = request->model_id();
    in.batch_size = request->batch_size();
    in.visual_frames = request->visual_frames();
    in.visual_format =
        static_cast<inference::VisualFormat>(static_cast<int>(request->visual_format()));
    in.audio_features = request->audio_features();
    in.raw_audio = request->raw_audio();
    in.sample_rate = request->sample_rate() == 0 ? 16000 : request->sample_rate();
    in.start_frame_idx = request->start_frame_idx();
    in.utterance_frames = request->utterance_frames();
    in.end_of_utterance = request->end_of_utterance();
    in.output_format =
        static_cast<inference::OutputFormat>(static_cast<int>(request->output_format()));
    in.deadline = SteadyDeadline(*context);

    Expected<inference::InferResult> result = backend_->Infer(in);
    if (!result.ok()) return Fail(result.status(), response);
    inference::InferResult& out = *result;
    response->set_success(true);
    *response->mutable_output_frames() = std::move(out.output);
    response->set_batch_size(out.batch_size);
    response->set_output_height(out.height);
    response->set_output_width(out.width);
    response->set_output_format(static_cast<pb::OutputFormat>(out.output_format));
    response->set_gpu_id(out.device_id);
    response->set_worker_id(out.worker_id);
    response->set_inference_time_ms(static_cast<float>(out.inference_ms));
    response->set_queue_wait_ms(static_cast<float>(out.queue_wait_ms));
    response->set_total_time_ms(static_cast<float>(out.total_ms));
    response->set_model_loaded_on_demand(out.loaded_on_demand);
    response->set_model_load_time_ms(static_cast<float>(out.model_load_ms));
    response->set_audio_processing_ms(static_cast<float>(out.audio_processing_ms));
    response->set_dynamic_batch_frames(out.dynamic_batch_frames);
    StageTimings timings;
    timings.queue_wait_ms = out.queue_wait_ms;
    timings.inference_ms = out.inference_ms;
    if (!request->raw_audio().empty()) timings.audio_ms = out.audio_processing_ms;
    call.SetTimings(timings);
    return grpc::Status::OK;
  });
}

grpc::Status InferenceServiceImpl::Health(grpc::ServerContext* context,
                                          const pb::HealthRequest* request,
                                          pb::HealthResponse* response) {
  const CallSpec spec{"Health", std::nullopt, {}, 0};
  return ops().Handle(context, spec, *request, response, [&](Call&) -> grpc::Status {
    Expected<inference::HealthInfo> health = backend_->Health(SteadyDeadline(*context));
    if (!health.ok()) return ToGrpc(health.status());
    ToProto(*health, response);
    return grpc::Status::OK;
  });
}

grpc::Status InferenceServiceImpl::ListModels(grpc::ServerContext* context,
                                              const admin::ListModelsRequest* request,
                                              admin::ListModelsResponse* response) {
  const CallSpec spec{"ListModels", std::nullopt, {}, 0};
  return ops().Handle(context, spec, *request, response, [&](Call& call) -> grpc::Status {
    // Only the caller's tenants: the limit applies after that filter.
    const auth::Principal& caller = call.principal();
    const bool sees_all = SeesEveryTenant(caller);
    auto models =
        backend_->ListModels(request->include_available(), sees_all ? request->limit() : 0);
    if (!models.ok()) return ToGrpc(models.status());
    int loaded = 0;
    for (const auto& stats : *models) {
      if (!caller.MayUse(stats.model_id)) continue;
      if (request->limit() > 0 && response->models_size() >= request->limit()) break;
      ToProto(stats, response->add_models());
      if (stats.state == ModelState::kReady) ++loaded;
    }
    auto health = backend_->Health(SteadyDeadline(*context));
    response->set_loaded_models(health.ok() && sees_all ? health->loaded_models : loaded);
    if (health.ok()) response->set_max_models(health->max_models);
    return grpc::Status::OK;
  });
}

grpc::Status InferenceServiceImpl::LoadModel(grpc::ServerContext* context,
                                             const admin::LoadModelRequest* request,
                                             admin::LoadModelResponse* response) {
  const CallSpec spec{"LoadModel", auth::Scope::kAdmin, request->model_id(), 0};
  return ops().Handle(context, spec, *request, response, [&](Call&) -> grpc::Status {
    auto loaded = backend_->LoadModel(request->model_id(), request->force_reload());
    if (!loaded.ok()) return Fail(loaded.status(), response);
    response->set_success(true);
    response->set_load_time_ms(loaded->load_time_ms);
    response->set_already_loaded(loaded->already_loaded);
    ToProto(loaded->stats, response->mutable_model());
    return grpc::Status::OK;
  });
}

grpc::Status InferenceServiceImpl::UnloadModel(grpc::ServerContext* context,
                                               const admin::UnloadModelRequest* request,
                                               admin::UnloadModelResponse* response) {
  const CallSpec spec{"UnloadModel", auth::Scope::kAdmin, request->model_id(), 0};
  return ops().Handle(context, spec, *request, response, [&](Call&) -> grpc::Status {
    auto was_loaded = backend_->UnloadModel(request->model_id());
    if (!was_loaded.ok()) return Fail(was_loaded.status(), response);
    response->set_success(true);
    response->set_was_loaded(*was_loaded);
    return grpc::Status::OK;
  });
}

grpc::Status InferenceServiceImpl::GetModelStats(grpc::ServerContext* context,
                                                 const admin::GetModelStatsRequest* request,
                                                 admin::GetModelStatsResponse* response) {
  // An empty model_id asks for every model: filtered to the caller's tenants.
  const CallSpec spec{"GetModelStats", std::nullopt, request->model_id(), 0};
  return ops().Handle(context, spec, *request, response, [&](Call& call) -> grpc::Status {
    auto stats = backend_->GetModelStats(request->model_id());
    if (!stats.ok()) return ToGrpc(stats.status());
    for (const auto& s : *stats) {
      if (call.principal().MayUse(s.model_id)) ToProto(s, response->add_models());
    }
    return grpc::Status::OK;
  });
}

grpc::Status InferenceServiceImpl::PrefetchModel(grpc::ServerContext* context,
                                                 const pb::PrefetchModelRequest* request,
                                                 pb::PrefetchModelResponse* response) {
  // Scope "infer" on the tenant (the compositing credential has it; LoadModel needs admin).
  const CallSpec spec{"PrefetchModel", auth::Scope::kInfer, request->model_id(), 0};
  return ops().Handle(context, spec, *request, response, [&](Call&) -> grpc::Status {
    auto result = backend_->PrefetchModel(request->model_id());
    if (!result.ok()) return Fail(result.status(), response);
    response->set_success(true);
    switch (*result) {
      case inference::PrefetchResult::kAlreadyLoaded:
        response->set_outcome(pb::PrefetchModelResponse::ALREADY_LOADED);
        break;
      case inference::PrefetchResult::kLoading:
        response->set_outcome(pb::PrefetchModelResponse::LOADING);
        break;
      case inference::PrefetchResult::kDropped:
        response->set_outcome(pb::PrefetchModelResponse::DROPPED);
        break;
      case inference::PrefetchResult::kQueued:
      case inference::PrefetchResult::kSent:
        response->set_outcome(pb::PrefetchModelResponse::QUEUED);
        break;
    }
    return grpc::Status::OK;
  });
}

}  // namespace lipsync::rpc
