#include "inference/model_registry.h"

#include <dirent.h>
#include <fcntl.h>
#include <onnxruntime_cxx_api.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <new>
#include <set>
#include <system_error>

#include "common/log.h"
#include "common/model_id.h"
#include "inference/model_cache.h"

namespace lipsync::inference {

namespace internal {
// Per loaded instance of a model: its pins and usage counters. Shared with the
// handles so they can unpin and record usage without the registry lock.
struct ModelSlot {
  ModelSlot(std::string model_id, std::function<Clock::time_point()> clock)
      : id(std::move(model_id)), now(std::move(clock)) {}
  const std::string id;
  const std::function<Clock::time_point()> now;  // the registry's clock (a copy)
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
        std::chrono::duration_cast<std::chrono::nanoseconds>(now().time_since_epoch()).count();
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

// Calls the test hook (RegistryOptions::on_file_access) before a file-system access.
void Touching(const RegistryOptions& options, const std::string& path) {
  if (options.on_file_access) options.on_file_access(path);
}

std::string RootModelPath(const std::string& root, const std::string& id) {
  return (fs::path(root) / id / "checkpoint" / "model_best.onnx").string();
}

std::string EncoderBeside(const std::string& model_path) {
  std::string path = (fs::path(model_path).parent_path() / "audio_encoder.onnx").string();
  return IsFile(path) ? path : "";
}

// Untrusted text (a symlink target, an exception's message) quoted for an error
// message: at most `max` bytes, control characters replaced, marked when cut.
std::string Quoted(std::string_view text, size_t max = 200) {
  std::string out = "'";
  for (size_t i = 0; i < text.size() && i < max; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
  }
  out += '\'';
  if (text.size() > max) out += " (" + std::to_string(text.size() - max) + " more bytes cut)";
  return out;
}

std::string SecondsText(Clock::duration d) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return std::to_string((std::max<int64_t>(ms, 0) + 999) / 1000) + " s";
}

// The real path of `path` (symlinks resolved). For a model found under model_root it
// must stay under the real model_root: a tenant directory (or file) symlinked out of
// it is PERMISSION_DENIED.
Expected<std::string> ResolveModelFile(const std::string& id, const std::string& path,
                                       const std::string& model_root, bool from_root) {
  std::error_code ec;
  const fs::path real = fs::canonical(path, ec);
  if (ec) {
    return Status::NotFound("model file '" + path + "' does not exist or cannot be resolved (" +
                            ec.message() + "); expected an .onnx file");
  }
  if (from_root) {
    const fs::path root = fs::canonical(model_root, ec);
    if (ec) {
      return Status::FailedPrecondition("model_root '" + model_root +
                                        "' cannot be resolved: " + ec.message());
    }
    auto [r, p] = std::mismatch(root.begin(), root.end(), real.begin(), real.end());
    if (r != root.end()) {
      return Status::PermissionDenied(
          "model '" + id + "': '" + path + "' resolves to " + Quoted(real.string()) +
          ", outside model_root '" + root.string() +
          "' (a symlink out of the tenant directory); refusing to load it");
    }
  }
  if (!fs::is_regular_file(real, ec)) {
    return Status::FailedPrecondition("model file '" + path +
                                      "' is not a regular file; expected an .onnx file");
  }
  return real.string();
}

// A file over `limit` bytes is refused before anything reads it.
Status CheckFileSize(const std::string& path, int64_t limit) {
  if (limit <= 0) return Status::Ok();
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec)
    return Status::NotFound("cannot read the size of model file '" + path + "': " + ec.message());
  if (static_cast<uint64_t>(limit) >= size) return Status::Ok();
  return Status::FailedPrecondition("model file '" + path + "' is " + std::to_string(size) +
                                    " bytes, over the limit of " + std::to_string(limit) +
                                    " bytes (limits.max_model_file_mb); it was not read");
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
    bool from_root = false;           // found under model_root: its real path must stay inside
    bool loading = false;             // first load in flight (others wait on `changed`)
    bool reloading = false;           // force-reload in flight (old copy keeps serving)
    Clock::time_point loading_since;  // real time, for waiters' messages
    Status failure;                   // last load failure, remembered until retry_at
    int consecutive_failures = 0;
    Clock::time_point retry_at;  // options.now time
    // Where the entry is filed in its device's eviction order (VictimKey), while loaded.
    bool indexed = false;
    int64_t key_first = 0;
    int64_t key_second = 0;
  };

  // A loaded model's place in its device's eviction order: the policy's figures as they
  // were when it was last filed, then the id. Acquire (under the lock) refiles the model
  // it pins; a handle's release touches the use time without the lock, so a key may lag
  // behind its model's figures, never ahead of them (they only grow): PickVictimLocked
  // refiles such a key when it meets it, and the first up-to-date unpinned key is the
  // policy's victim.
  struct VictimKey {
    int64_t first = 0;   // LRU: last use (steady ns); LFU: use count
    int64_t second = 0;  // LFU: last use; LRU: 0
    Entry* entry = nullptr;
    bool operator<(const VictimKey& o) const {
      if (first != o.first) return first < o.first;
      if (second != o.second) return second < o.second;
      return entry->id < o.entry->id;
    }
  };

