#include "inference/inference_server.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "audio/batch_audio.h"
#include "common/log.h"
#include "common/model_id.h"
#include "inference/gpu_info.h"
#include "inference/ort_runtime.h"
#include "inference/tensor_check.h"

namespace lipsync::inference {
namespace {

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

// One request inside the scheduler. Lives on Infer()'s stack until Submit returns.
struct InferTask : Task {
  const OnnxModel* model = nullptr;
  ModelHandle* handle = nullptr;
  int batch = 0;
  const float* visual = nullptr;       // batch frames (VISUAL_FLOAT32)
  const uint8_t* visual_u8 = nullptr;  // or (VISUAL_UINT8): the model converts it
  const float* audio = nullptr;        // batch frames; null until raw audio is encoded
  // raw_audio requests: the worker turns it into `audio` (mel -> encoder -> features)
  // so the encoder Run is bounded by the queue and workers like the main Run.
  const InferRequest* raw_audio_request = nullptr;
  std::vector<float> raw_audio_features;
  double audio_processing_ms = 0;
  OutputFormat format = OutputFormat::kFloat32;
  std::string* output = nullptr;
  // Set by the runner.
  Status status;
  double inference_ms = 0;
  WorkerInfo worker;
};

// Float view of request bytes. gRPC/protobuf buffers are heap-allocated and aligned,
// so this is normally a reinterpretation; a misaligned view is copied into `storage`.
const float* AsFloats(std::string_view bytes, std::vector<float>& storage) {
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(float) == 0) {
    return reinterpret_cast<const float*>(bytes.data());
  }
  storage.resize(bytes.size() / sizeof(float));
  std::memcpy(storage.data(), bytes.data(), storage.size() * sizeof(float));
  return storage.data();
}

// The size the visual input would have as float32, for the model's shape checks.
size_t VisualBytesAsFloat32(const InferRequest& request) {
  return request.visual_format == VisualFormat::kUint8
             ? request.visual_frames.size() * sizeof(float)
             : request.visual_frames.size();
}

audio::BatchAudioSpec RawAudioSpec(const InferRequest& request) {
  audio::BatchAudioSpec spec;
  spec.start_frame = request.start_frame_idx;
  spec.batch_size = request.batch_size;
  spec.utterance_frames = request.utterance_frames;
  spec.end_of_utterance = request.end_of_utterance;
  spec.sample_rate = request.sample_rate;
  return spec;
}

// The checks on raw_audio that need no mel work, done on the calling thread so a
// malformed request is answered at once and never takes a queue slot. The messages are
// the audio library's: PrepareBatchAudio validates before it computes anything.
Status CheckRawAudio(const InferRequest& request, const OnnxModel& model) {
  if (!model.has_audio_encoder()) {
    return Status::FailedPrecondition(
        "model '" + request.model_id +
        "' has no audio encoder (checkpoint/audio_encoder.onnx beside the model), so it "
        "cannot take raw_audio; send audio_features (batch_size x 8192 float32) instead");
  }
  const audio::BatchAudioSpec spec = RawAudioSpec(request);
  LIPSYNC_ASSIGN_OR_RETURN(const audio::AudioFrameRange range, audio::BatchAudioFrames(spec));
  const int64_t frame_samples =
      audio::SamplesPerFrame(spec.sample_rate == 0 ? 16000 : spec.sample_rate);
  const int64_t expected_bytes = 2 * (range.end_frame - range.first_frame) * frame_samples;
  if (frame_samples > 0 && int64_t(request.raw_audio.size()) == expected_bytes) {
    return Status::Ok();
  }
  return audio::PrepareBatchAudio(request.raw_audio, spec).status();
}

// raw_audio -> mel windows -> ONE encoder Run for all windows -> per-frame features
// (docs/AUDIO.md). Runs on a scheduler worker.
Expected<std::vector<float>> FeaturesFromRawAudio(const InferRequest& request,
                                                  const OnnxModel& model) {
  const audio::BatchAudioSpec spec = RawAudioSpec(request);
  LIPSYNC_ASSIGN_OR_RETURN(audio::MelWindows windows,
                           audio::PrepareBatchAudio(request.raw_audio, spec));
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<float> vectors,
                           model.EncodeAudio(windows.windows.data(), windows.count));
  return audio::AssembleFrameFeatures(windows, vectors, spec);
}

