// The compositing server's avatars: which exist (config `models:` and
// `model_root/<id>/{frames/,crop_rects.json}`), which are loaded, and which to evict.
//
// - Loading is on demand and single-flight: concurrent Acquire calls for one id share
//   one load. A failed load is remembered for `failed_load_retry_seconds` and answered
//   with the same error (naming the file) without touching the disk; other avatars
//   are unaffected.
// - Caps: `max_models` loaded avatars and `memory_limit_bytes` over all of them.
//   Victims are picked among avatars not in use (no live handle) by LRU (oldest last
//   use) or LFU (fewest uses, then oldest). If every loaded avatar is in use, a new
//   load fails with RESOURCE_EXHAUSTED.
// - Avatars idle for `idle_timeout` are unloaded by a background sweeper (or
//   SweepIdle()).
//
// Thread-safe. An AvatarHandle pins its avatar: it is never evicted or unloaded while
// a handle lives, and the Avatar itself stays valid as long as the handle does.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "avatar/avatar.h"
#include "common/status.h"
#include "config/config.h"

namespace lipsync::avatar {

using AvatarHandle = std::shared_ptr<Avatar>;
using Clock = std::chrono::steady_clock;

struct AvatarRegistryOptions {
  std::map<std::string, config::CompositingModelEntry> models;
  std::string model_root;
  int max_models = 11000;
  int background_cache_frames = 600;
  config::EvictionPolicy eviction_policy = config::EvictionPolicy::kLfu;
  std::chrono::milliseconds idle_timeout{0};  // 0: never unload idle avatars
  int64_t memory_limit_bytes = 0;             // 0: no limit
  double failed_load_retry_seconds = 30;
  bool region_jpeg = false;          // keep each frame's JPEG for region-only encoding
  bool compact_backgrounds = false;  // needs region_jpeg
  int jpeg_quality = 75;
  bool start_sweeper = true;  // false: only SweepIdle() unloads idle avatars
  // Time source (tests inject a fake clock).
  std::function<Clock::time_point()> now = [] { return Clock::now(); };

  // From the compositing config (capacity.*, output.{region_jpeg, compact_backgrounds,
  // jpeg_quality} (region JPEG only with format jpeg), models, model_root).
  static AvatarRegistryOptions FromConfig(const config::CompositingConfig& config);
};

enum class AvatarState { kUnloaded, kLoading, kLoaded, kFailed };

struct AvatarStats {
  std::string id;
  AvatarState state = AvatarState::kUnloaded;
  int num_frames = 0;
  int frame_width = 0;
  int frame_height = 0;
  int cached_frames = 0;
  int64_t memory_bytes = 0;
  int64_t usage_count = 0;
  int64_t last_used_unix_ms = 0;  // 0: never used
  double load_ms = 0;
  std::string error;  // last load error (kFailed)
  double avg_composite_ms = 0;
};

class AvatarRegistry {
 public:
  explicit AvatarRegistry(AvatarRegistryOptions options);
  ~AvatarRegistry();  // stops the sweeper; outstanding handles stay valid
  AvatarRegistry(const AvatarRegistry&) = delete;
  AvatarRegistry& operator=(const AvatarRegistry&) = delete;

  // The avatar `id`, loading it if needed (evicting others per policy), counted as one
  // use. INVALID_ARGUMENT for a malformed id, NOT_FOUND if no such avatar exists,
  // the remembered load error, or RESOURCE_EXHAUSTED. `*loaded_now` (optional) is set
  // when this call loaded it; `*load_ms` (optional) to the load time then.
  Expected<AvatarHandle> Acquire(const std::string& id, bool* loaded_now = nullptr,
                                 double* load_ms = nullptr);
  // Loads without counting a use. force_reload: open again and swap in on success
  // (handles to the old one stay valid; a failed reload keeps the old one).
  Status Load(const std::string& id, bool force_reload = false);
  // Drops the registry's reference (in-flight handles finish on it). NOT_FOUND if not
  // loaded. Also forgets a remembered failure.
  Status Unload(const std::string& id);

  // Adds one compositing time sample (for avg_composite_ms).
  void RecordComposite(const std::string& id, double ms);

  // Ids that exist: configured models plus directories under model_root with frames/.
  std::vector<std::string> KnownIds() const;
  bool Exists(const std::string& id) const;
  // Stats of one avatar (loaded or not); NOT_FOUND if it does not exist.
  Expected<AvatarStats> Stats(const std::string& id) const;
  // Stats of every loaded or failed avatar.
  std::vector<AvatarStats> LoadedStats() const;

  int loaded_count() const;
  int64_t memory_bytes() const;
  int max_models() const { return options_.max_models; }
  int64_t memory_limit_bytes() const { return options_.memory_limit_bytes; }

  // Unloads avatars not in use whose last use is older than idle_timeout; returns
  // how many. Also re-applies the memory cap (lazily cached frames grow).
  int SweepIdle();

 private:
  struct Entry;
  std::optional<AvatarOptions> SourceFor(const std::string& id) const;
  Expected<std::shared_ptr<Avatar>> LoadLocked(std::unique_lock<std::mutex>& lock,
                                               const std::string& id, bool force, bool* loaded_now,
                                               double* load_ms);
  // Evicts unpinned avatars (not `keep`) until both caps hold with `extra_models`
  // more avatars; false if it could not.
  bool MakeRoomLocked(int extra_models, const std::string& keep);
  AvatarHandle Pin(const std::shared_ptr<Entry>& entry, std::shared_ptr<Avatar> avatar);
  void SweeperLoop();

  AvatarRegistryOptions options_;
  mutable std::mutex mu_;
  std::condition_variable load_done_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;
  bool stopping_ = false;
  std::condition_variable sweeper_cv_;
  std::thread sweeper_;
};

const char* AvatarStateName(AvatarState state);

}  // namespace lipsync::avatar