  // Outcome of one background load, shared by its loader thread and the call that
  // started it (which may stop waiting at its deadline). Guarded by mu.
  struct LoadTicket {
    bool done = false;
    Status status;
  };
  struct LoadTask {
    Entry* entry = nullptr;
    std::shared_ptr<LoadTicket> ticket;
  };

  // Clears a loading/reloading mark on every path out of a load (early return or
  // exception), relocking if needed, and wakes the waiters. A first load left by an
  // exception is recorded as failed, so the model never stays LOADING.
  struct LoadingGuard {
    Impl& impl;
    Entry& e;
    std::unique_lock<std::mutex>& lock;
    bool* flag;
    const int exceptions_before = std::uncaught_exceptions();
    ~LoadingGuard() {
      if (!lock.owns_lock()) lock.lock();
      if (std::uncaught_exceptions() > exceptions_before && flag == &e.loading && !e.model) {
        impl.RecordFailureLocked(
            e, Status::Internal("loading model '" + e.id + "' ended without a result"));
      }
      if (flag == &e.loading)
        impl.SetLoadingLocked(e, false);
      else
        *flag = false;
      impl.changed.notify_all();
    }
  };
  static constexpr int kCpu = -1;

  // Running totals per device (kept in step with every model attach/detach and every
  // first load started/finished), so capacity checks never re-sum all entries.
  struct DeviceTotals {
    int loading = 0;                     // first loads in flight placed on the device
    int64_t bytes = 0;                   // sum of `bytes` of the loaded models
    std::set<Entry*> loaded;             // entries with a model on the device
    std::set<VictimKey> eviction_order;  // the same entries, the policy's victim first
  };

  const RegistryOptions& options;
  std::map<int, DeviceTotals> totals;  // guarded by mu
  mutable std::mutex mu;
  std::condition_variable changed;  // a load or reload finished
  std::map<std::string, Entry> entries;
  std::atomic<int64_t> load_attempts{0};
  ModelCounters counters;  // guarded by mu
  size_t next_device = 0;  // round-robin placement, guarded by mu

  std::mutex sweeper_mu;
  std::condition_variable sweeper_cv;
  bool stopping = false;
  std::thread sweeper;

  // Prefetch: ids waiting for a background load, and the workers doing them.
  std::mutex prefetch_mu;
  std::condition_variable prefetch_cv;
  std::deque<std::string> prefetch_waiting;   // guarded by prefetch_mu
  std::set<std::string> prefetch_pending;     // waiting or being loaded; prefetch_mu
  std::vector<std::thread> prefetch_threads;  // prefetch_mu
  bool prefetch_stopping = false;             // prefetch_mu
  std::atomic<int64_t> prefetch_queued{0}, prefetch_dropped{0};

  // Loads started by a call with a deadline: run by up to options.load_workers threads
  // (started on first use), so that the call can stop waiting at its deadline. A load
  // waiting its turn is already LOADING (one per id: at most one per known model).
  std::mutex loader_mu;
  std::condition_variable loader_cv;
  std::deque<LoadTask> loader_waiting;      // guarded by loader_mu
  std::vector<std::thread> loader_threads;  // loader_mu
  bool loader_stopping = false;             // loader_mu

  // Queues `task` for a loader thread (starting one if fewer than load_workers run).
  // False when it cannot run (the registry is stopping, or no loader thread could be
  // started): the caller settles it. Called with mu released.
  bool SubmitLoad(LoadTask task) {
    std::lock_guard<std::mutex> lock(loader_mu);
    if (loader_stopping) return false;
    loader_waiting.push_back(std::move(task));
    if (static_cast<int>(loader_threads.size()) < std::max(options.load_workers, 1)) {
      try {
        loader_threads.emplace_back([this] { LoaderWorker(); });
      } catch (const std::system_error& ex) {
        LOG_ERROR("cannot start a model loader thread: %s", ex.what());
        if (loader_threads.empty()) {
          loader_waiting.pop_back();
          return false;
        }
      }
    }
    loader_cv.notify_one();
    return true;
  }

  void LoaderWorker() {
    std::unique_lock<std::mutex> lock(loader_mu);
    while (true) {
      loader_cv.wait(lock, [&] { return loader_stopping || !loader_waiting.empty(); });
      if (loader_stopping) return;  // loads still waiting are abandoned by the destructor
      LoadTask task = std::move(loader_waiting.front());
      loader_waiting.pop_front();
      lock.unlock();
      RunLoad(task);
      lock.lock();
    }
  }

