// InferenceBackend over gRPC: how the compositing server reaches a remote inference
// server. Sends the model id also as `x-model-id` metadata (so a proxy can route by
// tenant: nginx `hash $http_x_model_id consistent`), retries ONLY UNAVAILABLE with
// exponential backoff, and never waits past the caller's deadline.
//
// Thread-safe (one channel shared by all calls).
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"
#include "config/config.h"
#include "inference.grpc.pb.h"
#include "inference/api.h"

namespace lipsync::rpc {

struct GrpcBackendOptions {
  std::string target;  // "host:port"
  int max_message_size_mb = 100;
  std::chrono::milliseconds timeout{10000};       // per call, when the caller sets no deadline
  int max_retries = 3;                            // extra attempts after UNAVAILABLE
  std::chrono::milliseconds initial_backoff{50};  // doubled after each retry
  std::string api_key;                            // sent as "authorization: Bearer <key>"
  std::string tls_ca_path;                        // set: TLS, verifying the server with this CA
};

// The compositing config's inference_server section as options.
GrpcBackendOptions BackendOptionsFromConfig(const config::CompositingConfig& config);

class GrpcInferenceBackend : public inference::InferenceBackend {
 public:
  // Creates the channel (connects lazily). INVALID_ARGUMENT for an empty target,
  // FAILED_PRECONDITION when the CA file cannot be read.
  static Expected<std::unique_ptr<GrpcInferenceBackend>> Create(GrpcBackendOptions options);

  Expected<inference::InferResult> Infer(const inference::InferRequest& request) override;
  Expected<inference::HealthInfo> Health(
      std::optional<inference::Clock::time_point> deadline) override;
  Expected<std::vector<inference::ModelStats>> ListModels(bool include_available,
                                                          int limit) override;
  Expected<inference::LoadResult> LoadModel(const std::string& model_id,
                                            bool force_reload) override;
  Expected<bool> UnloadModel(const std::string& model_id) override;
  Expected<std::vector<inference::ModelStats>> GetModelStats(const std::string& model_id) override;

  // Attempts made by the last calls, for tests of the retry policy.
  int64_t attempts() const { return attempts_.load(); }

 private:
  explicit GrpcInferenceBackend(GrpcBackendOptions options, std::shared_ptr<grpc::Channel> channel);
  // Calls `rpc(context)` until it succeeds, fails with a code other than UNAVAILABLE,
  // runs out of retries, or the deadline would pass during the backoff.
  template <typename Rpc>
  Status CallWithRetry(std::optional<inference::Clock::time_point> deadline,
                       const std::string& model_id, Rpc&& rpc);

  const GrpcBackendOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<::inference::InferenceService::Stub> stub_;
  std::atomic<int64_t> attempts_{0};
};

}  // namespace lipsync::rpc
