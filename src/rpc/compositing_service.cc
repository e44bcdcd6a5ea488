#include "rpc/compositing_service.h"

#include <utility>

#include "rpc/grpc_status.h"
#include "rpc/inference_service.h"
#include "rpc/server_ops.h"
#include "rpc/server_setup.h"

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

// Scrape-time gauges from the compositing server's health.
std::function<std::vector<Gauge>()> HealthGauges(compositing::CompositingServer* server) {
  return [server] {
    compositing::CompositingHealth h = server->Health();
    return std::vector<Gauge>{
        {"lipsync_loaded_models", "Avatars loaded now.", "", 1.0 * h.loaded_models},
        {"lipsync_avatar_memory_bytes", "Memory held by loaded avatars.", "",
         static_cast<double>(h.memory_bytes)},
        {"lipsync_inference_server_healthy", "1 when the inference server answered its last check.",
         "", h.inference_server_healthy ? 1.0 : 0.0}};
  };
}

}  // namespace

CompositingServiceImpl::CompositingServiceImpl(compositing::CompositingServer* server,
                                               std::string api_key)
    : server_(server), api_key_(std::move(api_key)) {}

grpc::Status CompositingServiceImpl::InferBatchComposite(grpc::ServerContext* context,
                                                         const pb::CompositeBatchRequest* request,
                                                         pb::CompositeBatchResponse* response) {
  CallScope call(this, context, "InferBatchComposite", *request);
  if (call.ops() != nullptr)
    call.ops()->SetGaugeSourceOnce([this] { return HealthGauges(server_); });
  call.SetModel(request->model_id(), request->batch_size());
  grpc::Status status = [&]() -> grpc::Status {
    if (grpc::Status auth = CheckApiKey(*context, api_key_); !auth.ok()) {
      response->set_error(auth.error_message());
      return auth;
    }
    // After authentication: strangers must not drain a tenant's bucket.
    if (grpc::Status limited = call.Admit(); !limited.ok()) {
      response->set_error(limited.error_message());
      return limited;
    }
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
    response->set_audio_processing_ms(static_cast<float>(out.audio_processing_ms));
    response->set_queue_wait_ms(static_cast<float>(out.queue_wait_ms));
    response->set_frame_width(out.frame_width);
    response->set_frame_height(out.frame_height);
    response->set_output_format(out.raw_rgb ? pb::RAW_RGB : pb::JPEG);
    for (int index : out.background_indices) response->add_background_frame_indices(index);
    response->set_encode_time_ms(static_cast<float>(out.encode_ms));
    response->set_inference_rpc_ms(static_cast<float>(out.inference_rpc_ms));
    return grpc::Status::OK;
  }();
  if (status.ok()) {
    call.SetTimings(response->queue_wait_ms(), response->inference_time_ms(),
                    response->composite_time_ms());
  }
  return call.Finish(status, *response);
}

grpc::Status CompositingServiceImpl::Health(grpc::ServerContext* context,
                                            const pb::HealthRequest* request,
                                            pb::HealthResponse* response) {
  CallScope call(this, context, "Health", *request);
  grpc::Status status = [&]() -> grpc::Status {
    if (grpc::Status auth = CheckApiKey(*context, api_key_); !auth.ok()) return auth;
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
  }();
  return call.Finish(status, *response);
}

grpc::Status CompositingServiceImpl::ListModels(grpc::ServerContext* context,
                                                const admin::ListModelsRequest* request,
                                                admin::ListModelsResponse* response) {
  CallScope call(this, context, "ListModels", *request);
  grpc::Status status = [&]() -> grpc::Status {
    if (grpc::Status auth = CheckApiKey(*context, api_key_); !auth.ok()) return auth;
    auto list = server_->ListModels(request->include_available(), request->limit());
    if (!list.ok()) return ToGrpc(list.status());
    for (const auto& model : list->models) ModelInfoToProto(model, response->add_models());
    response->set_loaded_models(list->loaded_models);
    response->set_max_models(list->max_models);
    return grpc::Status::OK;
  }();
  return call.Finish(status, *response);
}

grpc::Status CompositingServiceImpl::LoadModel(grpc::ServerContext* context,
                                               const admin::LoadModelRequest* request,
                                               admin::LoadModelResponse* response) {
  CallScope call(this, context, "LoadModel", *request);
  call.SetModel(request->model_id(), 0);
  grpc::Status status = [&]() -> grpc::Status {
    if (grpc::Status auth = CheckApiKey(*context, api_key_); !auth.ok()) {
      response->set_error(auth.error_message());
      return auth;
    }
    auto loaded = server_->LoadModel(request->model_id(), request->force_reload());
    if (!loaded.ok()) return Fail(loaded.status(), response);
    response->set_success(true);
    response->set_load_time_ms(loaded->load_time_ms);
    response->set_already_loaded(loaded->already_loaded);
    ModelInfoToProto(loaded->model, response->mutable_model());
    return grpc::Status::OK;
  }();
  return call.Finish(status, *response);
}

grpc::Status CompositingServiceImpl::UnloadModel(grpc::ServerContext* context,
                                                 const admin::UnloadModelRequest* request,
                                                 admin::UnloadModelResponse* response) {
  CallScope call(this, context, "UnloadModel", *request);
  call.SetModel(request->model_id(), 0);
  grpc::Status status = [&]() -> grpc::Status {
    if (grpc::Status auth = CheckApiKey(*context, api_key_); !auth.ok()) {
      response->set_error(auth.error_message());
      return auth;
    }
    auto unloaded = server_->UnloadModel(request->model_id());
    if (!unloaded.ok()) return Fail(unloaded.status(), response);
    response->set_success(true);
    response->set_was_loaded(*unloaded);
    return grpc::Status::OK;
  }();
  return call.Finish(status, *response);
}

grpc::Status CompositingServiceImpl::GetModelStats(grpc::ServerContext* context,
                                                   const admin::GetModelStatsRequest* request,
                                                   admin::GetModelStatsResponse* response) {
  CallScope call(this, context, "GetModelStats", *request);
  call.SetModel(request->model_id(), 0);
  grpc::Status status = [&]() -> grpc::Status {
    if (grpc::Status auth = CheckApiKey(*context, api_key_); !auth.ok()) return auth;
    auto stats = server_->GetModelStats(request->model_id());
    if (!stats.ok()) return ToGrpc(stats.status());
    for (const auto& model : *stats) ModelInfoToProto(model, response->add_models());
    return grpc::Status::OK;
  }();
  return call.Finish(status, *response);
}

}  // namespace lipsync::rpc