// Workers for each device the registry places models on. gpus.assignment_strategy
// is applied by the registry when it places a model (RegistryOptions::placement); each
// request then runs on its model's device, so the scheduler never picks one itself.
SchedulerOptions MakeSchedulerOptions(const config::InferenceConfig& config,
                                      const std::vector<int>& devices) {
  SchedulerOptions options;
  options.devices = devices;
  options.workers_per_device = config.server.worker_count_per_gpu;
  options.queue_size = config.server.queue_size;
  options.max_queue_delay_us = config.server.max_queue_delay_us;
  options.max_batch_frames = config.server.max_batch_size;
  options.max_queue_share = config.server.max_queue_share_per_model;
  return options;
}

}  // namespace

Expected<std::unique_ptr<InferenceServer>> InferenceServer::Create(
    const config::InferenceConfig& config,
    const std::function<void(RegistryOptions&)>& adjust_registry) {
  if (config.server.max_batch_size < 1 || config.server.worker_count_per_gpu < 1 ||
      config.server.queue_size < 1) {
    return Status::InvalidArgument(
        "server.max_batch_size, worker_count_per_gpu and queue_size must be >= 1; got " +
        std::to_string(config.server.max_batch_size) + ", " +
        std::to_string(config.server.worker_count_per_gpu) + ", " +
        std::to_string(config.server.queue_size));
  }
  OrtRuntimeOptions ort_options;
  ort_options.library_path = config.onnx.library_path;
  ort_options.intra_op_threads = config.onnx.intra_op_threads;
  ort_options.inter_op_threads = config.onnx.inter_op_threads;
  LIPSYNC_ASSIGN_OR_RETURN(OrtRuntime * runtime, OrtRuntime::Initialize(ort_options));

  ExecutionConfig execution;
  execution.use_cuda = config.onnx.use_cuda && config.gpus.enabled;
  execution.require_cuda = config.onnx.require_cuda;
  execution.cuda_device_id = config.onnx.cuda_device_id;
  execution.gpu_count = config.gpus.count;
  execution.cuda_library_dirs = config.onnx.cuda_library_dirs;
  LIPSYNC_ASSIGN_OR_RETURN(ExecutionPlan plan, PlanExecution(execution, *runtime));

  std::unique_ptr<InferenceServer> server(
      new InferenceServer(config, std::move(plan), adjust_registry));
  for (const auto& [id, entry] : config.models) {
    if (!entry.preload) continue;
    auto loaded = server->registry_->Load(id, /*force_reload=*/false);
    if (loaded.ok()) {
      ++server->preloaded_;
      LOG_INFO("preloaded model '%s' in %.1f ms", id.c_str(), loaded->load_time_ms);
    } else {
      LOG_ERROR("preloading model '%s' failed (other models keep serving): %s", id.c_str(),
                loaded.status().ToString().c_str());
    }
  }
  return server;
}

InferenceServer::InferenceServer(config::InferenceConfig config, ExecutionPlan plan,
                                 const std::function<void(RegistryOptions&)>& adjust_registry)
    : config_(std::move(config)), plan_(std::move(plan)) {
  RegistryOptions registry_options = RegistryOptionsFromConfig(config_, plan_.devices);
  if (adjust_registry) adjust_registry(registry_options);
  const std::vector<int> devices = registry_options.devices;
  registry_ = std::make_unique<ModelRegistry>(std::move(registry_options));
  scheduler_ = std::make_unique<Scheduler>(
      MakeSchedulerOptions(config_, devices),
      [this](std::span<Task* const> group, const WorkerInfo& worker) { RunGroup(group, worker); });
}

