// InferenceBackend over gRPC: how the compositing server reaches remote inference
// servers.
//  - One address (`target`): every call goes there. It may be one inference server or
//    a load balancer: every call carries the model id as `x-model-id` metadata, so a
//    proxy routes by tenant (deploy/nginx: `hash $http_x_model_id consistent`).
//  - Several addresses (`targets`): each model id goes straight to one of them, chosen
//    by rendezvous (highest random weight) hashing of (address, model id), so a model
//    stays resident on one server, adding a server moves about 1/N of the models, and a
//    server that goes away moves only its own models. A call that ends UNAVAILABLE
//    fails over to the model's next-ranked server; servers whose channel is in
//    TRANSIENT_FAILURE are tried last (and nudged to reconnect).
// Retries of UNAVAILABLE within one server are gRPC's own retry policy (service config
// on each channel: maxAttempts, exponential backoff), with the per-call retry buffer
// raised above the largest message, so a full batch is retried too. Never waits past
// the caller's deadline (one deadline covers all attempts and failovers).
//
// Thread-safe (channels shared by all calls).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "inference.grpc.pb.h"
#include "inference/api.h"

namespace lipsync::rpc {

struct GrpcBackendOptions {
  // Set exactly one of these. target: "host:port" of one inference server or of a
  // load balancer in front of several. targets: the inference servers themselves.
  std::string target;
  std::vector<std::string> targets;
  int max_message_size_mb = 100;
  std::chrono::milliseconds timeout{10000};  // per call, when the caller sets no deadline
  // gRPC retry policy: extra attempts after UNAVAILABLE on one server (gRPC makes at
  // most 5 attempts in all, so values above 4 act as 4). 0: no retries.
  int max_retries = 3;
  std::chrono::milliseconds initial_backoff{50};  // before the first retry, then doubled
  std::chrono::milliseconds max_backoff{1000};
  // How soon a channel to a server that went away tries to connect again (at most).
  std::chrono::milliseconds max_reconnect_backoff{2000};
  std::string api_key;      // sent as "authorization: Bearer <key>"
  std::string tls_ca_path;  // set: TLS, verifying the servers with this CA
  // PrefetchModel hints: sent asynchronously to the server the model's Infer calls go
  // to, at most this many unanswered at once (beyond that a hint is dropped), each
  // given up after prefetch_timeout.
  int max_prefetches_in_flight = 8;
  std::chrono::milliseconds prefetch_timeout{1000};
};

// The compositing config's inference_server section as options (url or urls).
GrpcBackendOptions BackendOptionsFromConfig(const config::CompositingConfig& config);

// The rendezvous order of `targets` for `model_id`: indices into `targets`, best first.
// Pure and stable across processes (FNV-1a + a 64-bit mix, no std::hash), so every
// compositing replica sends a model to the same server.
std::vector<size_t> RendezvousOrder(const std::vector<std::string>& targets,
                                    const std::string& model_id);

// The retry policy as a gRPC service config JSON (for tests and the docs).
std::string RetryServiceConfig(const GrpcBackendOptions& options);

class GrpcInferenceBackend : public inference::InferenceBackend {
 public:
  // Creates the channels (they connect lazily). INVALID_ARGUMENT for no address, both
  // target and targets, an empty or repeated address; FAILED_PRECONDITION when the CA
  // file cannot be read.
  static Expected<std::unique_ptr<GrpcInferenceBackend>> Create(GrpcBackendOptions options);
  // Waits for the prefetch hints still in flight (each ends within prefetch_timeout).
  ~GrpcInferenceBackend() override;

  Expected<inference::InferResult> Infer(const inference::InferRequest& request) override;
  // Several servers: healthy when any is; counts summed over the servers that answer.
  Expected<inference::HealthInfo> Health(
      std::optional<inference::Clock::time_point> deadline) override;
  // Several servers: every server's list (a model resident on two appears twice).
  Expected<std::vector<inference::ModelStats>> ListModels(bool include_available,
                                                          int limit) override;
  Expected<inference::LoadResult> LoadModel(const std::string& model_id,
                                            bool force_reload) override;
  Expected<bool> UnloadModel(const std::string& model_id) override;
  Expected<std::vector<inference::ModelStats>> GetModelStats(const std::string& model_id) override;
  // Fire and forget: kSent once the hint is on its way (its answer and errors are only
  // logged at debug), kDropped when max_prefetches_in_flight are unanswered.
  Expected<inference::PrefetchResult> PrefetchModel(const std::string& model_id) override;

  // Calls made, one per server tried (gRPC's retries inside a call are not counted).
  int64_t attempts() const { return attempts_.load(); }

 private:
  struct Endpoint {
    std::string target;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<::inference::InferenceService::Stub> stub;
  };
  GrpcInferenceBackend(GrpcBackendOptions options, std::vector<Endpoint> endpoints);
  // The servers to try for `model_id`, in order (see the file comment).
  std::vector<Endpoint*> Candidates(const std::string& model_id);
  // Calls `rpc(stub, context)` on the candidates for `model_id` until one succeeds or
  // fails with a code other than UNAVAILABLE, or the deadline passes.
  template <typename Rpc>
  Status Call(std::optional<inference::Clock::time_point> deadline, const std::string& model_id,
              Rpc&& rpc);
  // `rpc` on every server (Health, ListModels); the statuses in endpoint order.
  template <typename Rpc>
  std::vector<Status> CallEach(std::optional<inference::Clock::time_point> deadline, Rpc&& rpc);

  const GrpcBackendOptions options_;
  std::vector<std::string> targets_;
  std::vector<Endpoint> endpoints_;
  std::atomic<int64_t> attempts_{0};
  // Prefetch hints sent and not yet answered; the destructor waits for zero.
  std::mutex prefetch_mu_;
  std::condition_variable prefetch_cv_;
  int prefetches_in_flight_ = 0;  // guarded by prefetch_mu_
};

}  // namespace lipsync::rpc
