// gRPC InferenceService: translation only between the wire messages (inference.proto,
// model_management.proto) and an InferenceBackend (normally InferenceServer). Visual
// and audio bytes are passed as views into the request message, never copied.
// Errors are returned both as the call's gRPC status and in the response's
// success/error fields (the guide's clients check both). Credentials, scopes, rate
// limits, audit and metrics come from the ServerOps it is attached to (server_ops.h).
//
// Thread-safe (gRPC calls it from many threads); the backend must outlive it.
#pragma once

#include <string>

#include "inference.grpc.pb.h"
#include "inference/api.h"
#include "rpc/server_ops.h"

namespace lipsync::rpc {

class InferenceServiceImpl final : public ::inference::InferenceService::Service,
                                   public OpsService {
 public:
  explicit InferenceServiceImpl(inference::InferenceBackend* backend);
  grpc::Service* grpc_service() override { return this; }
  std::vector<Gauge> Gauges() override;

  grpc::Status InferBatch(grpc::ServerContext* context,
                          const ::inference::InferBatchRequest* request,
                          ::inference::InferBatchResponse* response) override;
  grpc::Status Health(grpc::ServerContext* context, const ::inference::HealthRequest* request,
                      ::inference::HealthResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context,
                          const ::lipsync::admin::ListModelsRequest* request,
                          ::lipsync::admin::ListModelsResponse* response) override;
  grpc::Status LoadModel(grpc::ServerContext* context,
                         const ::lipsync::admin::LoadModelRequest* request,
                         ::lipsync::admin::LoadModelResponse* response) override;
  grpc::Status UnloadModel(grpc::ServerContext* context,
                           const ::lipsync::admin::UnloadModelRequest* request,
                           ::lipsync::admin::UnloadModelResponse* response) override;
  grpc::Status GetModelStats(grpc::ServerContext* context,
                             const ::lipsync::admin::GetModelStatsRequest* request,
                             ::lipsync::admin::GetModelStatsResponse* response) override;
  grpc::Status PrefetchModel(grpc::ServerContext* context,
                             const ::inference::PrefetchModelRequest* request,
                             ::inference::PrefetchModelResponse* response) override;

 private:
  inference::InferenceBackend* backend_;
};

// True when `principal` may use every tenant (a "*" pattern): lists need no filter.
bool SeesEveryTenant(const auth::Principal& principal);

// Wire <-> domain conversions shared with GrpcInferenceBackend (and the compositing
// server, which forwards inference stats).
void ToProto(const inference::ModelStats& stats, ::lipsync::admin::ModelInfo* info);
inference::ModelStats FromProto(const ::lipsync::admin::ModelInfo& info);
void ToProto(const inference::HealthInfo& health, ::inference::HealthResponse* response);
inference::HealthInfo FromProto(const ::inference::HealthResponse& response);

}  // namespace lipsync::rpc