  // One background load: FinishLoadLocked on a loader thread, its outcome in the ticket.
  void RunLoad(const LoadTask& task) {
    std::vector<ModelPtr> dead;
    std::unique_lock<std::mutex> lock(mu);
    Status status;
    try {
      auto loaded = FinishLoadLocked(lock, *task.entry, &dead);
      if (!loaded.ok()) status = loaded.status();
    } catch (...) {  // the LoadingGuard has recorded the failure
      status = Status::Internal("loading model '" + task.entry->id + "' ended with an exception");
    }
    // Sessions it evicted are freed (unlocked) before its caller hears of the result.
    if (lock.owns_lock()) lock.unlock();
    dead.clear();
    lock.lock();
    task.ticket->status = std::move(status);
    task.ticket->done = true;
    changed.notify_all();
  }

  // A load that never reached a loader thread: no longer LOADING, its ticket settled.
  void AbandonLoadLocked(const LoadTask& task, Status why) {
    SetLoadingLocked(*task.entry, false);
    task.ticket->status = std::move(why);
    task.ticket->done = true;
    changed.notify_all();
  }

  // One background load (a worker's): as Acquire, without pinning or counting use.
  void PrefetchLoad(const std::string& id) {
    std::vector<ModelPtr> dead;  // destroyed after the lock is released
    std::unique_lock<std::mutex> lock(mu);
    auto entry = FindLocked(lock, id);
    if (!entry.ok()) return;
    auto loaded = EnsureLoadedLocked(lock, **entry, /*explicit_load=*/false, std::nullopt, &dead);
    if (!loaded.ok()) {
      LOG_INFO("prefetch of model '%s' did not load it: %s", id.c_str(),
               loaded.status().message().c_str());
    }
  }

  void PrefetchWorker() {
    std::unique_lock<std::mutex> lock(prefetch_mu);
    while (true) {
      prefetch_cv.wait(lock, [&] { return prefetch_stopping || !prefetch_waiting.empty(); });
      if (prefetch_stopping) return;
      std::string id = std::move(prefetch_waiting.front());
      prefetch_waiting.pop_front();
      lock.unlock();
      PrefetchLoad(id);
      lock.lock();
      prefetch_pending.erase(id);
    }
  }

  explicit Impl(const RegistryOptions& opts) : options(opts) {
    for (const auto& [id, files] : options.configured) {
      Entry& e = entries[id];
      e.id = id;
      e.files = files;
    }
  }

  // Known id -> its entry. A model_root id seen for the first time is looked up on
  // disk with the lock released (`lock` is held again on return), then added.
  Expected<Entry*> FindLocked(std::unique_lock<std::mutex>& lock, const std::string& id) {
    LIPSYNC_RETURN_IF_ERROR(ValidateModelId(id));
    auto it = entries.find(id);
    if (it != entries.end()) return &it->second;
    if (!options.model_root.empty()) {
      const std::string path = RootModelPath(options.model_root, id);
      lock.unlock();
      Touching(options, path);
      const bool exists = IsFile(path);
      const std::string encoder = exists ? EncoderBeside(path) : "";
      lock.lock();
      it = entries.find(id);  // another caller may have added it meanwhile
      if (it != entries.end()) return &it->second;
      if (exists) {
        Entry& e = entries[id];
        e.id = id;
        e.from_root = true;
        e.files.model_path = path;
        e.files.audio_encoder_path = encoder;
        return &e;
      }
    }
    return Status::NotFound("model '" + id + "' not found: not in models: and no " +
                            (options.model_root.empty() ? std::string("model_root configured")
                                                        : RootModelPath(options.model_root, id)));
  }

  int CountOn(int device, bool include_loading) const {
    auto it = totals.find(device);
    if (it == totals.end()) return 0;
    return static_cast<int>(it->second.loaded.size()) + (include_loading ? it->second.loading : 0);
  }

  int64_t BytesOn(int device) const {
    auto it = totals.find(device);
    return it == totals.end() ? 0 : it->second.bytes;
  }

  // Sets (or, on a reload, replaces) the model of `e` on e.device, keeping the totals
  // and the eviction order. e.slot is set.
  void AttachLocked(Entry& e, ModelPtr model) {
    DeviceTotals& t = totals[e.device];
    if (e.model) t.bytes -= e.bytes;
    e.model = std::move(model);
    e.bytes = e.model->memory_bytes();
    t.bytes += e.bytes;
    t.loaded.insert(&e);
    FileLocked(e);
  }

  // The policy's figures of loaded `e` now.
  VictimKey KeyOf(Entry& e) const {
    const int64_t used = e.slot->last_used_steady_ns.load();
    if (options.policy == config::EvictionPolicy::kLfu) {
      return VictimKey{e.slot->usage_count.load(), used, &e};
    }
    return VictimKey{used, 0, &e};
  }

  // Files (or refiles) loaded `e` in its device's eviction order under its figures now.
  // Returns where it went.
  std::set<VictimKey>::iterator FileLocked(Entry& e) {
    std::set<VictimKey>& order = totals[e.device].eviction_order;
    if (e.indexed) order.erase(VictimKey{e.key_first, e.key_second, &e});
    const VictimKey key = KeyOf(e);
    e.key_first = key.first;
    e.key_second = key.second;
    e.indexed = true;
    return order.insert(key).first;
  }