InferenceServer::~InferenceServer() {
  Shutdown(std::chrono::hours(24));
  scheduler_.reset();
  registry_.reset();
}

const std::string& InferenceServer::ort_library_path() const {
  return OrtRuntime::Get()->library_path();
}
const std::string& InferenceServer::ort_version() const { return OrtRuntime::Get()->version(); }

bool InferenceServer::Shutdown(std::chrono::milliseconds grace) {
  if (!shutting_down_.exchange(true)) {
    LOG_INFO("shutting down: refusing new requests, %d in flight (grace %lld ms)",
             in_flight_.load(), static_cast<long long>(grace.count()));
  }
  scheduler_->StopAccepting();
  std::unique_lock<std::mutex> lock(in_flight_mu_);
  return in_flight_cv_.wait_for(lock, grace, [&] { return in_flight_.load() == 0; });
}

Status InferenceServer::CheckSizes(const InferRequest& request, const OnnxModel& model) const {
  const size_t per_frame = kAudioFeatureFloats * sizeof(float);
  const size_t batch = static_cast<size_t>(request.batch_size);
  const size_t audio_bytes = request.audio_features.size();
  if (audio_bytes != per_frame && audio_bytes != batch * per_frame) {
    return Status::InvalidArgument("audio_features has " + std::to_string(audio_bytes) +
                                   " bytes; expected " + std::to_string(batch * per_frame) +
                                   " (batch_size " + std::to_string(batch) +
                                   " x 8192 float32, one [32,16,16] tensor per frame) or " +
                                   std::to_string(per_frame) + " (one tensor for every frame)");
  }
  return model.CheckInputSizes(request.batch_size, VisualBytesAsFloat32(request),
                               batch * per_frame);
}

