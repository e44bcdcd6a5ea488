// The inference domain's request/response types and the InferenceBackend interface.
// The compositing side talks to inference only through InferenceBackend: over gRPC
// (rpc/grpc_inference_backend) in the split deployment, or in-process with no
// serialization (`lipsync serve`). No gRPC types here.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace lipsync::inference {

using Clock = std::chrono::steady_clock;

// Per-frame audio feature size: one [32,16,16] float tensor.
inline constexpr int kAudioFeatureFloats = 32 * 16 * 16;

enum class OutputFormat { kFloat32 = 0, kUint8 = 1 };
// kUint8: one byte per value, the server uses v / 255.0f (bit-identical to the float
// form of a pixel), 4x fewer bytes between the servers.
enum class VisualFormat { kFloat32 = 0, kUint8 = 1 };

struct InferRequest {
  std::string model_id;
  int batch_size = 0;
  // Views of caller-owned bytes that stay valid for the whole call (e.g. the gRPC
  // request message): no copies on the way in.
  std::string_view visual_frames;  // [B,6,H,W], float32 LE or uint8 (visual_format)
  VisualFormat visual_format = VisualFormat::kFloat32;
  std::string_view audio_features;  // float32 LE, B*8192 or 8192 floats
  std::string_view raw_audio;       // s16le mono (docs/AUDIO.md)
  int sample_rate = 16000;
  int start_frame_idx = 0;
  int utterance_frames = 0;
  bool end_of_utterance = false;
  OutputFormat output_format = OutputFormat::kFloat32;
  // Absent: no deadline.
  std::optional<Clock::time_point> deadline;
};

struct InferResult {
  std::string output;  // [B,3,H,W] BGR planar in `output_format`
  int batch_size = 0;
  int height = 0;
  int width = 0;
  OutputFormat output_format = OutputFormat::kFloat32;
  int device_id = -1;  // -1: CPU provider
  int worker_id = -1;
  double inference_ms = 0;
  double queue_wait_ms = 0;
  double total_ms = 0;
  bool loaded_on_demand = false;
  double model_load_ms = 0;
  double audio_processing_ms = 0;
  int dynamic_batch_frames = 0;
};

enum class ModelState { kAvailable = 1, kLoading = 2, kReady = 3, kFailed = 4 };

struct ModelStats {
  std::string model_id;
  ModelState state = ModelState::kAvailable;
  std::string model_path;
  int device_id = -1;
  int64_t usage_count = 0;
  int64_t last_used_unix_ms = 0;
  double load_time_ms = 0;
  int64_t memory_bytes = 0;
  double avg_inference_ms = 0;
  int64_t frames_processed = 0;
  std::string error;
  int64_t loaded_at_unix_ms = 0;
  bool has_audio_encoder = false;
  int in_flight = 0;
};

struct GpuStatus {
  int device_id = 0;
  std::string name;
  int64_t memory_used_mb = 0;
  int64_t memory_total_mb = 0;
  int utilization_percent = -1;  // NVML: time a kernel ran, last sample period; -1: unknown
  int loaded_models = 0;
  int active_requests = 0;
};

// The model registry's counts since start (metrics).
struct ModelCounters {
  int64_t loads = 0;          // successful loads and reloads
  int64_t load_failures = 0;  // failed loads and reloads
  int64_t evictions = 0;      // unloaded to make room (model count or memory cap)
  int64_t idle_unloads = 0;   // unloaded after idle_timeout
  double load_seconds = 0;    // summed over successful loads
  int64_t cache_hits = 0;     // requests (Acquire) that found their model loaded
  int64_t cache_misses = 0;   // requests that had to load it (or wait for its load)
  // Prefetch hints that queued a background load / were dropped (the queue was full).
  int64_t prefetches_queued = 0;
  int64_t prefetches_dropped = 0;
};

struct HealthInfo {
  bool healthy = false;
  int loaded_models = 0;
  int max_models = 0;
  int gpu_count = 0;
  std::string version;
  bool cuda_available = false;
  std::vector<GpuStatus> gpus;
  std::string execution_provider;
  int queue_depth = 0;
  int queue_capacity = 0;
  std::string onnxruntime_version;
  ModelCounters model_counters;  // local servers only (zero over gRPC)
};

// What a prefetch hint did (see InferenceBackend::PrefetchModel).
enum class PrefetchResult {
  kQueued,         // a background load will start (or has started)
  kAlreadyLoaded,  // nothing to do
  kLoading,        // a load is already under way
  kDropped,        // the prefetch queue is full: the hint is ignored
  kSent,           // remote: the hint is on its way (its answer is not waited for)
};

struct LoadResult {
  double load_time_ms = 0;
  bool already_loaded = false;
  ModelStats stats;
};

// Implementations are thread-safe.
class InferenceBackend {
 public:
  virtual ~InferenceBackend() = default;
  // One batched Run. Errors: INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
  // RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, UNAVAILABLE, INTERNAL.
  virtual Expected<InferResult> Infer(const InferRequest& request) = 0;
  virtual Expected<HealthInfo> Health(std::optional<Clock::time_point> deadline) = 0;
  virtual Expected<std::vector<ModelStats>> ListModels(bool include_available, int limit) = 0;
  virtual Expected<LoadResult> LoadModel(const std::string& model_id, bool force_reload) = 0;
  // Returns whether it was loaded.
  virtual Expected<bool> UnloadModel(const std::string& model_id) = 0;
  // Empty id: all loaded models.
  virtual Expected<std::vector<ModelStats>> GetModelStats(const std::string& model_id) = 0;
  // A hint that requests for `model_id` are coming: starts loading it in the
  // background and returns at once, never waiting for the load (nor, remotely, for the
  // answer). Callers ignore its errors: a hint never fails a request. Default: no-op.
  virtual Expected<PrefetchResult> PrefetchModel(const std::string& model_id) {
    (void)model_id;
    return PrefetchResult::kDropped;
  }
};

}  // namespace lipsync::inference
