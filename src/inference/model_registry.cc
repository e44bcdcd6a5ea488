#include "inference/model_registry.h"

#include <algorithm>
#include <atomic>
#include <filesystem>

#include "common/log.h"
#include "common/model_id.h"

namespace lipsync::inference {

namespace internal {
// Per loaded instance of a model: its pins and usage counters. Shared with the
// handles so they can unpin and record usage without the registry lock.
struct ModelSlot {
  explicit ModelSlot(std::string model_id) : id(std::move(model_id)) {}
  const std::string id;
  std::atomic<int> pins{0};
  std::atomic<int64_t> usage_count{0};
  std::atomic<int64_t> last_used_steady_ns{0};
  std::atomic<int64_t> last_used_unix_ms{0};
  std::mutex run_mu;  // guards the two run counters below
  int64_t frames = 0;
  int64_t runs = 0;
  double inference_ms_total = 0;

  void Touch() {
    last_used_steady_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
            .count();
    last_used_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
  }
};
}  // namespace internal

namespace {

namespace fs = std::filesystem;
using internal::ModelSlot;
using ModelPtr = std::shared_ptr<const OnnxModel>;

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

bool IsFile(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

std::string RootModelPath(const std::string& root, const std::string& id) {
  return (fs::path(root) / id / "checkpoint" / "model_best.onnx").string();
}

std::string EncoderBeside(const std::string& model_path) {
  std::string path = (fs::path(model_path).parent_path() / "audio_encoder.onnx").string();
  return IsFile(path) ? path : "";
}

}  // namespace

struct ModelRegistry::Impl {
  struct Entry {
    std::string id;
    ModelFiles files;
    ModelPtr model;                   // set while loaded
    std::shared_ptr<ModelSlot> slot;  // set while loaded
    int device = kCpu;
    int64_t bytes = 0;                // measured footprint of `model`
    int64_t last_measured_bytes = 0;  // kept across unloads: the next load's estimate
    double load_ms = 0;
    int64_t loaded_at_unix_ms = 0;
    bool loading = false;    // first load in flight (others wait on `changed`)
    bool reloading = false;  // force-reload in flight (old copy keeps serving)
    Status failure;          // last load failure, remembered for failed_retry
    Clock::time_point failed_at;
  };
  static constexpr int kCpu = -1;

  const RegistryOptions& options;
  mutable std::mutex mu;
  std::condition_variable changed;  // a load or reload finished
  std::map<std::string, Entry> entries;
  std::atomic<int64_t> load_attempts{0};
  size_t next_device = 0;  // round-robin placement, guarded by mu

  std::mutex sweeper_mu;
  std::condition_variable sweeper_cv;
  bool stopping = false;
  std::thread sweeper;

  explicit Impl(const RegistryOptions& opts) : options(opts) {
    for (const auto& [id, files] : options.configured) {
      Entry& e = entries[id];
      e.id = id;
      e.files = files;
    }
  }

  // Known id -> its entry (creating one for a model_root id seen for the first time).
  Expected<Entry*> FindLocked(const std::string& id) {
    LIPSYNC_RETURN_IF_ERROR(ValidateModelId(id));
    auto it = entries.find(id);
    if (it != entries.end()) return &it->second;
    if (!options.model_root.empty()) {
      std::string path = RootModelPath(options.model_root, id);
      if (IsFile(path)) {
        Entry& e = entries[id];
        e.id = id;
        e.files.model_path = path;
        e.files.audio_encoder_path = EncoderBeside(path);
        return &e;
      }
    }
    return Status::NotFound("model '" + id + "' not found: not in models: and no " +
                            (options.model_root.empty() ? std::string("model_root configured")
                                                        : RootModelPath(options.model_root, id)));
  }

  int CountOn(int device, bool include_loading) const {
    int n = 0;
    for (const auto& [id, e] : entries) {
      if (e.device == device && (e.model || (include_loading && e.loading))) ++n;
    }
    return n;
  }

  int64_t BytesOn(int device) const {
    int64_t n = 0;
    for (const auto& [id, e] : entries)
      if (e.model && e.device == device) n += e.bytes;
    return n;
  }

  int PickDevice() {
    if (options.devices.empty()) return kCpu;
    if (options.placement == config::AssignmentStrategy::kRoundRobin) {
      return options.devices[next_device++ % options.devices.size()];
    }
    int best = options.devices.front();
    int64_t best_bytes = -1;
    int best_count = 0;
    for (int d : options.devices) {
      int64_t b = BytesOn(d);
      int c = CountOn(d, true);
      if (best_bytes < 0 || b < best_bytes || (b == best_bytes && c < best_count)) {
        best = d;
        best_bytes = b;
        best_count = c;
      }
    }
    return best;
  }