  void UnfileLocked(Entry& e) {
    if (!e.indexed) return;
    totals[e.device].eviction_order.erase(VictimKey{e.key_first, e.key_second, &e});
    e.indexed = false;
  }

  void SetLoadingLocked(Entry& e, bool loading) {
    if (e.loading == loading) return;
    e.loading = loading;
    totals[e.device].loading += loading ? 1 : -1;
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

  // The model on `device` that the policy would drop first, among those nobody holds:
  // LRU the oldest last use, LFU the fewest uses (then the oldest last use); ties by id.
  // Walks the eviction order from its front: it passes over models in use (pinned,
  // reloading, `exclude`) and refiles the keys a release made stale (see VictimKey),
  // so the cost is O(log n) per model passed over, not a scan of every model.
  Entry* PickVictimLocked(int device, const Entry* exclude) {
    std::set<VictimKey>& order = totals[device].eviction_order;
    for (auto it = order.begin(); it != order.end();) {
      Entry& e = *it->entry;
      const VictimKey now = KeyOf(e);
      if (now.first != it->first || now.second != it->second) {
        // Used since it was filed: refile it. Its new place is after the old one (the
        // figures only grow), possibly before `next`: continue from whichever is first.
        auto next = order.erase(it);
        e.indexed = false;
        auto refiled = FileLocked(e);
        it = (next == order.end() || *refiled < *next) ? refiled : next;
        continue;
      }
      if (&e == exclude || e.reloading || e.slot->pins.load() > 0) {
        ++it;
        continue;
      }
      return &e;
    }
    return nullptr;
  }

  // Drops the registry's reference; the OnnxModel dies in `dead` (outside the lock)
  // or with its last handle.
  void UnloadLocked(Entry& e, std::vector<ModelPtr>* dead, const char* why) {
    LOG_INFO("unloading model '%s' from device %d (%s, %lld bytes)", e.id.c_str(), e.device, why,
             static_cast<long long>(e.bytes));
    UnfileLocked(e);
    DeviceTotals& t = totals[e.device];
    t.bytes -= e.bytes;
    t.loaded.erase(&e);
    dead->push_back(std::move(e.model));
    e.model.reset();
    e.slot.reset();
    e.bytes = 0;
    if (std::string_view(why).starts_with("evicted")) ++counters.evictions;
    if (std::string_view(why).starts_with("idle")) ++counters.idle_unloads;
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

  bool FailureFresh(const Entry& e) const { return !e.failure.ok() && options.now() < e.retry_at; }

  // failed_retry after the first consecutive failure, doubling, at most failed_retry_max.
  std::chrono::milliseconds BackoffFor(int failures) const {
    const auto max = std::max(options.failed_retry_max, options.failed_retry);
    auto delay = options.failed_retry;
    for (int i = 1; i < failures && delay < max; ++i) delay *= 2;
    return std::min(delay, max);
  }

  void RecordFailureLocked(Entry& e, Status failure) {
    ++counters.load_failures;
    e.failure = std::move(failure);
    ++e.consecutive_failures;
    const auto backoff = BackoffFor(e.consecutive_failures);
    e.retry_at = options.now() + backoff;
    LOG_ERROR("%s (failure %d in a row; next retry in %s)", e.failure.ToString().c_str(),
              e.consecutive_failures, SecondsText(backoff).c_str());
  }

  // Waits while `busy()` holds, until `deadline` at most.
  template <typename Busy>
  Status WaitWhileLocked(std::unique_lock<std::mutex>& lock, const Entry& e,
                         std::optional<Clock::time_point> deadline, Busy busy) {
    while (busy()) {
      if (!deadline) {
        changed.wait(lock);
      } else if (changed.wait_until(lock, *deadline) == std::cv_status::timeout && busy()) {
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - e.loading_since);
        return Status::DeadlineExceeded(
            "model '" + e.id + "' is still being loaded by another request (" +
            std::to_string(ms.count()) +
            " ms so far); this request's deadline passed while it waited. The load goes on; "
            "retry shortly");
      }
    }
    return Status::Ok();
  }

  // Everything that may throw or read tenant files, outside the lock: the files'
  // real paths (and the model_root check), their sizes, then the loader. Every
  // exception becomes a Status here: nothing leaves the registry.
  Expected<ModelPtr> LoadFiles(const Entry& e, ModelFiles files, int device) {
    const std::string path = files.model_path;
    try {
      return LoadFilesUnguarded(e, std::move(files), device);
    } catch (const Ort::Exception& ex) {
      return Status::FailedPrecondition("ONNX Runtime failed loading '" + path + "': " +
                                        Quoted(ex.what(), 300) + " (expected a valid ONNX model)");
    } catch (const std::bad_alloc&) {
      return Status::ResourceExhausted("out of memory while loading '" + path +
                                       "' (the model needs more memory than is free)");
    } catch (const std::exception& ex) {
      return Status::Internal("loading '" + path +
                              "' failed with an exception: " + Quoted(ex.what(), 300));
    } catch (...) {
      return Status::Internal("loading '" + path + "' failed with an unknown exception");
    }
  }

  Expected<ModelPtr> LoadFilesUnguarded(const Entry& e, ModelFiles files, int device) {
    LIPSYNC_ASSIGN_OR_RETURN(files.model_path, ResolveModelFile(e.id, files.model_path,
                                                                options.model_root, e.from_root));
    LIPSYNC_RETURN_IF_ERROR(CheckFileSize(files.model_path, options.max_model_file_bytes));
    if (!files.audio_encoder_path.empty()) {
      LIPSYNC_ASSIGN_OR_RETURN(
          files.audio_encoder_path,
          ResolveModelFile(e.id, files.audio_encoder_path, options.model_root, e.from_root));
      LIPSYNC_RETURN_IF_ERROR(
          CheckFileSize(files.audio_encoder_path, options.max_model_file_bytes));
    }
    ++load_attempts;
    auto loaded = options.loader ? options.loader(files, device)
                                 : OnnxModel::Load(files, device, options.cache.get());
    if (!loaded.ok()) return loaded.status();
    if (*loaded == nullptr) {
      return Status::Internal("loading '" + files.model_path + "' returned no model");
    }
    return ModelPtr(std::move(*loaded));
  }

  // What EnsureLoadedLocked did for its caller: nothing (the model was loaded), the
  // load, or a wait for a load another caller (a prefetch, another request) had begun.
  struct Ensured {
    bool loaded_now = false;  // this call loaded the model or waited for its load
    bool waited = false;      // ... one begun by another caller
    double load_ms = 0;       // the load's time, or the time this call waited for it
  };

  // Makes sure `e` is loaded. The lock is released while ORT loads; `e` stays valid
  // (entries are never erased). Without a deadline the load runs on this thread; with
  // one it runs on a loader thread and this call waits for it until the deadline at
  // most (DEADLINE_EXCEEDED, the load goes on).
  Expected<Ensured> EnsureLoadedLocked(std::unique_lock<std::mutex>& lock, Entry& e,
                                       bool explicit_load,
                                       std::optional<Clock::time_point> deadline,
                                       std::vector<ModelPtr>* dead) {
    // A load already in flight when this call came (or came back after an eviction):
    // the caller waited for it, which its response and the hit/miss counts must show.
    std::optional<Clock::time_point> wait_start;
    while (true) {
      if (!e.model && e.loading && !wait_start) wait_start = Clock::now();
      LIPSYNC_RETURN_IF_ERROR(
          WaitWhileLocked(lock, e, deadline, [&] { return !e.model && e.loading; }));
      if (e.model) {
        if (!wait_start) return Ensured{};
        return Ensured{true, true, MsSince(*wait_start)};
      }
      if (!explicit_load && FailureFresh(e)) {
        return Status(e.failure.code(), e.failure.message() + " (load failure remembered: " +
                                            std::to_string(e.consecutive_failures) +
                                            " failed attempt(s) in a row; next retry in " +
                                            SecondsText(e.retry_at - options.now()) + ")");
      }
      if (!deadline) {
        LIPSYNC_RETURN_IF_ERROR(BeginLoadLocked(e, dead));
        LIPSYNC_RETURN_IF_ERROR(FinishLoadLocked(lock, e, dead).status());
        return Ensured{true, false, e.load_ms};
      }
      LoadTask task{&e, std::make_shared<LoadTicket>()};
      LIPSYNC_RETURN_IF_ERROR(BeginLoadLocked(e, dead));
      lock.unlock();
      dead->clear();  // evicted sessions are freed unlocked
      const bool submitted = SubmitLoad(task);
      lock.lock();
      if (!submitted) {
        AbandonLoadLocked(task,
                          Status::Unavailable("model '" + e.id +
                                              "' cannot be loaded now: no loader thread "
                                              "(the registry is stopping or out of threads)"));
        return task.ticket->status;
      }
      if (!changed.wait_until(lock, *deadline, [&] { return task.ticket->done; })) {
        const auto ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - e.loading_since);
        return Status::DeadlineExceeded(
            "model '" + e.id + "' is still loading (" + std::to_string(ms.count()) +
            " ms so far, started by this request); this request's deadline passed while it "
            "waited. The load goes on in the background; retry shortly");
      }
      if (!task.ticket->status.ok()) return task.ticket->status;
      if (e.model) return Ensured{true, false, e.load_ms};
      // Loaded, then evicted again before this call woke: start over.
    }
  }

