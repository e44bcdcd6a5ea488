// The set of models this server can serve and the subset loaded now: which ids
// exist (the `models:` map and <model_root>/<id>/checkpoint/model_best.onnx), lazy
// single-flight loading, capacity per device (count and bytes) with LRU/LFU
// eviction, an idle sweeper, remembered load failures, and atomic force-reload.
//
// A load outlives no request's deadline: a call with a deadline that has to load its
// model hands the load to a loader thread (RegistryOptions::load_workers) and waits for
// it, as every other caller of that id does, until its own deadline at most
// (DEADLINE_EXCEEDED; the load goes on and serves the next call). Every load ends as
// loaded or failed (a failure is remembered with backoff, whoever waited for it).
//
// Thread-safe (one mutex for the tables). Everything slow runs with it released: loads,
// stat calls and directory scans (List snapshots the table, then scans), and the
// destruction of evicted, unloaded or replaced sessions (freed after unlock). Device
// totals (count, bytes) are kept running, not re-summed, and each device keeps its
// loaded models in eviction order (LRU: last use; LFU: uses, then last use), so picking
// a victim is O(log n) plus the models in use it passes over, not a scan of all
// entries. A handle's release records its use without the lock; the order catches up
// when eviction meets it (a key lags, never leads). A ModelHandle pins
// its model: the model is never evicted, swept or destroyed while a handle lives.
// Unload and force-reload drop the registry's reference at once; handles already
// out keep the old OnnxModel alive (shared_ptr) until they are destroyed; a handle
// may even outlive the registry.
//
// Usage (for LFU and stats) counts Acquire calls; RecordRun adds frames and time.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/status.h"
#include "config/config.h"
#include "inference/api.h"
#include "inference/model_cache.h"
#include "inference/onnx_model.h"

namespace lipsync::inference {

struct RegistryOptions {
  int max_models = 1000;  // per device
  int64_t max_bytes = 0;  // per device, 0 = no cap
  config::EvictionPolicy policy = config::EvictionPolicy::kLfu;
  std::chrono::milliseconds idle_timeout{0};  // 0 = never unload idle models
  // A failed load is remembered for failed_retry, doubling per consecutive failure up
  // to failed_retry_max (capacity.failed_load_retry_seconds / _max_seconds).
  std::chrono::milliseconds failed_retry{30000};
  std::chrono::milliseconds failed_retry_max{600000};
  // A model (or audio encoder) file larger than this is a load error and is never
  // read (limits.max_model_file_mb). 0 = no limit.
  int64_t max_model_file_bytes = 0;
  std::vector<int> devices{-1};  // -1 = CPU, otherwise GPU ordinals
  // Device for a newly loaded model (gpus.assignment_strategy): the next in turn, or
  // the one holding the fewest model bytes (ties: fewest models).
  config::AssignmentStrategy placement = config::AssignmentStrategy::kRoundRobin;
  std::map<std::string, ModelFiles> configured;
  // <root>/<id>/checkpoint/model_best.onnx (+ audio_encoder.onnx beside it if present).
  std::string model_root;
  // Time source for backoff, idle sweeping and LRU (tests inject a fake clock).
  std::function<Clock::time_point()> now = [] { return Clock::now(); };
  // Loads one model (tests inject slow or throwing loaders). May throw: the registry
  // catches everything it throws. Default: OnnxModel::Load.
  std::function<Expected<std::shared_ptr<OnnxModel>>(const ModelFiles&, int device)> loader;
  // Optimized-graph cache the default loader uses (inference.model_cache_dir); null = none.
  std::shared_ptr<ModelCache> cache;
  // Test hook: called with the lock released right before each stat or directory scan
  // (tests block in it to prove the registry keeps answering meanwhile).
  std::function<void(const std::string& path)> on_file_access;
  // Background loads for Prefetch: worker threads (started on first use) and the
  // most hints that may wait for them.
  int prefetch_workers = 2;
  int prefetch_queue = 16;
  // Loads started by an Acquire or Load with a deadline run on up to this many loader
  // threads (started on first use; the destructor joins them); more wait their turn,
  // already LOADING. Without a deadline a load runs on the calling thread.
  int load_workers = 4;
};

// The registry's view of an inference.yaml: capacity (memory_gb_per_gpu applies to
// each device in `devices`, the CPU included), policy, timeouts, the `models:` map
// (audio_encoder_path defaults to audio_encoder.onnx beside model_path when that file
// exists) and model_root. `devices` comes from PlanExecution.
RegistryOptions RegistryOptionsFromConfig(const config::InferenceConfig& config,
                                          std::vector<int> devices);

namespace internal {
struct ModelSlot;
}

enum class PrefetchOutcome {
  kQueued,         // a background load will start (or has started)
  kAlreadyLoaded,  // nothing to do
  kLoading,        // a load (a request's or an earlier hint's) is already under way
  kDropped,        // the prefetch queue is full: the hint is ignored
};

class ModelHandle {
 public:
  ModelHandle() = default;
  ~ModelHandle();
  ModelHandle(ModelHandle&& other) noexcept;
  ModelHandle& operator=(ModelHandle&& other) noexcept;
  ModelHandle(const ModelHandle&) = delete;
  ModelHandle& operator=(const ModelHandle&) = delete;