  // The model on `device` that the policy would drop first, among those nobody holds.
  Entry* PickVictimLocked(int device, const Entry* exclude) {
    Entry* victim = nullptr;
    for (auto& [id, e] : entries) {
      if (&e == exclude || !e.model || e.device != device || e.reloading) continue;
      if (e.slot->pins.load() > 0) continue;
      if (!victim) {
        victim = &e;
        continue;
      }
      int64_t used = e.slot->last_used_steady_ns, victim_used = victim->slot->last_used_steady_ns;
      if (options.policy == config::EvictionPolicy::kLfu) {
        int64_t u = e.slot->usage_count, vu = victim->slot->usage_count;
        if (u < vu || (u == vu && used < victim_used)) victim = &e;
      } else if (used < victim_used) {
        victim = &e;
      }
    }
    return victim;
  }

  // Drops the registry's reference; the OnnxModel dies in `dead` (outside the lock)
  // or with its last handle.
  void UnloadLocked(Entry& e, std::vector<ModelPtr>* dead, const char* why) {
    LOG_INFO("unloading model '%s' from device %d (%s, %lld bytes)", e.id.c_str(), e.device, why,
             static_cast<long long>(e.bytes));
    dead->push_back(std::move(e.model));
    e.model.reset();
    e.slot.reset();
    e.bytes = 0;
  }

  Status EvictForCountLocked(int device, const Entry* self, std::vector<ModelPtr>* dead) {
    while (CountOn(device, true) >= options.max_models + (self->loading ? 1 : 0)) {
      Entry* victim = PickVictimLocked(device, self);
      if (!victim) {
        return Status::ResourceExhausted(
            "cannot load model '" + self->id + "' on device " + std::to_string(device) + ": " +
            std::to_string(CountOn(device, false)) + " models are loaded and in use (limit " +
            std::to_string(options.max_models) +
            " per device, max_models_per_gpu); retry when requests finish");
      }
      UnloadLocked(*victim, dead, "evicted: model count cap");
    }
    return Status::Ok();
  }

  // Frees bytes for `need` more on `device`. With `must`, failing to is an error;
  // without, it evicts what it can (pre-load, when `need` is only an estimate).
  Status EvictForBytesLocked(int device, int64_t need, const Entry* self, bool must,
                             std::vector<ModelPtr>* dead) {
    if (options.max_bytes <= 0) return Status::Ok();
    while (BytesOn(device) + need > options.max_bytes) {
      Entry* victim = PickVictimLocked(device, self);
      if (!victim) {
        if (!must) return Status::Ok();
        return Status::ResourceExhausted(
            "cannot load model '" + self->id + "' on device " + std::to_string(device) +
            ": it needs " + std::to_string(need) + " bytes, " + std::to_string(BytesOn(device)) +
            " of the " + std::to_string(options.max_bytes) +
            " byte cap (memory_gb_per_gpu) are held by models in use; retry when requests "
            "finish");
      }
      UnloadLocked(*victim, dead, "evicted: memory cap");
    }
    return Status::Ok();
  }

  bool FailureFresh(const Entry& e) const {
    return !e.failure.ok() && Clock::now() - e.failed_at < options.failed_retry;
  }