  // Starts a first load of `e`: places it, marks it LOADING (counted on its device) and
  // makes room under the model-count cap (evicted sessions go to `dead`). On error the
  // mark is cleared again.
  Status BeginLoadLocked(Entry& e, std::vector<ModelPtr>* dead) {
    e.device = PickDevice();
    SetLoadingLocked(e, true);
    e.loading_since = Clock::now();
    Status room = EvictForCountLocked(e.device, &e, dead);
    if (!room.ok()) {
      SetLoadingLocked(e, false);
      changed.notify_all();
    }
    return room;
  }

  // The rest of a first load begun by BeginLoadLocked: the size estimate and room under
  // the byte cap, the load itself (lock released), then the model attached or the failure
  // remembered. Always ends the LOADING mark (LoadingGuard).
  Expected<bool> FinishLoadLocked(std::unique_lock<std::mutex>& lock, Entry& e,
                                  std::vector<ModelPtr>* dead) {
    LoadingGuard guard{*this, e, lock, &e.loading};
    const int device = e.device;
    int64_t estimate = e.last_measured_bytes;
    const ModelFiles files = e.files;
    if (estimate <= 0) {
      // The file's size (x1.2) is the estimate of a model never loaded: read with the
      // lock released (e.loading keeps other loads of this id waiting).
      lock.unlock();
      dead->clear();
      Touching(options, files.model_path);
      std::error_code ec;
      auto size = fs::file_size(files.model_path, ec);
      estimate = ec ? 0 : static_cast<int64_t>(static_cast<double>(size) * 1.2);
      lock.lock();
    }
    (void)EvictForBytesLocked(device, estimate, &e, /*must=*/false, dead);

    lock.unlock();
    dead->clear();  // evicted sessions are freed (unlocked) before the new one is created
    const auto start = Clock::now();
    auto loaded = LoadFiles(e, files, device);
    const double ms = MsSince(start);
    lock.lock();

    if (!loaded.ok()) {
      RecordFailureLocked(e, loaded.status().WithContext("loading model '" + e.id + "'"));
      return e.failure;
    }
    ModelPtr model = std::move(*loaded);
    e.last_measured_bytes = model->memory_bytes();
    if (Status st = EvictForBytesLocked(device, model->memory_bytes(), &e, /*must=*/true, dead);
        !st.ok()) {
      dead->push_back(std::move(model));
      return st;
    }
    e.slot = std::make_shared<ModelSlot>(e.id, options.now);
    e.slot->Touch();
    AttachLocked(e, std::move(model));
    e.load_ms = ms;
    e.loaded_at_unix_ms = NowUnixMs();
    e.failure = Status::Ok();
    e.consecutive_failures = 0;
    ++counters.loads;
    counters.load_seconds += ms / 1000.0;
    LOG_INFO("loaded model '%s' on device %d in %.1f ms (%lld bytes%s)", e.id.c_str(), device, ms,
             static_cast<long long>(e.bytes),
             e.model->has_audio_encoder() ? ", audio encoder" : "");
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
        std::chrono::duration_cast<std::chrono::nanoseconds>(options.now().time_since_epoch())
            .count();
    const int64_t idle_ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(options.idle_timeout).count();
    std::vector<Entry*> idle;
    for (auto& [device, t] : totals) {
      for (Entry* e : t.loaded) {
        if (e->reloading || e->slot->pins.load() > 0) continue;
        if (now_ns - e->slot->last_used_steady_ns.load() >= idle_ns) idle.push_back(e);
      }
    }
    for (Entry* e : idle) UnloadLocked(*e, &dead, "idle longer than idle_timeout");
    // `dead` is destroyed after the lock_guard (declared first, destroyed last).
  }
};

