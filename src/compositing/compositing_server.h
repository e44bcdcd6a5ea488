// The compositing server's core, with no wire types: validates a CompositeBatch
// request, acquires the tenant's avatar, builds the visual input from the cached
// backgrounds when the client sent none, calls inference through an InferenceBackend
// (gRPC in the split deployment, the in-process InferenceServer in `lipsync serve`),
// pastes each generated face onto its background and encodes it. rpc/compositing_service
// only translates gRPC to this class.
//
// A request's journey through InferBatchComposite():
//   validate every field -> registry.Acquire(avatar) (lazy load, pinned for the call;
//      waiting for another request's load of it only until this request's deadline)
//   -> visual input: the client's bytes, or Compositor::BuildVisualInputs for
//      backgrounds (start_frame_idx + i) mod num_frames (or ping-pong)
//   -> backend.Infer (uint8 output, deadline = min(client deadline, timeout_seconds))
//   -> Compositor::Compose (paste-back + JPEG/raw, frames in parallel) -> response.
//
// Thread-safe: any number of calls run concurrently (the avatar registry, the backend
// and the compositor's pool synchronize internally). Returned values are owned by the
// caller. The backend must outlive the server.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "avatar/avatar_registry.h"
#include "common/status.h"
#include "compositing/compositor.h"
#include "config/config.h"
#include "inference/api.h"

namespace lipsync::compositing {

using Clock = std::chrono::steady_clock;

// Version reported by Health and the startup banner.
inline constexpr const char* kCompositingVersion = "1.0.0";

// Numeric values match compositing.proto, so the rpc layer casts; values outside the
// enum are rejected by validation (proto3 enums are open).
enum class FormatChoice { kServerDefault = 0, kJpeg = 1, kRawRgb = 2 };
enum class LoopChoice { kServerDefault = 0, kWrap = 1, kPingPong = 2 };

struct CompositeRequest {
  std::string model_id;
  int batch_size = 0;
  int64_t start_frame_idx = 0;
  // Views of caller-owned bytes valid for the whole call (no copies on the way in).
  std::string_view visual_frames;   // empty, or float32 [B,6,320,320]
  std::string_view audio_features;  // float32, 8192 or B*8192 floats
  std::string_view raw_audio;       // s16le mono (docs/AUDIO.md)
  int sample_rate = 0;              // 0: 16000
  int utterance_frames = 0;
  bool end_of_utterance = false;
  FormatChoice output_format = FormatChoice::kServerDefault;
  int jpeg_quality = 0;  // 0: the server's output.jpeg_quality
  LoopChoice loop_mode = LoopChoice::kServerDefault;
  std::optional<Clock::time_point> deadline;  // the client's; absent: none
};

struct CompositeResponse {
  std::vector<std::string> frames;  // JPEG or packed RGB, request order
  std::vector<int> background_indices;
  int frame_width = 0;
  int frame_height = 0;
  bool raw_rgb = false;
  int gpu_id = -1;
  double inference_ms = 0;      // the model's Run
  double inference_rpc_ms = 0;  // the whole backend call (transport, queue, Run)
  double queue_wait_ms = 0;
  double audio_processing_ms = 0;
  double visual_input_ms = 0;  // building the visual input server-side
  double composite_ms = 0;     // paste-back + encode, wall
  double encode_ms = 0;        // summed over frames
  double total_ms = 0;
  bool loaded_on_demand = false;  // the avatar or the model was loaded for this call
  double model_load_ms = 0;       // avatar load + model load
  double avatar_load_ms = 0;      // the avatar's part of model_load_ms
};

struct CompositingHealth {
  bool healthy = false;
  int loaded_models = 0;
  int max_models = 0;
  std::string inference_server_url;
  bool inference_server_healthy = false;
  std::string version;
  int64_t inference_checked_unix_ms = 0;
  int inference_loaded_models = 0;
  int inference_gpu_count = 0;
  int64_t memory_bytes = 0;
  int64_t memory_limit_bytes = 0;
};

// What both servers know of one model; either part may be absent (e.g. an avatar
// without a loaded network).
struct ModelInfo {
  std::string model_id;
  std::optional<inference::ModelStats> inference;
  std::optional<avatar::AvatarStats> avatar;
};

struct ModelList {
  std::vector<ModelInfo> models;
  int loaded_models = 0;  // avatars loaded here
  int max_models = 0;
};

struct ModelLoadResult {
  double load_time_ms = 0;  // avatar + network
  bool already_loaded = false;
  ModelInfo model;
};

struct CompositingServerOptions {
  // Shown in Health and logs: the inference server's address ("in-process" for serve).
  std::string inference_label;
  // How long a Health probe result of the inference server is reused.
  std::chrono::milliseconds health_cache{1000};
  // The longest Health waits for the inference server's answer.
  std::chrono::milliseconds health_probe_timeout{1000};
  // Tests, fault injection: may change the avatar registry's options made from the
  // config before the registry is built (a clock, a slow-decode hook).
  std::function<void(avatar::AvatarRegistryOptions&)> adjust_avatars;
};

class CompositingServer {
 public:
  // INVALID_ARGUMENT for settings that cannot work (batch/quality ranges, timeouts).
  static Expected<std::unique_ptr<CompositingServer>> Create(
      const config::CompositingConfig& config, inference::InferenceBackend& backend,
      CompositingServerOptions options = {});
  ~CompositingServer();

