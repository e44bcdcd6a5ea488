// gRPC CompositingService: translation only between compositing.proto /
// model_management.proto and compositing::CompositingServer. Request bytes are passed
// as views into the request message, never copied; errors are the call's gRPC status
// (and the response's success/error pair where the message has one). Credentials,
// scopes, rate limits, audit and metrics come from the ServerOps it is attached to.
//
// Thread-safe (gRPC calls it from many threads); the server must outlive it.
#pragma once

#include <memory>
#include <string>

#include "compositing.grpc.pb.h"
#include "compositing/compositing_server.h"
#include "rpc/server_ops.h"
#include "rpc/session_service.h"

namespace lipsync::rpc {

class CompositingServiceImpl final : public ::compositing::CompositingService::Service,
                                     public OpsService {
 public:
  explicit CompositingServiceImpl(compositing::CompositingServer* server);
  grpc::Service* grpc_service() override { return this; }
  std::vector<Gauge> Gauges() override;

  grpc::Status InferBatchComposite(grpc::ServerContext* context,
                                   const ::compositing::CompositeBatchRequest* request,
                                   ::compositing::CompositeBatchResponse* response) override;
  grpc::Status Health(grpc::ServerContext* context, const ::compositing::HealthRequest* request,
                      ::compositing::HealthResponse* response) override;
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
  // The live session (rpc/session_service.h), with the server's `session:` settings.
  grpc::Status StreamSession(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<::compositing::SessionOutput, ::compositing::SessionInput>* stream)
      override;
  SessionService& sessions() { return *sessions_; }

 private:
  compositing::CompositingServer* server_;
  std::unique_ptr<SessionService> sessions_;
};

}  // namespace lipsync::rpc
