// The inference server's core, with no wire types: one object that owns the ONNX
// Runtime choice (execution plan), the model registry and the scheduler, and serves
// InferenceBackend calls. rpc/inference_service translates gRPC to it; `lipsync serve`
// calls it in-process.
//
// A request's journey through Infer(): validate the fields that need no model (id,
// batch size, start_frame_idx >= 0, audio form) -> Acquire the model from the registry
// (lazy load, pinned while the request lives; waiting for another request's load ends
// at this request's deadline) -> check byte counts against the model's declared shapes
// (raw_audio: its sample count, docs/AUDIO.md) and that float32 visual and audio
// tensors hold no NaN/Inf (INVALID_ARGUMENT naming the tensor and frame) -> queue on
// the model's device (at most server.max_queue_share_per_model of the queue per model,
// RESOURCE_EXHAUSTED beyond it) -> a worker turns raw_audio into features (mel + one audio-encoder
// Run, so that Run is bounded by the queue like the main one) and runs ONE batched Run (several
// requests' frames when dynamic batching groups them) -> timings -> reply.
//
// Thread-safe. Shutdown() refuses new requests and waits for those in flight; the
// destructor does the same with no grace limit.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "inference/api.h"
#include "inference/execution_provider.h"
#include "inference/model_registry.h"
#include "inference/scheduler.h"

namespace lipsync::inference {

// Version reported by Health and the startup banner.
inline constexpr const char* kServerVersion = "1.0.0";

class InferenceServer : public InferenceBackend {
 public:
  // Initializes ONNX Runtime (onnx.library_path, thread counts), plans CPU vs CUDA,
  // creates the registry and scheduler and loads the `preload: true` models (a model
  // that fails to preload is logged and stays FAILED; the others serve). Errors:
  // FAILED_PRECONDITION for an unusable runtime library or require_cuda without CUDA,
  // INVALID_ARGUMENT for inconsistent settings.
  // `adjust_registry` (tests, fault injection) may change the registry options made
  // from the config before the registry is built: a loader, a clock, the devices (the
  // scheduler runs a worker pool for each of the registry's devices, so a test can
  // place models on fake GPUs served by CPU sessions).
  static Expected<std::unique_ptr<InferenceServer>> Create(
      const config::InferenceConfig& config,
      const std::function<void(RegistryOptions&)>& adjust_registry = {});
  ~InferenceServer() override;

  Expected<InferResult> Infer(const InferRequest& request) override;
  Expected<HealthInfo> Health(std::optional<Clock::time_point> deadline) override;
  Expected<std::vector<ModelStats>> ListModels(bool include_available, int limit) override;
  Expected<LoadResult> LoadModel(const std::string& model_id, bool force_reload) override;
  Expected<bool> UnloadModel(const std::string& model_id) override;
  Expected<std::vector<ModelStats>> GetModelStats(const std::string& model_id) override;
  // ModelRegistry::Prefetch (bounded background load). UNAVAILABLE while shutting down.
  Expected<PrefetchResult> PrefetchModel(const std::string& model_id) override;

  // New requests get UNAVAILABLE "server is shutting down"; waits up to `grace` for the
  // requests in flight. Returns true when all of them finished. Idempotent.
  bool Shutdown(std::chrono::milliseconds grace);

  const ExecutionPlan& plan() const { return plan_; }
  const std::string& ort_library_path() const;
  const std::string& ort_version() const;
  int worker_count() const { return scheduler_->worker_count(); }
  // Models loaded by Create() from `preload: true` entries.
  int preloaded_models() const { return preloaded_; }
  int in_flight() const { return in_flight_.load(); }
  ModelRegistry& registry() { return *registry_; }
  const Scheduler& scheduler() const { return *scheduler_; }

 private:
  InferenceServer(config::InferenceConfig config, ExecutionPlan plan,
                  const std::function<void(RegistryOptions&)>& adjust_registry);
  // Validation that needs the loaded model: byte counts against declared shapes.
  Status CheckSizes(const InferRequest& request, const OnnxModel& model) const;
  // The scheduler's Runner: raw audio -> features per request, then one Run over every
  // frame of the group.
  void RunGroup(std::span<Task* const> group, const WorkerInfo& worker);

  const config::InferenceConfig config_;
  const ExecutionPlan plan_;
  std::unique_ptr<ModelRegistry> registry_;
  // Declared after the registry: destroyed first, so no handle outlives the registry.
  std::unique_ptr<Scheduler> scheduler_;
  int preloaded_ = 0;

  std::atomic<bool> shutting_down_{false};
  std::atomic<int> in_flight_{0};
  std::mutex in_flight_mu_;
  std::condition_variable in_flight_cv_;
};

}  // namespace lipsync::inference