Expected<InferResult> InferenceServer::Infer(const InferRequest& request) {
  const Clock::time_point received = Clock::now();
  // Counted before the shutdown check so Shutdown() never misses a request that got in.
  in_flight_.fetch_add(1);
  struct Leave {
    InferenceServer* server;
    ~Leave() {
      std::lock_guard<std::mutex> lock(server->in_flight_mu_);
      if (server->in_flight_.fetch_sub(1) == 1) server->in_flight_cv_.notify_all();
    }
  } leave{this};
  if (shutting_down_.load()) {
    return Status::Unavailable("server is shutting down; send the request to another server");
  }

  LIPSYNC_RETURN_IF_ERROR(ValidateModelId(request.model_id));
  // Compositing picks backgrounds with it and raw audio places the batch with it: a
  // negative index is a client bug whatever the audio form.
  if (request.start_frame_idx < 0) {
    return Status::InvalidArgument("start_frame_idx is " + std::to_string(request.start_frame_idx) +
                                   "; expected >= 0 (the batch's first frame)");
  }
  const int max_batch = config_.server.max_batch_size;
  if (request.batch_size < 1 || request.batch_size > max_batch) {
    return Status::InvalidArgument("batch_size is " + std::to_string(request.batch_size) +
                                   "; expected 1.." + std::to_string(max_batch) +
                                   " (server.max_batch_size)");
  }
  if (request.visual_format != VisualFormat::kFloat32 &&
      request.visual_format != VisualFormat::kUint8) {
    return Status::InvalidArgument("visual_format " +
                                   std::to_string(static_cast<int>(request.visual_format)) +
                                   " is unknown; expected VISUAL_FLOAT32 (0) or VISUAL_UINT8 (1)");
  }
  if (request.output_format != OutputFormat::kFloat32 &&
      request.output_format != OutputFormat::kUint8) {
    return Status::InvalidArgument("output_format " +
                                   std::to_string(static_cast<int>(request.output_format)) +
                                   " is unknown; expected FLOAT32 (0) or UINT8 (1)");
  }
  const bool raw_audio = !request.raw_audio.empty();
  if (raw_audio && !request.audio_features.empty()) {
    return Status::InvalidArgument(
        "both raw_audio and audio_features are set; expected exactly one of them");
  }
  if (!raw_audio && request.audio_features.empty()) {
    return Status::InvalidArgument(
        "audio_features is empty; expected batch_size x 8192 or 8192 float32 values, or "
        "raw_audio");
  }

  // A request waiting for another request's load of the model gives up at its own
  // deadline (the load goes on).
  LIPSYNC_ASSIGN_OR_RETURN(ModelHandle handle,
                           registry_->Acquire(request.model_id, request.deadline));
  const OnnxModel& model = handle.model();
  const size_t batch = static_cast<size_t>(request.batch_size);
  if (request.visual_format == VisualFormat::kUint8 &&
      request.visual_frames.size() != batch * model.visual_floats_per_frame()) {
    return Status::InvalidArgument(
        "visual_frames has " + std::to_string(request.visual_frames.size()) + " bytes; expected " +
        std::to_string(batch * model.visual_floats_per_frame()) + " (batch_size x " +
        model.visual_shape().ToString() + " as uint8, VISUAL_UINT8)");
  }
  std::vector<float> visual_storage, audio_storage;
  const float* audio = nullptr;
  if (raw_audio) {
    LIPSYNC_RETURN_IF_ERROR(model.CheckInputSizes(request.batch_size, VisualBytesAsFloat32(request),
                                                  batch * kAudioFeatureFloats * sizeof(float)));
    LIPSYNC_RETURN_IF_ERROR(CheckRawAudio(request, model));
  } else {
    LIPSYNC_RETURN_IF_ERROR(CheckSizes(request, model));
    // NaN/Inf never reach a model (one pass over the bytes, see tensor_check.h).
    LIPSYNC_RETURN_IF_ERROR(CheckFinite(
        request.audio_features, kAudioFeatureFloats, "audio_features",
        request.audio_features.size() == kAudioFeatureFloats * sizeof(float) && batch > 1));
    if (request.audio_features.size() == batch * kAudioFeatureFloats * sizeof(float)) {
      audio = AsFloats(request.audio_features, audio_storage);
    } else {
      // One tensor for every frame: the guide's example client sends this.
      audio_storage.resize(batch * kAudioFeatureFloats);
      for (size_t i = 0; i < batch; ++i) {
        std::memcpy(audio_storage.data() + i * kAudioFeatureFloats, request.audio_features.data(),
                    kAudioFeatureFloats * sizeof(float));
      }
      audio = audio_storage.data();
    }
  }
  if (request.visual_format == VisualFormat::kFloat32) {
    LIPSYNC_RETURN_IF_ERROR(
        CheckFinite(request.visual_frames, model.visual_floats_per_frame(), "visual_frames"));
  }
  // uint8 frames go to the model as they are (OnnxModel converts them, on the GPU for
  // a wrapped graph).
  const bool visual_u8 = request.visual_format == VisualFormat::kUint8;
  const float* visual = visual_u8 ? nullptr : AsFloats(request.visual_frames, visual_storage);

  InferResult result;
  InferTask task;
  task.device_id = handle.device_id();
  // Same model instance (a force-reload makes a new one) and output format may share a
  // Run; a model with a fixed batch dimension never does.
  if (model.visual_shape().dims.empty() || model.visual_shape().dims[0] <= 0) {
    task.batch_key = request.model_id + '@' + std::to_string(reinterpret_cast<uintptr_t>(&model)) +
                     '#' + std::to_string(static_cast<int>(request.output_format)) + '/' +
                     std::to_string(static_cast<int>(request.visual_format));
  }
  task.frames = request.batch_size;
  task.tenant = request.model_id;
  task.deadline = request.deadline;
  task.model = &model;
  task.handle = &handle;
  task.batch = request.batch_size;
  task.visual = visual;
  if (visual_u8) task.visual_u8 = reinterpret_cast<const uint8_t*>(request.visual_frames.data());
  task.audio = audio;
  if (raw_audio) task.raw_audio_request = &request;
  task.format = request.output_format;
  task.output = &result.output;
  LIPSYNC_RETURN_IF_ERROR(scheduler_->Submit(&task));
  LIPSYNC_RETURN_IF_ERROR(task.status);

  result.batch_size = request.batch_size;
  result.height = model.output_height();
  result.width = model.output_width();
  result.output_format = request.output_format;
  result.device_id = task.worker.device_id;
  result.worker_id = task.worker.worker_id;
  result.inference_ms = task.inference_ms;
  result.queue_wait_ms = task.queue_wait_ms;
  result.loaded_on_demand = handle.loaded_now();
  result.model_load_ms = handle.load_ms();
  result.dynamic_batch_frames = task.group_frames;
  result.audio_processing_ms = task.audio_processing_ms;
  result.total_ms = MsSince(received);
  return result;
}

