#include "rpc/compositing_service.h"

#include <utility>

#include "avatar/avatar.h"
#include "rpc/grpc_status.h"
#include "rpc/inference_service.h"
#include "rpc/server_setup.h"
#include "session/idle_loop_cache.h"

namespace lipsync::rpc {
namespace {

namespace pb = ::compositing;
namespace admin = ::lipsync::admin;

template <typename Response>
grpc::Status Fail(const Status& status, Response* response) {
  response->set_success(false);
  response->set_error(status.message());
  return ToGrpc(status);
}

admin::ModelState AvatarStateToProto(avatar::AvatarState state) {
  switch (state) {
    case avatar::AvatarState::kUnloaded:
      return admin::AVAILABLE;
    case avatar::AvatarState::kLoading:
      return admin::LOADING;
    case avatar::AvatarState::kLoaded:
      return admin::READY;
    case avatar::AvatarState::kFailed:
      return admin::FAILED;
  }
  return admin::MODEL_STATE_UNSPECIFIED;
}

void ModelInfoToProto(const compositing::ModelInfo& model, admin::ModelInfo* out) {
  if (model.inference) ToProto(*model.inference, out);
  out->set_model_id(model.model_id);
  if (model.avatar) {
    const avatar::AvatarStats& a = *model.avatar;
    admin::AvatarStats* s = out->mutable_avatar();
    s->set_state(AvatarStateToProto(a.state));
    s->set_num_frames(a.num_frames);
    s->set_frame_width(a.frame_width);
    s->set_frame_height(a.frame_height);
    s->set_cached_frames(a.cached_frames);
    s->set_memory_bytes(a.memory_bytes);
    s->set_usage_count(a.usage_count);
    s->set_last_used_unix_ms(a.last_used_unix_ms);
    s->set_load_time_ms(a.load_ms);
    s->set_error(a.error);
    s->set_avg_composite_ms(a.avg_composite_ms);
  }
}

}  // namespace

CompositingServiceImpl::CompositingServiceImpl(compositing::CompositingServer* server)
    : server_(server), sessions_(std::make_unique<SessionService>(server)) {}

grpc::Status CompositingServiceImpl::StreamSession(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<pb::SessionOutput, pb::SessionInput>* stream) {
  return sessions_->StreamSession(ops(), context, stream);
}

// Scrape-time values from the compositing server: avatars, caches, sessions.
std::vector<Gauge> CompositingServiceImpl::Gauges() {
  compositing::CompositingHealth h = server_->Health();
  const session::IdleLoopCache& idle_loops = session::IdleLoopCache::Global();
  const avatar::FrameCacheCounts cache = avatar::BackgroundCacheCounts();
  std::vector<Gauge> gauges{
      {"lipsync_background_cache_hits_total",
       "Background frames served from the avatars' frame cache.",
       {},
       static_cast<double>(cache.hits),
       Gauge::Kind::kCounter},
      {"lipsync_background_cache_misses_total",
       "Background frames that had to be read or decoded (not in the cache).",
       {},
       static_cast<double>(cache.misses),
       Gauge::Kind::kCounter},
      {"lipsync_avatar_evictions_total",
       "Avatars unloaded to make room (max_models or memory cap).",
       {},
       static_cast<double>(server_->avatars().evictions()),
       Gauge::Kind::kCounter},
      {"lipsync_loaded_models", "Avatars loaded now.", {}, 1.0 * h.loaded_models},
      {"lipsync_max_models", "Avatars that may be loaded at once.", {}, 1.0 * h.max_models},
      {"lipsync_cache_memory_bytes",
       "Memory held per cache: loaded avatars' background frames, idle loops.",
       {{"cache", "avatars"}},
       static_cast<double>(h.memory_bytes)},
      {"lipsync_cache_memory_bytes",
       "Memory held per cache: loaded avatars' background frames, idle loops.",
       {{"cache", "idle_loops"}},
       static_cast<double>(idle_loops.bytes())},
      {"lipsync_cache_memory_limit_bytes",
       "Memory cap per cache (0: none).",
       {{"cache", "avatars"}},
       static_cast<double>(h.memory_limit_bytes)},
      {"lipsync_inference_server_healthy",
       "1 when the inference server answered its last check.",
       {},
       h.inference_server_healthy ? 1.0 : 0.0},
      {"lipsync_live_sessions",
       "Live sessions running now.",
       {},
       1.0 * sessions_->limiter().active()}};
  const compositing::CompositingServer::PrefetchCounts p = server_->prefetch_counts();
  for (const auto& [result, count] :
       {std::pair{"sent", p.sent}, std::pair{"queued", p.queued}, std::pair{"loading", p.loading},
        std::pair{"already_loaded", p.already_loaded}, std::pair{"dropped", p.dropped},
        std::pair{"failed", p.failed}}) {
    gauges.push_back({"lipsync_model_prefetches_total",
                      "Model prefetch hints sent to the inference side for a cold tenant, by "
                      "what became of them.",
                      {{"result", result}},
                      static_cast<double>(count),
                      Gauge::Kind::kCounter});
  }
  return gauges;
}

grpc::Status CompositingServiceImpl::InferBatchComposite(grpc::ServerContext* context,
                                                         const pb::CompositeBatchRequest* request,
                                                         pb::CompositeBatchResponse* response) {
  const CallSpec spec{"InferBatchComposite", auth::Scope::kInfer, request->model_id(),
                      request->batch_size()};
  return ops().Handle(context, spec, *request, response, [&](Call& call) -> grpc::Status {
    compositing::CompositeRequest in;
    in.model_id = request->model_id();
    in.batch_size = request->batch_size();
    in.start_frame_idx = request->start_frame_idx();
    in.visual_frames = request->visual_frames();
    in.audio_features = request->audio_features();
    in.raw_audio = request->raw_audio();
    in.sample_rate = request->sample_rate();
    in.utterance_frames = request->utterance_frames();
    in.end_of_utterance = request->end_of_utterance();
    in.output_format =
        static_cast<compositing::FormatChoice>(static_cast<int>(request->output_format()));
    in.jpeg_quality = request->jpeg_quality();
    in.loop_mode = static_cast<compositing::LoopChoice>(static_cast<int>(request->loop_mode()));
    in.deadline = SteadyDeadline(*context);

    auto result = server_->InferBatchComposite(in);
    if (!result.ok()) return Fail(result.status(), response);
    compositing::CompositeResponse& out = *result;
    response->set_success(true);
    for (auto& frame : out.frames) response->add_composited_frames(std::move(frame));
    response->set_gpu_id(out.gpu_id);
    response->set_inference_time_ms(static_cast<float>(out.inference_ms));
    response->set_composite_time_ms(static_cast<float>(out.composite_ms));
    response->set_total_time_ms(static_cast<float>(out.total_ms));
    response->set_model_loaded_on_demand(out.loaded_on_demand);
    response->set_model_load_time_ms(static_cast<float>(out.model_load_ms));
    response->set_avatar_load_time_ms(static_cast<float>(out.avatar_load_ms));
    response->set_audio_processing_ms(static_cast<float>(out.audio_processing_ms));
    response->set_queue_wait_ms(static_cast<float>(out.queue_wait_ms));
    response->set_frame_width(out.frame_width);
    response->set_frame_height(out.frame_height);
    response->set_output_format(out.raw_rgb ? pb::RAW_RGB : pb::JPEG);
    for (int index : out.background_indices) response->add_background_frame_indices(index);
    response->set_encode_time_ms(static_cast<float>(out.encode_ms));
    response->set_inference_rpc_ms(static_cast<float>(out.inference_rpc_ms));
    StageTimings timings;
    timings.queue_wait_ms = out.queue_wait_ms;
    timings.inference_ms = out.inference_ms;
    if (!request->raw_audio().empty()) timings.audio_ms = out.audio_processing_ms;
    timings.composite_ms = out.composite_ms;
    timings.encode_ms = out.encode_ms;
    call.SetTimings(timings);
    return grpc::Status::OK;
  });
}

grpc::Status CompositingServiceImpl::Health(grpc::ServerContext* context,
                                            const pb::HealthRequest* request,
                                            pb::HealthResponse* response) {
  const CallSpec spec{"Health", std::nullopt, {}, 0};
  return ops().Handle(context, spec, *request, response, [&](Call&) -> grpc::Status {
    compositing::CompositingHealth h = server_->Health();
    response->set_healthy(h.healthy);
    response->set_loaded_models(h.loaded_models);
    response->set_max_models(h.max_models);
    response->set_inference_server_url(h.inference_server_url);
    response->set_inference_server_healthy(h.inference_server_healthy);
    response->set_version(h.version);
    response->set_inference_checked_unix_ms(h.inference_checked_unix_ms);
    response->set_inference_loaded_models(h.inference_loaded_models);
    response->set_inference_gpu_count(h.inference_gpu_count);
    response->set_memory_bytes(h.memory_bytes);
    response->set_memory_limit_bytes(h.memory_limit_bytes);
    return grpc::Status::OK;
  });
}

grpc::Status CompositingServiceImpl::ListModels(grpc::ServerContext* context,
                                                const admin::ListModelsRequest* request,
                                                admin::ListModelsResponse* response) {
  const CallSpec spec{"ListModels", std::nullopt, {}, 0};
  return ops().Handle(context, spec, *request, response, [&](Call& call) -> grpc::Status {
    // Only the caller's tenants: the limit applies after that filter.
    const bool sees_all = SeesEveryTenant(call.principal());
    auto list = server_->ListModels(request->include_available(), sees_all ? request->limit() : 0);
    if (!list.ok()) return ToGrpc(list.status());
    int loaded = 0;
    for (const auto& model : list->models) {
      if (!call.principal().MayUse(model.model_id)) continue;
      if (request->limit() > 0 && response->models_size() >= request->limit()) break;
      ModelInfoToProto(model, response->add_models());
      if (model.avatar && model.avatar->state == avatar::AvatarState::kLoaded) ++loaded;
    }
    response->set_loaded_models(sees_all ? list->loaded_models : loaded);
    response->set_max_models(list->max_models);
    return grpc::Status::OK;
  });
}

grpc::Status CompositingServiceImpl::LoadModel(grpc::ServerContext* context,
                                               const admin::LoadModelRequest* request,
                                               admin::LoadModelResponse* response) {
  const CallSpec spec{"LoadModel", auth::Scope::kAdmin, request->model_id(), 0};
  return ops().Handle(context, spec, *request, response, [&](Call&) -> grpc::Status {
    auto loaded = server_->LoadModel(request->model_id(), request->force_reload());
    if (!loaded.ok()) return Fail(loaded.status(), response);
    response->set_success(true);
    response->set_load_time_ms(loaded->load_time_ms);
    response->set_already_loaded(loaded->already_loaded);
    ModelInfoToProto(loaded->model, response->mutable_model());
    return grpc::Status::OK;
  });
}

grpc::Status CompositingServiceImpl::UnloadModel(grpc::ServerContext* context,
                                                 const admin::UnloadModelRequest* request,
                                                 admin::UnloadModelResponse* response) {
  const CallSpec spec{"UnloadModel", auth::Scope::kAdmin, request->model_id(), 0};
  return ops().Handle(context, spec, *request, response, [&](Call&) -> grpc::Status {
    auto unloaded = server_->UnloadModel(request->model_id());
    if (!unloaded.ok()) return Fail(unloaded.status(), response);
    response->set_success(true);
    response->set_was_loaded(*unloaded);
    return grpc::Status::OK;
  });
}

grpc::Status CompositingServiceImpl::GetModelStats(grpc::ServerContext* context,
                                                   const admin::GetModelStatsRequest* request,
                                                   admin::GetModelStatsResponse* response) {
  const CallSpec spec{"GetModelStats", std::nullopt, request->model_id(), 0};
  return ops().Handle(context, spec, *request, response, [&](Call& call) -> grpc::Status {
    auto stats = server_->GetModelStats(request->model_id());
    if (!stats.ok()) return ToGrpc(stats.status());
    for (const auto& model : *stats) {
      if (call.principal().MayUse(model.model_id)) ModelInfoToProto(model, response->add_models());
    }
    return grpc::Status::OK;
  });
}

}  // namespace lipsync::rpc
