// Test fixture for end-to-end tests: a model_root in a temp dir with small generated
// tenants (avatar frames + crop rects from lipsync::demo, ONNX models from
// lipsync::modelgen), and both real servers on loopback ports:
//  - split: InferenceServer behind its gRPC service, the compositing server reaching it
//    through GrpcInferenceBackend, its own gRPC service in front;
//  - single process: the compositing server calling the InferenceServer object directly.
// Not thread-safe; one per test.
#pragma once

#include <grpcpp/grpcpp.h>

#include <sys/types.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "compositing.grpc.pb.h"
#include "compositing/compositing_server.h"
#include "config/config.h"
#include "inference.grpc.pb.h"
#include "inference/inference_server.h"
#include "rpc/compositing_service.h"
#include "rpc/grpc_inference_backend.h"
#include "rpc/inference_service.h"
#include "rpc/server_setup.h"

namespace lipsync::e2e {

namespace fs = std::filesystem;

// Small avatars keep the suite fast: 320x240, 8 frames.
inline constexpr int kWidth = 320, kHeight = 240, kFrames = 8;

// A model_root shared by the tests of one binary (built once per process):
//  identity/  identity model + avatar       demo/  demo lip-sync model + avatar
//  badrects/  identity model, crop_rects.json not JSON
//  noframes/  identity model, crop rects but frames/ without frame files
const fs::path& ModelRoot();

config::InferenceConfig InferenceTestConfig();
config::CompositingConfig CompositingTestConfig();

// A loopback port free at the time of the call (for configs of spawned servers).
int FreePort();
// Starts `<build>/lipsync <args>` with stdout and stderr to `log` and waits (up to 30 s)
// for its "Ready to accept connections" line; a server that exits or never gets ready
// fails the test (quoting the log). Returns the pid either way.
pid_t Spawn(const std::vector<std::string>& args, const fs::path& log);

enum class Mode { kSplit, kSingleProcess };

class Cluster {
 public:
  Cluster(Mode mode, const config::CompositingConfig& compositing = CompositingTestConfig(),
          compositing::CompositingServerOptions options = {});
  ~Cluster();

  ::compositing::CompositingService::Stub& stub() { return *stub_; }
  // Split mode only: a stub straight to the inference server.
  ::inference::InferenceService::Stub* inference_stub() { return inference_stub_.get(); }
  compositing::CompositingServer& server() { return *server_; }
  int compositing_port() const { return compositing_grpc_->port(); }
  // Each server's /metrics endpoint (a free port); the inference one is -1 in single-process
  // mode (no inference gRPC server).
  int compositing_metrics_port() const { return compositing_grpc_->ops().metrics_port(); }
  int inference_metrics_port() const {
    return inference_grpc_ ? inference_grpc_->ops().metrics_port() : -1;
  }
  bool ok() const { return ok_; }

 private:
  bool ok_ = false;
  std::unique_ptr<inference::InferenceServer> inference_;
  std::unique_ptr<rpc::InferenceServiceImpl> inference_service_;
  std::unique_ptr<rpc::GrpcServer> inference_grpc_;
  std::unique_ptr<rpc::GrpcInferenceBackend> remote_;
  std::unique_ptr<compositing::CompositingServer> server_;
  std::unique_ptr<rpc::CompositingServiceImpl> service_;
  std::unique_ptr<rpc::GrpcServer> compositing_grpc_;
  std::unique_ptr<::compositing::CompositingService::Stub> stub_;
  std::unique_ptr<::inference::InferenceService::Stub> inference_stub_;
};

std::shared_ptr<grpc::Channel> LoopbackChannel(int port);

}  // namespace lipsync::e2e