void InferenceServer::RunGroup(std::span<Task* const> all, const WorkerInfo& worker) {
  // Raw audio first: each request's encoder Run on its own windows. A request whose
  // audio fails keeps its error and leaves the group; the others still run.
  std::vector<Task*> ready;
  ready.reserve(all.size());
  for (Task* task : all) {
    auto* t = static_cast<InferTask*>(task);
    t->worker = worker;
    if (t->raw_audio_request != nullptr) {
      const Clock::time_point audio_start = Clock::now();
      auto features = FeaturesFromRawAudio(*t->raw_audio_request, *t->model);
      t->audio_processing_ms = MsSince(audio_start);
      if (!features.ok()) {
        t->status = features.status();
        continue;
      }
      t->raw_audio_features = std::move(*features);
      t->audio = t->raw_audio_features.data();
    }
    ready.push_back(t);
  }
  if (ready.empty()) return;
  const std::span<Task* const> group(ready);
  auto* first = static_cast<InferTask*>(group.front());
  const OnnxModel& model = *first->model;
  const Clock::time_point start = Clock::now();
  if (group.size() == 1) {
    first->status =
        first->visual_u8
            ? model.Run(first->batch, first->visual_u8, first->audio, first->format, first->output)
            : model.Run(first->batch, first->visual, first->audio, first->format, first->output);
  } else {
    // Requests grouped by the scheduler (one visual format: the batch key says which):
    // one Run over all their frames, then split.
    const bool u8 = first->visual_u8 != nullptr;
    const size_t visual_bytes_per_frame =
        model.visual_floats_per_frame() * (u8 ? sizeof(uint8_t) : sizeof(float));
    int frames = 0;
    for (Task* task : group) frames += static_cast<InferTask*>(task)->batch;
    const size_t visual_bytes = static_cast<size_t>(frames) * visual_bytes_per_frame;
    std::vector<float> visual((visual_bytes + sizeof(float) - 1) / sizeof(float));
    std::vector<float> audio(static_cast<size_t>(frames) * kAudioFeatureFloats);
    size_t offset = 0;
    for (Task* task : group) {
      const auto* t = static_cast<InferTask*>(task);
      const void* frames_in = u8 ? static_cast<const void*>(t->visual_u8) : t->visual;
      std::memcpy(reinterpret_cast<char*>(visual.data()) + offset * visual_bytes_per_frame,
                  frames_in, t->batch * visual_bytes_per_frame);
      std::memcpy(audio.data() + offset * kAudioFeatureFloats, t->audio,
                  t->batch * kAudioFeatureFloats * sizeof(float));
      offset += t->batch;
    }
    std::string output;
    const Status status =
        u8 ? model.Run(frames, reinterpret_cast<const uint8_t*>(visual.data()), audio.data(),
                       first->format, &output)
           : model.Run(frames, visual.data(), audio.data(), first->format, &output);
    const size_t bytes_per_frame = output.size() / static_cast<size_t>(frames);
    offset = 0;
    for (Task* task : group) {
      auto* t = static_cast<InferTask*>(task);
      t->status = status;
      if (status.ok()) {
        t->output->assign(output, offset * bytes_per_frame, t->batch * bytes_per_frame);
      }
      offset += t->batch;
    }
  }
  const double inference_ms = MsSince(start);
  LOG_DEBUG(
      "device %d worker %d: Run of %zu request(s), %d frames, %.1f ms (queue wait of the "
      "first %.1f ms)",
      worker.device_id, worker.worker_id, group.size(), first->group_frames, inference_ms,
      first->queue_wait_ms);
  for (Task* task : group) {
    auto* t = static_cast<InferTask*>(task);
    t->inference_ms = inference_ms;
    if (t->status.ok()) t->handle->RecordRun(t->batch, inference_ms);
  }
}