// ---------------------------------------------------------------- ModelHandle

ModelHandle::~ModelHandle() { Release(); }

ModelHandle::ModelHandle(ModelHandle&& other) noexcept
    : slot_(std::move(other.slot_)),
      model_(std::move(other.model_)),
      loaded_now_(other.loaded_now_),
      waited_for_load_(other.waited_for_load_),
      load_ms_(other.load_ms_),
      device_(other.device_) {}

ModelHandle& ModelHandle::operator=(ModelHandle&& other) noexcept {
  if (this != &other) {
    Release();
    slot_ = std::move(other.slot_);
    model_ = std::move(other.model_);
    loaded_now_ = other.loaded_now_;
    waited_for_load_ = other.waited_for_load_;
    load_ms_ = other.load_ms_;
    device_ = other.device_;
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
  std::vector<std::thread> workers;
  {
    std::lock_guard<std::mutex> lock(impl_->prefetch_mu);
    impl_->prefetch_stopping = true;  // waiting hints are dropped; loads under way finish
    workers.swap(impl_->prefetch_threads);
  }
  impl_->prefetch_cv.notify_all();
  for (auto& t : workers) t.join();
  // Background loads: those under way finish (joined); those still waiting never start.
  std::vector<std::thread> loaders;
  std::deque<Impl::LoadTask> abandoned;
  {
    std::lock_guard<std::mutex> lock(impl_->loader_mu);
    impl_->loader_stopping = true;
    loaders.swap(impl_->loader_threads);
    abandoned.swap(impl_->loader_waiting);
  }
  impl_->loader_cv.notify_all();
  for (auto& t : loaders) t.join();
  std::lock_guard<std::mutex> lock(impl_->mu);
  for (const Impl::LoadTask& task : abandoned) {
    impl_->AbandonLoadLocked(task, Status::Unavailable("the model registry is shutting down"));
  }
}

Expected<PrefetchOutcome> ModelRegistry::Prefetch(const std::string& id) {
  LIPSYNC_RETURN_IF_ERROR(ValidateModelId(id));
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    auto it = impl_->entries.find(id);
    if (it != impl_->entries.end()) {
      if (it->second.model) return PrefetchOutcome::kAlreadyLoaded;
      if (it->second.loading) return PrefetchOutcome::kLoading;
    }
  }
  std::lock_guard<std::mutex> lock(impl_->prefetch_mu);
  if (impl_->prefetch_stopping) return PrefetchOutcome::kDropped;
  if (impl_->prefetch_pending.count(id)) return PrefetchOutcome::kLoading;
  if (static_cast<int>(impl_->prefetch_waiting.size()) >= std::max(options_.prefetch_queue, 0)) {
    ++impl_->prefetch_dropped;
    return PrefetchOutcome::kDropped;
  }
  impl_->prefetch_waiting.push_back(id);
  impl_->prefetch_pending.insert(id);
  ++impl_->prefetch_queued;
  if (static_cast<int>(impl_->prefetch_threads.size()) < std::max(options_.prefetch_workers, 1)) {
    impl_->prefetch_threads.emplace_back([this] { impl_->PrefetchWorker(); });
  }
  impl_->prefetch_cv.notify_one();
  return PrefetchOutcome::kQueued;
}