  // Makes sure `e` is loaded. Returns whether this call did the load. The lock is
  // released while ORT loads; `e` stays valid (entries are never erased).
  Expected<bool> EnsureLoadedLocked(std::unique_lock<std::mutex>& lock, Entry& e,
                                    bool explicit_load, std::vector<ModelPtr>* dead) {
    while (!e.model && e.loading) changed.wait(lock);
    if (e.model) return false;
    if (!explicit_load && FailureFresh(e)) {
      auto left = std::chrono::duration_cast<std::chrono::seconds>(options.failed_retry -
                                                                   (Clock::now() - e.failed_at));
      return Status(e.failure.code(), e.failure.message() +
                                          " (load failure remembered; next retry in " +
                                          std::to_string(left.count() + 1) + " s)");
    }
    e.loading = true;
    e.device = PickDevice();
    const int device = e.device;
    auto finish = [&] {
      e.loading = false;
      changed.notify_all();
    };
    if (Status st = EvictForCountLocked(device, &e, dead); !st.ok()) {
      finish();
      return st;
    }
    int64_t estimate = e.last_measured_bytes;
    if (estimate <= 0) {
      std::error_code ec;
      auto size = fs::file_size(e.files.model_path, ec);
      estimate = ec ? 0 : static_cast<int64_t>(static_cast<double>(size) * 1.2);
    }
    (void)EvictForBytesLocked(device, estimate, &e, /*must=*/false, dead);

    const ModelFiles files = e.files;
    lock.unlock();
    dead->clear();  // evicted sessions are freed before the new one is created
    const auto start = Clock::now();
    ++load_attempts;
    auto loaded = OnnxModel::Load(files, device);
    const double ms = MsSince(start);
    lock.lock();

    if (!loaded.ok()) {
      e.failure = loaded.status().WithContext("loading model '" + e.id + "'");
      e.failed_at = Clock::now();
      LOG_ERROR("%s", e.failure.ToString().c_str());
      finish();
      return e.failure;
    }
    ModelPtr model = std::move(*loaded);
    e.last_measured_bytes = model->memory_bytes();
    if (Status st = EvictForBytesLocked(device, model->memory_bytes(), &e, /*must=*/true, dead);
        !st.ok()) {
      dead->push_back(std::move(model));
      finish();
      return st;
    }
    e.model = std::move(model);
    e.slot = std::make_shared<ModelSlot>(e.id);
    e.slot->Touch();
    e.bytes = e.model->memory_bytes();
    e.load_ms = ms;
    e.loaded_at_unix_ms = NowUnixMs();
    e.failure = Status::Ok();
    LOG_INFO("loaded model '%s' on device %d in %.1f ms (%lld bytes%s)", e.id.c_str(), device, ms,
             static_cast<long long>(e.bytes),
             e.model->has_audio_encoder() ? ", audio encoder" : "");
    finish();
    return true;
  }

  ModelStats StatsLocked(const Entry& e) const {
    ModelStats s;
    s.model_id = e.id;
    s.model_path = e.files.model_path;
    s.device_id = e.device;
    s.state = e.model           ? ModelState::kReady
              : e.loading       ? ModelState::kLoading
              : !e.failure.ok() ? ModelState::kFailed
                                : ModelState::kAvailable;
    s.error = e.failure.ok() ? "" : e.failure.message();
    s.has_audio_encoder = !e.files.audio_encoder_path.empty();
    if (e.model) {
      s.load_time_ms = e.load_ms;
      s.memory_bytes = e.bytes;
      s.loaded_at_unix_ms = e.loaded_at_unix_ms;
      s.has_audio_encoder = e.model->has_audio_encoder();
    }
    if (e.slot) {
      s.usage_count = e.slot->usage_count;
      s.last_used_unix_ms = e.slot->last_used_unix_ms;
      s.in_flight = e.slot->pins;
      std::lock_guard<std::mutex> run_lock(e.slot->run_mu);
      s.frames_processed = e.slot->frames;
      s.avg_inference_ms = e.slot->runs ? e.slot->inference_ms_total / e.slot->runs : 0;
    }
    return s;
  }

  void SweeperLoop() {
    const auto period = std::clamp<std::chrono::milliseconds>(
        options.idle_timeout / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(30000));
    std::unique_lock<std::mutex> lock(sweeper_mu);
    while (!sweeper_cv.wait_for(lock, period, [&] { return stopping; })) {
      lock.unlock();
      Sweep();
      lock.lock();
    }
  }