Expected<HealthInfo> InferenceServer::Health(std::optional<Clock::time_point>) {
  HealthInfo info;
  info.healthy = !shutting_down_.load();
  info.loaded_models = registry_->loaded_count();
  info.max_models = config_.capacity.max_models_per_gpu * static_cast<int>(plan_.devices.size());
  info.gpu_count = plan_.cuda ? static_cast<int>(plan_.devices.size()) : 0;
  info.version = kServerVersion;
  info.cuda_available = plan_.cuda;
  if (plan_.cuda) {
    for (GpuStatus gpu : QueryGpus()) {
      if (std::find(plan_.devices.begin(), plan_.devices.end(), gpu.device_id) ==
          plan_.devices.end()) {
        continue;
      }
      gpu.loaded_models = registry_->loaded_count(gpu.device_id);
      gpu.active_requests = scheduler_->device_load(gpu.device_id);
      info.gpus.push_back(gpu);
    }
  }
  info.execution_provider = plan_.provider;
  info.queue_depth = scheduler_->queue_depth();
  info.queue_capacity = scheduler_->queue_capacity();
  info.onnxruntime_version = ort_version();
  info.model_counters = registry_->counters();
  return info;
}

Expected<std::vector<ModelStats>> InferenceServer::ListModels(bool include_available, int limit) {
  return registry_->List(include_available, limit <= 0 ? 1000 : limit);
}

Expected<LoadResult> InferenceServer::LoadModel(const std::string& model_id, bool force_reload) {
  if (shutting_down_.load()) return Status::Unavailable("server is shutting down");
  return registry_->Load(model_id, force_reload);
}

Expected<bool> InferenceServer::UnloadModel(const std::string& model_id) {
  return registry_->Unload(model_id);
}

Expected<std::vector<ModelStats>> InferenceServer::GetModelStats(const std::string& model_id) {
  if (model_id.empty()) return registry_->AllLoadedStats();
  LIPSYNC_ASSIGN_OR_RETURN(ModelStats stats, registry_->Stats(model_id));
  return std::vector<ModelStats>{std::move(stats)};
}

Expected<PrefetchResult> InferenceServer::PrefetchModel(const std::string& model_id) {
  if (shutting_down_.load()) return Status::Unavailable("server is shutting down");
  LIPSYNC_ASSIGN_OR_RETURN(PrefetchOutcome outcome, registry_->Prefetch(model_id));
  switch (outcome) {
    case PrefetchOutcome::kQueued:
      return PrefetchResult::kQueued;
    case PrefetchOutcome::kAlreadyLoaded:
      return PrefetchResult::kAlreadyLoaded;
    case PrefetchOutcome::kLoading:
      return PrefetchResult::kLoading;
    case PrefetchOutcome::kDropped:
      break;
  }
  return PrefetchResult::kDropped;
}

}  // namespace lipsync::inference