int64_t ModelRegistry::prefetches_queued() const { return impl_->prefetch_queued; }
int64_t ModelRegistry::prefetches_dropped() const { return impl_->prefetch_dropped; }

Expected<ModelHandle> ModelRegistry::Acquire(const std::string& id,
                                             std::optional<Clock::time_point> deadline) {
  std::vector<ModelPtr> dead;  // destroyed after the lock is released
  std::unique_lock<std::mutex> lock(impl_->mu);
  LIPSYNC_ASSIGN_OR_RETURN(Impl::Entry * entry, impl_->FindLocked(lock, id));
  LIPSYNC_ASSIGN_OR_RETURN(Impl::Ensured ensured,
                           impl_->EnsureLoadedLocked(lock, *entry,
                                                     /*explicit_load=*/false, deadline, &dead));
  ModelHandle handle;
  handle.slot_ = entry->slot;
  handle.model_ = entry->model;
  handle.device_ = entry->device;
  handle.loaded_now_ = ensured.loaded_now;
  handle.waited_for_load_ = ensured.waited;
  handle.load_ms_ = ensured.load_ms;
  // A wait for a load begun by a prefetch or another request is a miss, not a hit.
  ++(ensured.loaded_now ? impl_->counters.cache_misses : impl_->counters.cache_hits);
  entry->slot->pins.fetch_add(1);
  entry->slot->usage_count.fetch_add(1);
  entry->slot->Touch();
  impl_->FileLocked(*entry);  // O(log n): its new place in the eviction order
  lock.unlock();
  return handle;
}

Expected<LoadResult> ModelRegistry::Load(const std::string& id, bool force_reload,
                                         std::optional<Clock::time_point> deadline) {
  std::vector<ModelPtr> dead;
  std::unique_lock<std::mutex> lock(impl_->mu);
  LIPSYNC_ASSIGN_OR_RETURN(Impl::Entry * found, impl_->FindLocked(lock, id));
  Impl::Entry& e = *found;
  LIPSYNC_RETURN_IF_ERROR(
      impl_->WaitWhileLocked(lock, e, deadline, [&] { return e.reloading || e.loading; }));
  LoadResult result;
  if (!force_reload || !e.model) {
    LIPSYNC_ASSIGN_OR_RETURN(Impl::Ensured ensured,
                             impl_->EnsureLoadedLocked(lock, e,
                                                       /*explicit_load=*/true, deadline, &dead));
    result.already_loaded = !ensured.loaded_now;
    result.load_time_ms = e.load_ms;
    result.stats = impl_->StatsLocked(e);
    return result;
  }

  // Force reload: the old copy serves until the new one is ready, then one swap.
  e.reloading = true;
  e.loading_since = Clock::now();
  Impl::LoadingGuard guard{*impl_, e, lock, &e.reloading};
  ModelFiles files = e.files;
  const int device = e.device;
  lock.unlock();
  if (!impl_->options.model_root.empty() && !impl_->options.configured.count(id)) {
    Touching(impl_->options, files.model_path);
    files.audio_encoder_path = EncoderBeside(files.model_path);  // it may have come or gone
  }
  const auto start = Clock::now();
  auto loaded = impl_->LoadFiles(e, files, device);
  const double ms = MsSince(start);
  lock.lock();
  if (!loaded.ok()) {
    ++impl_->counters.load_failures;
    Status st = loaded.status().WithContext("reloading model '" + id +
                                            "' failed; the previous version keeps serving");
    LOG_ERROR("%s", st.ToString().c_str());
    return st;
  }
  ModelPtr model = std::move(*loaded);
  if (e.model) dead.push_back(e.model);  // the old copy dies after unlock (or with its handles)
  if (!e.slot) {
    e.slot = std::make_shared<internal::ModelSlot>(e.id, impl_->options.now);
    e.slot->Touch();
  }
  e.files = files;
  e.device = device;
  impl_->AttachLocked(e, std::move(model));
  e.last_measured_bytes = e.bytes;
  e.load_ms = ms;
  e.loaded_at_unix_ms = NowUnixMs();
  e.failure = Status::Ok();
  e.consecutive_failures = 0;
  ++impl_->counters.loads;
  impl_->counters.load_seconds += ms / 1000.0;
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
  LIPSYNC_ASSIGN_OR_RETURN(Impl::Entry * found, impl_->FindLocked(lock, id));
  Impl::Entry& e = *found;
  while (e.loading || e.reloading) impl_->changed.wait(lock);
  e.failure = Status::Ok();
  e.consecutive_failures = 0;
  if (!e.model) return false;
  impl_->UnloadLocked(e, &dead, "UnloadModel");
  return true;
}