  void Sweep() {
    if (options.idle_timeout.count() <= 0) return;
    std::vector<ModelPtr> dead;
    std::lock_guard<std::mutex> lock(mu);
    const int64_t now_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
            .count();
    const int64_t idle_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(options.idle_timeout).count();
    for (auto& [id, e] : entries) {
      if (!e.model || e.reloading || e.slot->pins.load() > 0) continue;
      if (now_ns - e.slot->last_used_steady_ns.load() >= idle_ns) {
        UnloadLocked(e, &dead, "idle longer than idle_timeout");
      }
    }
    // `dead` is destroyed after the lock_guard (declared first, destroyed last).
  }
};

// ---------------------------------------------------------------- ModelHandle

ModelHandle::~ModelHandle() { Release(); }

ModelHandle::ModelHandle(ModelHandle&& other) noexcept
    : slot_(std::move(other.slot_)),
      model_(std::move(other.model_)),
      loaded_now_(other.loaded_now_),
      load_ms_(other.load_ms_) {}

ModelHandle& ModelHandle::operator=(ModelHandle&& other) noexcept {
  if (this != &other) {
    Release();
    slot_ = std::move(other.slot_);
    model_ = std::move(other.model_);
    loaded_now_ = other.loaded_now_;
    load_ms_ = other.load_ms_;
  }
  return *this;
}

const std::string& ModelHandle::id() const { return slot_->id; }

void ModelHandle::RecordRun(int frames, double inference_ms) {
  if (!slot_) return;
  std::lock_guard<std::mutex> lock(slot_->run_mu);
  slot_->frames += frames;
  slot_->runs += 1;
  slot_->inference_ms_total += inference_ms;
}

void ModelHandle::Release() {
  if (!slot_) return;
  // A long request counts as use until it ends, not just when it started.
  slot_->Touch();
  slot_->pins.fetch_sub(1);
  slot_.reset();
  model_.reset();
}

// -------------------------------------------------------------- ModelRegistry

ModelRegistry::ModelRegistry(RegistryOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(options_)) {
  if (options_.devices.empty()) options_.devices = {-1};
  if (options_.idle_timeout.count() > 0) {
    impl_->sweeper = std::thread([this] { impl_->SweeperLoop(); });
  }
}

ModelRegistry::~ModelRegistry() {
  {
    std::lock_guard<std::mutex> lock(impl_->sweeper_mu);
    impl_->stopping = true;
  }
  impl_->sweeper_cv.notify_all();
  if (impl_->sweeper.joinable()) impl_->sweeper.join();
}

Expected<ModelHandle> ModelRegistry::Acquire(const std::string& id) {
  std::vector<ModelPtr> dead;  // destroyed after the lock is released
  std::unique_lock<std::mutex> lock(impl_->mu);
  LIPSYNC_ASSIGN_OR_RETURN(Impl::Entry * entry, impl_->FindLocked(id));
  LIPSYNC_ASSIGN_OR_RETURN(bool loaded_now,
                           impl_->EnsureLoadedLocked(lock, *entry, /*explicit_load=*/false, &dead));
  ModelHandle handle;
  handle.slot_ = entry->slot;
  handle.model_ = entry->model;
  handle.loaded_now_ = loaded_now;
  handle.load_ms_ = loaded_now ? entry->load_ms : 0;
  entry->slot->pins.fetch_add(1);
  entry->slot->usage_count.fetch_add(1);
  entry->slot->Touch();
  lock.unlock();
  return handle;
}

Expected<LoadResult> ModelRegistry::Load(const std::string& id, bool force_reload) {
  std::vector<ModelPtr> dead;
  std::unique_lock<std::mutex> lock(impl_->mu);
  LIPSYNC_ASSIGN_OR_RETURN(Impl::Entry * found, impl_->FindLocked(id));
  Impl::Entry& e = *found;
  while (e.reloading || e.loading) impl_->changed.wait(lock);
  LoadResult result;
  if (!force_reload || !e.model) {
    LIPSYNC_ASSIGN_OR_RETURN(bool loaded_now,
                             impl_->EnsureLoadedLocked(lock, e, /*explicit_load=*/true, &dead));
    result.already_loaded = !loaded_now;
    result.load_time_ms = e.load_ms;
    result.stats = impl_->StatsLocked(e);
    return result;
  }

  // Force reload: the old copy serves until the new one is ready, then one swap.
  e.reloading = true;
  if (!impl_->options.model_root.empty() && !impl_->options.configured.count(id)) {
    e.files.audio_encoder_path = EncoderBeside(e.files.model_path);
  }
  const ModelFiles files = e.files;
  const int device = e.device;
  lock.unlock();
  const auto start = Clock::now();
  ++impl_->load_attempts;
  auto loaded = OnnxModel::Load(files, device);
  const double ms = MsSince(start);
  lock.lock();
  e.reloading = false;
  impl_->changed.notify_all();
  if (!loaded.ok()) {
    Status st = loaded.status().WithContext("reloading model '" + id +
                                            "' failed; the previous version keeps serving");
    LOG_ERROR("%s", st.ToString().c_str());
    return st;
  }
  ModelPtr model = std::move(*loaded);
  if (e.model) dead.push_back(std::move(e.model));
  if (!e.slot) {
    e.slot = std::make_shared<internal::ModelSlot>(e.id);
    e.slot->Touch();
  }
  e.device = device;
  e.model = std::move(model);
  e.bytes = e.model->memory_bytes();
  e.last_measured_bytes = e.bytes;
  e.load_ms = ms;
  e.loaded_at_unix_ms = NowUnixMs();
  e.failure = Status::Ok();
  LOG_INFO("reloaded model '%s' on device %d in %.1f ms (%lld bytes)", id.c_str(), device, ms,
           static_cast<long long>(e.bytes));
  // Over the byte cap now? Make room by evicting others; never fail a good reload.
  (void)impl_->EvictForBytesLocked(device, 0, &e, /*must=*/false, &dead);
  result.already_loaded = false;
  result.load_time_ms = ms;
  result.stats = impl_->StatsLocked(e);
  return result;
}

Expected<bool> ModelRegistry::Unload(const std::string& id) {
  std::vector<ModelPtr> dead;
  std::unique_lock<std::mutex> lock(impl_->mu);
  LIPSYNC_ASSIGN_OR_RETURN(Impl::Entry * found, impl_->FindLocked(id));
  Impl::Entry& e = *found;
  while (e.loading || e.reloading) impl_->changed.wait(lock);
  e.failure = Status::Ok();
  if (!e.model) return false;
  impl_->UnloadLocked(e, &dead, "UnloadModel");
  return true;
}

std::vector<ModelStats> ModelRegistry::List(bool include_available, int limit) const {
  std::vector<ModelStats> loaded, others;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (const auto& [id, e] : impl_->entries) {
      if (e.model)
        loaded.push_back(impl_->StatsLocked(e));
      else if (include_available)
        others.push_back(impl_->StatsLocked(e));
    }
    if (include_available && !options_.model_root.empty()) {
      std::error_code ec;
      for (const auto& dir : fs::directory_iterator(options_.model_root, ec)) {
        std::string id = dir.path().filename().string();
        if (impl_->entries.count(id) || !ValidateModelId(id).ok()) continue;
        std::string path = RootModelPath(options_.model_root, id);
        if (!IsFile(path)) continue;
        ModelStats s;
        s.model_id = id;
        s.model_path = path;
        s.state = ModelState::kAvailable;
        s.has_audio_encoder = !EncoderBeside(path).empty();
        others.push_back(std::move(s));
      }
    }
  }
  std::sort(loaded.begin(), loaded.end(), [](const ModelStats& a, const ModelStats& b) {
    return a.last_used_unix_ms > b.last_used_unix_ms;
  });
  std::sort(others.begin(), others.end(),
            [](const ModelStats& a, const ModelStats& b) { return a.model_id < b.model_id; });
  loaded.insert(loaded.end(), others.begin(), others.end());
  if (limit > 0 && static_cast<int>(loaded.size()) > limit) loaded.resize(limit);
  return loaded;
}

Expected<ModelStats> ModelRegistry::Stats(const std::string& id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  LIPSYNC_ASSIGN_OR_RETURN(Impl::Entry * e, impl_->FindLocked(id));
  return impl_->StatsLocked(*e);
}

std::vector<ModelStats> ModelRegistry::AllLoadedStats() const { return List(false, 0); }

int ModelRegistry::loaded_count() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  int n = 0;
  for (const auto& [id, e] : impl_->entries) n += e.model ? 1 : 0;
  return n;
}

