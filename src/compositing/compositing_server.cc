#include "compositing/compositing_server.h"

#include <algorithm>
#include <set>
#include <utility>

#include "common/log.h"
#include "common/model_id.h"

namespace lipsync::compositing {

namespace {

double MsBetween(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

int64_t UnixMsNow() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

constexpr size_t kAudioBytesPerFrame = size_t(inference::kAudioFeatureFloats) * sizeof(float);
constexpr size_t kVisualBytesPerFrame = kVisualInputFloats * sizeof(float);

}  // namespace

Expected<std::unique_ptr<CompositingServer>> CompositingServer::Create(
    const config::CompositingConfig& config, inference::InferenceBackend& backend,
    CompositingServerOptions options) {
  if (config.server.max_batch_size < 1) {
    return Status::InvalidArgument("server.max_batch_size must be >= 1, got " +
                                   std::to_string(config.server.max_batch_size));
  }
  if (config.output.jpeg_quality < 1 || config.output.jpeg_quality > 100) {
    return Status::InvalidArgument("output.jpeg_quality must be 1..100, got " +
                                   std::to_string(config.output.jpeg_quality));
  }
  if (!(config.inference_server.timeout_seconds > 0)) {
    return Status::InvalidArgument("inference_server.timeout_seconds must be > 0");
  }
  if (config.output.feather_px < 0) {
    return Status::InvalidArgument("output.feather_px must be >= 0, got " +
                                   std::to_string(config.output.feather_px));
  }
  if (options.inference_label.empty()) options.inference_label = config.inference_server.url;
  return std::unique_ptr<CompositingServer>(
      new CompositingServer(config, backend, std::move(options)));
}

CompositingServer::CompositingServer(const config::CompositingConfig& config,
                                     inference::InferenceBackend& backend,
                                     CompositingServerOptions options)
    : config_(config),
      backend_(backend),
      options_(std::move(options)),
      avatars_(std::make_unique<avatar::AvatarRegistry>([&] {
        auto avatar_options = avatar::AvatarRegistryOptions::FromConfig(config);
        if (options_.adjust_avatars) options_.adjust_avatars(avatar_options);
        return avatar_options;
      }())),
      compositor_(size_t(std::max(0, config.server.compositing_threads))) {}

CompositingServer::~CompositingServer() { Shutdown(std::chrono::milliseconds::max()); }

bool CompositingServer::Shutdown(std::chrono::milliseconds grace) {
  shutting_down_ = true;
  std::unique_lock<std::mutex> lock(in_flight_mu_);
  auto done = [this] { return in_flight_ == 0; };
  if (grace == std::chrono::milliseconds::max()) {
    in_flight_cv_.wait(lock, done);
    return true;
  }
  return in_flight_cv_.wait_for(lock, grace, done);
}

Status CompositingServer::Validate(const CompositeRequest& r) const {
  LIPSYNC_RETURN_IF_ERROR(ValidateModelId(r.model_id));
  const int max_batch = config_.server.max_batch_size;
  if (r.batch_size < 1 || r.batch_size > max_batch) {
    return Status::InvalidArgument("batch_size must be 1.." + std::to_string(max_batch) + ", got " +
                                   std::to_string(r.batch_size));
  }
  const size_t batch = size_t(r.batch_size);
  if (r.start_frame_idx < 0) {
    return Status::InvalidArgument("start_frame_idx must be >= 0, got " +
                                   std::to_string(r.start_frame_idx));
  }
  if (!r.visual_frames.empty() && r.visual_frames.size() != batch * kVisualBytesPerFrame) {
    return Status::InvalidArgument(
        "visual_frames has " + std::to_string(r.visual_frames.size()) +
        " bytes; expected 0 (server builds the visual input) or batch_size*6*320*320*4 = " +
        std::to_string(batch * kVisualBytesPerFrame));
  }
  if (!r.raw_audio.empty() && !r.audio_features.empty()) {
    return Status::InvalidArgument(
        "audio_features and raw_audio are mutually exclusive; send one of them");
  }
  if (r.raw_audio.empty()) {
    const size_t n = r.audio_features.size();
    if (n != kAudioBytesPerFrame && n != batch * kAudioBytesPerFrame) {
      return Status::InvalidArgument(
          "audio_features has " + std::to_string(n) + " bytes; expected 8192 floats (" +
          std::to_string(kAudioBytesPerFrame) + " bytes, one tensor for every frame) or " +
          "batch_size*8192 floats (" + std::to_string(batch * kAudioBytesPerFrame) +
          " bytes), or raw_audio instead");
    }
  }
  if (r.jpeg_quality < 0 || r.jpeg_quality > 100) {
    return Status::InvalidArgument("jpeg_quality must be 1..100 (0 = server default), got " +
                                   std::to_string(r.jpeg_quality));
  }
  const int format = static_cast<int>(r.output_format);
  if (format < 0 || format > 2) {
    return Status::InvalidArgument(
        "output_format must be 0 (default), 1 (JPEG) or 2 (RAW_RGB), got " +
        std::to_string(format));
  }
  const int loop = static_cast<int>(r.loop_mode);
  if (loop < 0 || loop > 2) {
    return Status::InvalidArgument(
        "loop_mode must be 0 (default), 1 (WRAP) or 2 (PING_PONG), got " + std::to_string(loop));
  }
  return Status::Ok();
}

Expected<CompositeResponse> CompositingServer::InferBatchComposite(
    const CompositeRequest& request) {
  const auto received = Clock::now();
  {
    std::lock_guard<std::mutex> lock(in_flight_mu_);
    if (shutting_down_) return Status::Unavailable("compositing server is shutting down");
    ++in_flight_;
  }
  auto result = Run(request, received);
  {
    std::lock_guard<std::mutex> lock(in_flight_mu_);
    --in_flight_;
  }
  in_flight_cv_.notify_all();
  if (!result.ok() && config_.logging.level == "debug") {
    LOG_DEBUG("InferBatchComposite '%s': %s", request.model_id.c_str(),
              result.status().ToString().c_str());
  }
  return result;
}

Expected<CompositeResponse> CompositingServer::Run(const CompositeRequest& request,
                                                   Clock::time_point received) {
  LIPSYNC_RETURN_IF_ERROR(Validate(request));
  auto deadline =
      received + std::chrono::duration_cast<Clock::duration>(
                     std::chrono::duration<double>(config_.inference_server.timeout_seconds));
  if (request.deadline && *request.deadline < deadline) deadline = *request.deadline;
  if (Clock::now() >= deadline) {
    return Status::DeadlineExceeded("the request's deadline passed before it was processed");
  }

  CompositeResponse response;
  bool avatar_loaded_now = false;
  double avatar_load_ms = 0;
  // A cold tenant: its model loads on the inference side while its avatar loads here.
  if (!avatars_->IsLoaded(request.model_id)) PrefetchModel(request.model_id);
  LIPSYNC_ASSIGN_OR_RETURN(
      avatar::AvatarHandle avatar,
      avatars_->Acquire(request.model_id, &avatar_loaded_now, &avatar_load_ms, deadline));

  const avatar::LoopMode loop = request.loop_mode == LoopChoice::kPingPong
                                    ? avatar::LoopMode::kPingPong
                                : request.loop_mode == LoopChoice::kWrap ? avatar::LoopMode::kWrap
                                : config_.output.ping_pong ? avatar::LoopMode::kPingPong
                                                           : avatar::LoopMode::kWrap;

  // The visual input: the client's, or built here from the cached backgrounds (the
  // client then sends only audio).
  // Built here it goes to inference as uint8 (VISUAL_UINT8): 4x fewer bytes than the
  // float form on that link, bit-identical once the inference server divides by 255.
  std::unique_ptr<uint8_t[]> built_visual;  // not zero-filled: every byte is written
  std::string_view visual = request.visual_frames;
  auto visual_format = inference::VisualFormat::kFloat32;
  if (visual.empty()) {
    const auto t0 = Clock::now();
    const size_t bytes = size_t(request.batch_size) * kVisualInputFloats;
    built_visual.reset(new uint8_t[bytes]);
    LIPSYNC_RETURN_IF_ERROR(compositor_.BuildVisualInputsU8(
        *avatar, request.start_frame_idx, request.batch_size, loop, built_visual.get()));
    visual = std::string_view(reinterpret_cast<const char*>(built_visual.get()), bytes);
    visual_format = inference::VisualFormat::kUint8;
    response.visual_input_ms = MsBetween(t0, Clock::now());
  }

  inference::InferRequest infer;
  infer.model_id = request.model_id;
  infer.batch_size = request.batch_size;
  infer.visual_frames = visual;
  infer.visual_format = visual_format;
  infer.audio_features = request.audio_features;
  infer.raw_audio = request.raw_audio;
  infer.sample_rate = request.sample_rate == 0 ? 16000 : request.sample_rate;
  infer.start_frame_idx = int(std::min<int64_t>(request.start_frame_idx, INT32_MAX));
  infer.utterance_frames = request.utterance_frames;
  infer.end_of_utterance = request.end_of_utterance;
  infer.output_format = inference::OutputFormat::kUint8;  // 4x fewer bytes than float32
  infer.deadline = deadline;

  const auto infer_start = Clock::now();
  LIPSYNC_ASSIGN_OR_RETURN(inference::InferResult inferred, backend_.Infer(infer));
  response.inference_rpc_ms = MsBetween(infer_start, Clock::now());
  if (inferred.batch_size != request.batch_size || inferred.height != kFaceSize ||
      inferred.width != kFaceSize) {
    return Status::Internal("inference returned " + std::to_string(inferred.batch_size) + "x3x" +
                            std::to_string(inferred.height) + "x" + std::to_string(inferred.width) +
                            "; expected " + std::to_string(request.batch_size) + "x3x320x320");
  }
  const size_t per_frame = size_t(3) * kFaceSize * kFaceSize *
                           (inferred.output_format == inference::OutputFormat::kUint8 ? 1 : 4);
  if (inferred.output.size() != per_frame * size_t(request.batch_size)) {
    return Status::Internal("inference returned " + std::to_string(inferred.output.size()) +
                            " output bytes; expected " +
                            std::to_string(per_frame * size_t(request.batch_size)));
  }

  CompositeOptions options;
  const bool raw = request.output_format == FormatChoice::kRawRgb ||
                   (request.output_format == FormatChoice::kServerDefault &&
                    config_.output.format == config::OutputFormat::kRaw);
  options.format = raw ? config::OutputFormat::kRaw : config::OutputFormat::kJpeg;
  options.jpeg_quality =
      request.jpeg_quality > 0 ? request.jpeg_quality : config_.output.jpeg_quality;
  options.paste_mode = config_.output.paste_mode;
  options.feather_px = config_.output.feather_px;

  ModelOutputView view;
  view.data = inferred.output.data();
  view.type = inferred.output_format == inference::OutputFormat::kUint8 ? OutputType::kUint8
                                                                        : OutputType::kFloat32;
  view.batch = request.batch_size;
  LIPSYNC_ASSIGN_OR_RETURN(
      CompositeResult composed,
      compositor_.Compose(*avatar, view, request.start_frame_idx, loop, options));

  response.frames = std::move(composed.frames);
  response.background_indices = std::move(composed.background_indices);
  response.frame_width = composed.frame_width;
  response.frame_height = composed.frame_height;
  response.raw_rgb = raw;
  response.gpu_id = inferred.device_id;
  response.inference_ms = inferred.inference_ms;
  response.queue_wait_ms = inferred.queue_wait_ms;
  response.audio_processing_ms = inferred.audio_processing_ms;
  response.composite_ms = composed.timings.total_ms;
  response.encode_ms = composed.timings.encode_ms;
  response.loaded_on_demand = avatar_loaded_now || inferred.loaded_on_demand;
  response.avatar_load_ms = avatar_loaded_now ? avatar_load_ms : 0;
  response.model_load_ms = response.avatar_load_ms + inferred.model_load_ms;
  avatars_->RecordComposite(request.model_id, response.composite_ms);
  response.total_ms = MsBetween(received, Clock::now());
  if (config_.logging.log_compositing_times) {  // the guide's default level shows it
    LOG_INFO(
        "'%s' batch %d from %lld: visual %.1f ms, inference %.1f ms (call %.1f), "
        "composite %.1f ms, total %.1f ms",
        request.model_id.c_str(), request.batch_size,
        static_cast<long long>(request.start_frame_idx), response.visual_input_ms,
        response.inference_ms, response.inference_rpc_ms, response.composite_ms, response.total_ms);
  }
  return response;
}

CompositingHealth CompositingServer::Health() {
  CompositingHealth h;
  h.healthy = !shutting_down_;
  h.loaded_models = avatars_->loaded_count();
  h.max_models = avatars_->max_models();
  h.inference_server_url = options_.inference_label;
  h.version = kCompositingVersion;
  h.memory_bytes = avatars_->memory_bytes();
  h.memory_limit_bytes = avatars_->memory_limit_bytes();

  std::unique_lock<std::mutex> lock(probe_mu_);
  const auto now = Clock::now();
  const bool stale = !probe_valid_ || now - probe_time_ >= options_.health_cache;
  // One caller probes; the others answer with the last result instead of piling up on
  // a server that may not answer.
  if (stale && !probe_running_) {
    probe_running_ = true;
    lock.unlock();
    auto info = backend_.Health(Clock::now() + options_.health_probe_timeout);
    lock.lock();
    probe_running_ = false;
    probe_valid_ = true;
    probe_time_ = Clock::now();
    probe_unix_ms_ = UnixMsNow();
    probe_healthy_ = info.ok() && info->healthy;
    probe_loaded_models_ = info.ok() ? info->loaded_models : 0;
    probe_gpu_count_ = info.ok() ? info->gpu_count : 0;
  }
  h.inference_server_healthy = probe_valid_ && probe_healthy_;
  h.inference_checked_unix_ms = probe_unix_ms_;
  h.inference_loaded_models = probe_loaded_models_;
  h.inference_gpu_count = probe_gpu_count_;
  return h;
}

namespace {

// Pointers to `v`'s elements, ordered by `id` (stable: equal ids keep their order).
template <typename T, typename Id>
std::vector<T*> SortedBy(std::vector<T>& v, Id id) {
  std::vector<T*> sorted;
  sorted.reserve(v.size());
  for (auto& x : v) sorted.push_back(&x);
  std::stable_sort(sorted.begin(), sorted.end(), [&](T* x, T* y) { return id(*x) < id(*y); });
  return sorted;
}

// Merges the two servers' views of models by id, keeping ids sorted: both lists ordered
// by id (pointers: the entries are moved once, into the result), then one linear pass
// (with 11,000 tenants a std::map of the merged entries took a tenth of the call). An id
// repeated in one list (a fleet's servers) keeps its last entry, as before.
std::vector<ModelInfo> Merge(std::vector<avatar::AvatarStats> avatars,
                             std::vector<inference::ModelStats> models) {
  const auto by_avatar = SortedBy(
      avatars, [](const avatar::AvatarStats& x) -> const auto& { return x.id; });
  const auto by_model = SortedBy(
      models, [](const inference::ModelStats& x) -> const auto& { return x.model_id; });
  std::vector<ModelInfo> out;
  out.reserve(std::max(avatars.size(), models.size()));
  auto a = by_avatar.begin();
  auto m = by_model.begin();
  while (a != by_avatar.end() || m != by_model.end()) {
    const bool take_avatar =
        m == by_model.end() || (a != by_avatar.end() && (*a)->id <= (*m)->model_id);
    const std::string& id = take_avatar ? (*a)->id : (*m)->model_id;
    if (out.empty() || out.back().model_id != id) out.emplace_back().model_id = id;
    if (take_avatar) {
      out.back().avatar = std::move(**a++);
    } else {
      out.back().inference = std::move(**m++);
    }
  }
  return out;
}

}  // namespace

Expected<ModelList> CompositingServer::ListModels(bool include_available, int limit) {
  if (limit < 0) {
    return Status::InvalidArgument("limit must be >= 0 (0 = 1000), got " + std::to_string(limit));
  }
  const int cap = limit == 0 ? 1000 : limit;
  LIPSYNC_ASSIGN_OR_RETURN(auto models, backend_.ListModels(include_available, cap));
  std::vector<avatar::AvatarStats> avatars = avatars_->LoadedStats();
  if (include_available) {
    // Known but not in memory: listed by id alone (KnownIds found them on disk; looking
    // at each one's files again here cost seconds with 11,000 tenants).
    std::set<std::string> listed;
    for (const auto& a : avatars) listed.insert(a.id);
    for (auto& id : avatars_->KnownIds()) {
      if (int(avatars.size()) >= cap) break;
      if (listed.count(id)) continue;
      avatar::AvatarStats available;
      available.id = std::move(id);
      available.state = avatar::AvatarState::kUnloaded;
      avatars.push_back(std::move(available));
    }
  }
  ModelList list;
  list.models = Merge(std::move(avatars), std::move(models));
  if (int(list.models.size()) > cap) list.models.resize(size_t(cap));
  list.loaded_models = avatars_->loaded_count();
  list.max_models = avatars_->max_models();
  return list;
}

void CompositingServer::PrefetchModel(const std::string& model_id) {
  auto hint = backend_.PrefetchModel(model_id);  // only a hint: its errors are ignored
  if (!hint.ok()) {
    LOG_DEBUG("prefetch of model '%s': %s", model_id.substr(0, 128).c_str(),
              hint.status().ToString().c_str());
  }
  const size_t outcome = hint.ok() ? static_cast<size_t>(*hint) : prefetches_.size() - 1;
  ++prefetches_[std::min(outcome, prefetches_.size() - 1)];
}

CompositingServer::PrefetchCounts CompositingServer::prefetch_counts() const {
  using inference::PrefetchResult;
  static_assert(static_cast<size_t>(PrefetchResult::kSent) + 2 ==
                std::tuple_size_v<decltype(prefetches_)>);
  auto count = [&](PrefetchResult r) { return prefetches_[static_cast<size_t>(r)].load(); };
  PrefetchCounts c;
  c.sent = count(PrefetchResult::kSent);
  c.queued = count(PrefetchResult::kQueued);
  c.loading = count(PrefetchResult::kLoading);
  c.already_loaded = count(PrefetchResult::kAlreadyLoaded);
  c.dropped = count(PrefetchResult::kDropped);
  c.failed = prefetches_.back().load();
  return c;
}

Expected<ModelLoadResult> CompositingServer::LoadModel(const std::string& model_id,
                                                       bool force_reload) {
  LIPSYNC_RETURN_IF_ERROR(ValidateModelId(model_id));
  const auto t0 = Clock::now();
  const bool avatar_was_loaded = [&] {
    auto stats = avatars_->Stats(model_id);
    return stats.ok() && stats->state == avatar::AvatarState::kLoaded;
  }();
  Status avatar_status = avatars_->Load(model_id, force_reload);
  if (!avatar_status.ok()) return avatar_status.WithContext("avatar of '" + model_id + "'");
  auto loaded = backend_.LoadModel(model_id, force_reload);
  if (!loaded.ok()) return loaded.status().WithContext("inference model '" + model_id + "'");
  ModelLoadResult result;
  result.load_time_ms = MsBetween(t0, Clock::now());
  result.already_loaded = avatar_was_loaded && loaded->already_loaded && !force_reload;
  result.model.model_id = model_id;
  result.model.inference = loaded->stats;
  auto stats = avatars_->Stats(model_id);
  if (stats.ok()) result.model.avatar = std::move(*stats);
  return result;
}

Expected<bool> CompositingServer::UnloadModel(const std::string& model_id) {
  LIPSYNC_RETURN_IF_ERROR(ValidateModelId(model_id));
  Status avatar_status = avatars_->Unload(model_id);
  bool avatar_was_loaded = avatar_status.ok();
  if (!avatar_status.ok() && avatar_status.code() != StatusCode::kNotFound) return avatar_status;
  LIPSYNC_ASSIGN_OR_RETURN(bool model_was_loaded, backend_.UnloadModel(model_id));
  return avatar_was_loaded || model_was_loaded;
}

Expected<std::vector<ModelInfo>> CompositingServer::GetModelStats(const std::string& model_id) {
  if (model_id.empty()) {
    LIPSYNC_ASSIGN_OR_RETURN(auto models, backend_.GetModelStats(""));
    return Merge(avatars_->LoadedStats(), std::move(models));
  }
  LIPSYNC_RETURN_IF_ERROR(ValidateModelId(model_id));
  auto avatar_stats = avatars_->Stats(model_id);
  auto models = backend_.GetModelStats(model_id);
  if (!avatar_stats.ok() && !models.ok()) return avatar_stats.status();
  ModelInfo info;
  info.model_id = model_id;
  if (avatar_stats.ok()) info.avatar = std::move(*avatar_stats);
  if (models.ok() && !models->empty()) info.inference = std::move(models->front());
  if (!models.ok() && models.status().code() != StatusCode::kNotFound) return models.status();
  return std::vector<ModelInfo>{std::move(info)};
}

}  // namespace lipsync::compositing