  // Valid while the handle lives.
  const OnnxModel& model() const { return *model_; }
  const std::string& id() const;
  // The device the registry placed the model on (its requests run there).
  int device_id() const { return device_; }
  // True when this Acquire loaded the model or waited for a load already under way (a
  // prefetch's or another request's): the caller waited for the load either way, and
  // the registry counts it as a cache miss.
  bool loaded_now() const { return loaded_now_; }
  // True when loaded_now() and the load was begun by another caller.
  bool waited_for_load() const { return waited_for_load_; }
  // With loaded_now(): the load's time, or (waited_for_load()) the time this call
  // waited for it; 0 otherwise.
  double load_ms() const { return load_ms_; }
  // Usage stats for LFU and GetModelStats. Thread-safe.
  void RecordRun(int frames, double inference_ms);

 private:
  friend class ModelRegistry;
  void Release();
  std::shared_ptr<internal::ModelSlot> slot_;
  std::shared_ptr<const OnnxModel> model_;
  bool loaded_now_ = false;
  bool waited_for_load_ = false;
  double load_ms_ = 0;
  int device_ = -1;
};

class ModelRegistry {
 public:
  // Starts the idle sweeper thread when options.idle_timeout > 0. Requires
  // OrtRuntime::Initialize() before the first load.
  explicit ModelRegistry(RegistryOptions options);
  // Stops the sweeper and the background threads: loads under way finish (joined);
  // prefetch hints and deadline loads still waiting for a thread never start.
  ~ModelRegistry();
  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // Validates the id (INVALID_ARGUMENT before any path is built), loads it if needed
  // (one load per id however many callers arrive; the others wait for it), and pins it.
  // With a `deadline` (real Clock) every caller, the one that starts the load included,
  // waits until it at most: then DEADLINE_EXCEEDED naming the model and how long it has
  // been loading; the load goes on on a loader thread and a later call gets the model.
  // Without one, the caller that starts the load runs it on its own thread.
  // NOT_FOUND for unknown ids; a remembered load failure is returned as-is (same code,
  // "remembered" and the time to the next retry added) until its retry time;
  // RESOURCE_EXHAUSTED when the device is full of pinned models.
  Expected<ModelHandle> Acquire(const std::string& id,
                                std::optional<Clock::time_point> deadline = std::nullopt);
  // Loads (or, with force_reload, loads a fresh copy and swaps it in atomically; on
  // failure the old copy keeps serving and the error is returned). Loading an id
  // that failed recently retries immediately (an explicit operator request). Waiting
  // for a load (a first load with a deadline runs on a loader thread, as for Acquire)
  // or another reload of the id ends at `deadline` (DEADLINE_EXCEEDED). A force-reload
  // itself runs on the calling thread.
  Expected<LoadResult> Load(const std::string& id, bool force_reload,
                            std::optional<Clock::time_point> deadline = std::nullopt);
  // Drops the model from the registry; requests holding handles finish on it.
  // Returns whether it was loaded. NOT_FOUND for unknown ids.
  Expected<bool> Unload(const std::string& id);

  // Loaded models first (most recently used first), then, with include_available,
  // known-but-unloaded ones by id: the registry's other entries, and the directories
  // under model_root named as valid ids, from one directory scan (lock released) with
  // no look at their files (with 11,000 tenants, checking each one's files took
  // 0.6-0.8 s). Their files are checked at load: a directory without a model is
  // NOT_FOUND then, a model file symlinked out of model_root PERMISSION_DENIED. A
  // tenant directory that is itself a symlink is not offered (it may leave model_root;
  // its d_type tells, no stat); one inside model_root still loads when asked for by id.
  // An available entry's has_audio_encoder is false until it is loaded. limit <= 0:
  // no limit.
  std::vector<ModelStats> List(bool include_available, int limit) const;
  Expected<ModelStats> Stats(const std::string& id) const;
  std::vector<ModelStats> AllLoadedStats() const;

  int loaded_count() const;
  int loaded_count(int device) const;
  int64_t loaded_bytes(int device) const;
  // Number of loader (OnnxModel::Load) calls made so far (successful or not); files
  // refused before reading (size, path) are not counted.
  int64_t load_attempts() const;
  // Loads, failures, evictions and idle unloads since start (metrics).
  ModelCounters counters() const;
  const RegistryOptions& options() const { return options_; }

  // Loads each id (stops at the first failure and returns it).
  Status Preload(const std::vector<std::string>& ids);
  // Unloads models unused for idle_timeout now (the sweeper does this periodically).
  void SweepIdleNow();

  // A hint that a request for `id` is coming (the compositing server touched the
  // tenant's avatar): queues a background load and returns at once, never waiting for
  // a load, a file or a held lock. At most options.prefetch_workers loads run at once
  // and options.prefetch_queue wait; beyond that the hint is dropped. A remembered
  // load failure is respected as by Acquire; prefetching is not use (no LFU count).
  // INVALID_ARGUMENT for a malformed id; an unknown id is found out (and dropped) in
  // the background.
  Expected<PrefetchOutcome> Prefetch(const std::string& id);
  // Prefetch hints queued and dropped so far.
  int64_t prefetches_queued() const;
  int64_t prefetches_dropped() const;

 private:
  struct Impl;
  RegistryOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lipsync::inference