int ModelRegistry::loaded_count(int device) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->CountOn(device, false);
}

int64_t ModelRegistry::loaded_bytes(int device) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->BytesOn(device);
}

int64_t ModelRegistry::load_attempts() const { return impl_->load_attempts; }

Status ModelRegistry::Preload(const std::vector<std::string>& ids) {
  for (const auto& id : ids) {
    auto result = Load(id, false);
    if (!result.ok()) return result.status();
  }
  return Status::Ok();
}

void ModelRegistry::SweepIdleNow() { impl_->Sweep(); }

RegistryOptions RegistryOptionsFromConfig(const config::InferenceConfig& config,
                                          std::vector<int> devices) {
  RegistryOptions o;
  o.max_models = config.capacity.max_models_per_gpu;
  o.max_bytes = static_cast<int64_t>(config.gpus.memory_gb_per_gpu * 1024.0 * 1024.0 * 1024.0);
  o.policy = config.capacity.eviction_policy;
  o.placement = config.gpus.assignment_strategy;
  o.idle_timeout = std::chrono::milliseconds(
      static_cast<int64_t>(config.capacity.idle_timeout_minutes * 60.0 * 1000.0));
  o.failed_retry = std::chrono::milliseconds(
      static_cast<int64_t>(config.capacity.failed_load_retry_seconds * 1000.0));
  o.devices = devices.empty() ? std::vector<int>{-1} : std::move(devices);
  for (const auto& [id, entry] : config.models) {
    ModelFiles files;
    files.model_path = entry.model_path;
    files.audio_encoder_path = entry.audio_encoder_path.empty() ? EncoderBeside(entry.model_path)
                                                                : entry.audio_encoder_path;
    o.configured[id] = files;
  }
  o.model_root = config.model_root;
  return o;
}

}  // namespace lipsync::inference