std::vector<ModelStats> ModelRegistry::List(bool include_available, int limit) const {
  std::vector<ModelStats> loaded, others;
  std::set<std::string> known;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    for (const auto& [id, e] : impl_->entries) {
      if (e.model)
        loaded.push_back(impl_->StatsLocked(e));
      else if (include_available)
        others.push_back(impl_->StatsLocked(e));
      if (include_available) known.insert(id);
    }
  }
  // The directory scan runs on that snapshot with the lock released. One readdir pass,
  // no per-tenant stat: a directory entry named as a valid id is offered; its files are
  // looked at when it is loaded (a missing model is NOT_FOUND then, a file symlinked
  // out of model_root PERMISSION_DENIED). A tenant directory that is itself a symlink
  // (it may lead out of model_root) is not offered; d_type says so without a syscall
  // (an lstat only on file systems that leave d_type unknown).
  if (include_available && !options_.model_root.empty()) {
    Touching(options_, options_.model_root);
    if (DIR* dir = ::opendir(options_.model_root.c_str())) {
      while (const dirent* d = ::readdir(dir)) {
        std::string id = d->d_name;
        if (known.count(id) || !ValidateModelId(id).ok()) continue;
        bool is_dir = d->d_type == DT_DIR;
        if (d->d_type == DT_UNKNOWN) {
          struct stat st;
          is_dir = ::fstatat(::dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                   S_ISDIR(st.st_mode);
        }
        if (!is_dir) continue;
        ModelStats s;
        s.model_path = RootModelPath(options_.model_root, id);
        s.model_id = std::move(id);
        s.state = ModelState::kAvailable;
        others.push_back(std::move(s));
      }
      ::closedir(dir);
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
  std::unique_lock<std::mutex> lock(impl_->mu);
  LIPSYNC_ASSIGN_OR_RETURN(Impl::Entry * e, impl_->FindLocked(lock, id));
  return impl_->StatsLocked(*e);
}

std::vector<ModelStats> ModelRegistry::AllLoadedStats() const { return List(false, 0); }

int ModelRegistry::loaded_count() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  int n = 0;
  for (const auto& [device, t] : impl_->totals) n += static_cast<int>(t.loaded.size());
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

ModelCounters ModelRegistry::counters() const {
  ModelCounters counters;
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    counters = impl_->counters;
  }
  counters.prefetches_queued = impl_->prefetch_queued;
  counters.prefetches_dropped = impl_->prefetch_dropped;
  return counters;
}

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
  o.failed_retry_max = std::chrono::milliseconds(
      static_cast<int64_t>(config.capacity.failed_load_retry_max_seconds * 1000.0));
  o.max_model_file_bytes = config.limits.max_model_file_mb * (int64_t{1} << 20);
  o.devices = devices.empty() ? std::vector<int>{-1} : std::move(devices);
  for (const auto& [id, entry] : config.models) {
    ModelFiles files;
    files.model_path = entry.model_path;
    files.audio_encoder_path = entry.audio_encoder_path.empty() ? EncoderBeside(entry.model_path)
                                                                : entry.audio_encoder_path;
    o.configured[id] = files;
  }
  o.model_root = config.model_root;
  if (!config.model_cache_dir.empty()) {
    o.cache = std::make_shared<ModelCache>(config.model_cache_dir, o.max_model_file_bytes,
                                           config.model_cache_max_mb * (int64_t{1} << 20));
  }
  return o;
}

}  // namespace lipsync::inference