  // Errors: INVALID_ARGUMENT (each field, saying what was expected), NOT_FOUND (no such
  // avatar or model), the avatar's load error naming the file, and the inference
  // backend's status unchanged (UNAVAILABLE when it cannot be reached, DEADLINE_EXCEEDED,
  // RESOURCE_EXHAUSTED, ...). UNAVAILABLE after Shutdown.
  Expected<CompositeResponse> InferBatchComposite(const CompositeRequest& request);

  // Never fails and never waits longer than health_probe_timeout for inference.
  CompositingHealth Health();

  // Model management on both servers. ListModels/GetModelStats merge the avatar
  // registry with the backend's view; a backend error is returned as is.
  Expected<ModelList> ListModels(bool include_available, int limit);
  // Loads the avatar and the network; fails (naming which side) if either fails.
  Expected<ModelLoadResult> LoadModel(const std::string& model_id, bool force_reload);
  // Unloads both; true if either was loaded.
  Expected<bool> UnloadModel(const std::string& model_id);
  // Empty id: every loaded avatar and model.
  Expected<std::vector<ModelInfo>> GetModelStats(const std::string& model_id);

  // Refuses new requests (UNAVAILABLE) and waits up to `grace` for those in flight.
  // Returns true if all finished. Idempotent.
  bool Shutdown(std::chrono::milliseconds grace);

  // A hint to the inference side that `model_id` is about to be used (its avatar is
  // being loaded): the model loads in the background meanwhile. Never fails or waits.
  void PrefetchModel(const std::string& model_id);
  // Prefetch hints since start by what the backend did with them (a remote inference
  // server: sent or dropped; in-process: queued, loading, already loaded or dropped), or
  // failed (refused, e.g. a malformed id). Metrics.
  struct PrefetchCounts {
    int64_t sent = 0, queued = 0, loading = 0, already_loaded = 0, dropped = 0, failed = 0;
  };
  PrefetchCounts prefetch_counts() const;

  avatar::AvatarRegistry& avatars() { return *avatars_; }
  const config::CompositingConfig& config() const { return config_; }
  size_t compositing_threads() const { return compositor_.threads(); }

 private:
  CompositingServer(const config::CompositingConfig& config, inference::InferenceBackend& backend,
                    CompositingServerOptions options);
  Status Validate(const CompositeRequest& request) const;
  Expected<CompositeResponse> Run(const CompositeRequest& request, Clock::time_point received);

  const config::CompositingConfig config_;
  inference::InferenceBackend& backend_;
  const CompositingServerOptions options_;
  std::unique_ptr<avatar::AvatarRegistry> avatars_;
  Compositor compositor_;

  // Cached probe of the inference server (see Health).
  std::mutex probe_mu_;
  bool probe_running_ = false;
  Clock::time_point probe_time_{};
  bool probe_valid_ = false;
  bool probe_healthy_ = false;
  int64_t probe_unix_ms_ = 0;
  int probe_loaded_models_ = 0;
  int probe_gpu_count_ = 0;

  std::atomic<bool> shutting_down_{false};
  // PrefetchCounts: one per inference::PrefetchResult, then failed.
  std::array<std::atomic<int64_t>, 6> prefetches_{};
  std::mutex in_flight_mu_;
  std::condition_variable in_flight_cv_;
  int in_flight_ = 0;
};

}  // namespace lipsync::compositing
