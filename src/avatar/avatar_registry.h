// The compositing server's avatars: which exist (config `models:` and
// `model_root/<id>/{frames/,crop_rects.json}`), which are loaded, and which to evict.
//
// - Loading is on demand and single-flight: concurrent Acquire calls for one id share
//   one load; a caller waiting for a load gives up at its own deadline
//   (DEADLINE_EXCEEDED), its own load included: a load started by a call with a
//   deadline runs on a background thread, goes on after that caller gave up, and
//   serves the next request. Every load ends as loaded or failed, whatever happens inside
//   it (an RAII guard; exceptions, std::bad_alloc included, are caught at this
//   boundary and become the load's error).
// - A failed load is remembered and answered with the same error (naming the file)
//   without touching the disk until its retry time: `failed_load_retry_seconds` after
//   the first failure, doubling per consecutive failure up to
//   `failed_load_retry_max_seconds`; a success resets it. Other avatars are unaffected.
// - A load first reads only crop_rects.json and frame 0's header (Avatar::Plan), checks
//   the estimated decoded bytes against `memory_limit_bytes` (evicting if needed),
//   counts them as reserved while it decodes, then decodes (Avatar::Open). Without a
//   configured budget, an avatar estimated larger than the machine's physical memory
//   is still refused (RESOURCE_EXHAUSTED, remembered). All file I/O happens outside the
//   registry mutex.
// - No stalls: the registry mutex (taken by every request) never covers file-system
//   work (stat, directory scans, reads), decoding, or freeing an avatar's pixels: an
//   avatar the registry drops (eviction, idle unload, Unload, reload) is released
//   after the mutex is unlocked, and the loaded count and bytes are running totals
//   (an avatar's lazily growing cache is re-measured outside the mutex on each Acquire
//   and on each sweep), so no call re-sums every avatar.
// - The tenant's files are bounded by `image_limits`, `crop_rects_limits` and
//   `max_frames`; those of a model_root tenant must resolve (symlinks followed) inside
//   model_root, PERMISSION_DENIED otherwise. Configured `models:` paths are the
//   operator's and are not confined.
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
  std::chrono::milliseconds idle_timeout{0};   // 0: never unload idle avatars
  int64_t memory_limit_bytes = 0;              // 0: no limit
  double failed_load_retry_seconds = 30;       // first delay after a failure
  double failed_load_retry_max_seconds = 600;  // doubling per consecutive failure, up to this
  image::DecodeLimits image_limits;            // each frame file (limits.max_image_*)
  CropRectsLimits crop_rects_limits;  // crop_rects.json (limits.max_crop_rects_file_mb, ...)
  int max_frames = 100000;            // limits.max_frames
  bool region_jpeg = false;           // keep each frame's JPEG for region-only encoding
  bool compact_backgrounds = false;   // needs region_jpeg
  int jpeg_quality = 75;
  // Prepared avatar files (avatar/prepared_store.h); "": none. With a store, a
  // model_root tenant is not preloaded: it holds at most background_cache_frames frames,
  // read from its prepared file on demand (the guide: frames cached per model).
  std::string avatar_store_dir;
  bool start_sweeper = true;  // false: only SweepIdle() unloads idle avatars
  // Time source for use times, idle unloading and the retry backoff (tests inject a
  // fake clock). Deadlines passed to Acquire are on the real Clock.
  std::function<Clock::time_point()> now = [] { return Clock::now(); };
  // Test hook: called in every load attempt once the files are planned and their
  // estimated bytes reserved, just before decoding, on the loading thread, outside the
  // registry mutex. It may block (a slow decode) or throw (a decoder that throws); a
  // throw fails that load like any other error.
  std::function<void(const std::string& id)> before_decode;
  // Test hook: called outside the registry mutex just before the registry looks at
  // the disk for `id` (the stat of model_root/<id>/frames), and with "" before the
  // model_root scan of KnownIds. It may block (a slow file system).
  std::function<void(const std::string& id)> before_disk_lookup;
  // Test hook: called with the id of each avatar the registry drops (evicted, idle,
  // unloaded, replaced by a reload), on the dropping thread, after the registry mutex
  // is unlocked and just before the registry's reference is released. It may block
  // (a slow free).
  std::function<void(const std::string& id)> before_release;

  // From the compositing config (capacity.*, limits.*, output.{region_jpeg,
  // compact_backgrounds, jpeg_quality} (region JPEG only with format jpeg), models,
  // model_root).
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
  int64_t load_attempts = 0;     // loads started (each reads the tenant's files)
  int consecutive_failures = 0;  // since the last success (or Unload)
  double retry_in_seconds = 0;   // kFailed: until the next load attempt (0: next request)
};

class AvatarRegistry {
 public:
  explicit AvatarRegistry(AvatarRegistryOptions options);
  ~AvatarRegistry();  // stops the sweeper, waits for background loads; handles stay valid
  AvatarRegistry(const AvatarRegistry&) = delete;
  AvatarRegistry& operator=(const AvatarRegistry&) = delete;

  // The avatar `id`, loading it if needed (evicting others per policy), counted as one
  // use. INVALID_ARGUMENT for a malformed id, NOT_FOUND if no such avatar exists,
  // the (remembered) load error, RESOURCE_EXHAUSTED, or DEADLINE_EXCEEDED when
  // `deadline` (real Clock) passes while the avatar loads (another caller's load, or
  // the one this call started: that load goes on in the background and serves later
  // calls). Without a deadline the load runs on the calling thread. `*loaded_now`
  // (optional) is set when this call's load loaded it; `*load_ms` (optional) to the
  // load time then.
  Expected<AvatarHandle> Acquire(const std::string& id, bool* loaded_now = nullptr,
                                 double* load_ms = nullptr,
                                 std::optional<Clock::time_point> deadline = std::nullopt);
  // Loads without counting a use. force_reload: open again and swap in on success
  // (handles to the old one stay valid; a failed reload keeps the old one).
  Status Load(const std::string& id, bool force_reload = false);
  // Drops the registry's reference (in-flight handles finish on it). NOT_FOUND if not
  // loaded. Also forgets a remembered failure and its backoff.
  Status Unload(const std::string& id);

  // Adds one compositing time sample (for avg_composite_ms).
  void RecordComposite(const std::string& id, double ms);

  // Configured models plus the directories under model_root named as valid ids, sorted,
  // from one directory scan (no lock, no look inside each directory): a directory's
  // frames/ is checked when it is loaded (a directory without frames/ is listed and is
  // NOT_FOUND at Acquire). A tenant directory that is itself a symlink is not listed
  // (it may leave model_root); asked for by id, it loads if its files stay inside
  // model_root.
  std::vector<std::string> KnownIds() const;
  bool Exists(const std::string& id) const;
  // How `id` is loaded (its files, limits, store); nullopt if it does not exist. Looks
  // at the disk; takes no lock (`lipsync prepare-avatar` uses it).
  std::optional<AvatarOptions> SourceFor(const std::string& id) const;
  // Stats of one avatar (loaded or not); NOT_FOUND if it does not exist.
  Expected<AvatarStats> Stats(const std::string& id) const;
  // Stats of every loaded or failed avatar.
  std::vector<AvatarStats> LoadedStats() const;

  // True when `id` is loaded now (one map lookup under the lock; no disk access).
  bool IsLoaded(const std::string& id) const;
  int loaded_count() const;
  // Avatars evicted (model cap or memory cap) since start.
  int64_t evictions() const;
  // Loaded avatars' bytes (as last measured: at load, Acquire and sweep) plus the
  // estimates reserved by loads in flight. A running total.
  int64_t memory_bytes() const;
  int max_models() const { return options_.max_models; }
  int64_t memory_limit_bytes() const { return options_.memory_limit_bytes; }

  // Unloads avatars not in use whose last use is older than idle_timeout; returns
  // how many. Also re-applies the memory cap (lazily cached frames grow).
  int SweepIdle();

 private:
  struct Entry;
  struct LoadTicket;
  // Avatars dropped under the mutex, released (before_release, then the last
  // reference) when it goes out of scope: declare it before the lock.
  class Released;
  Expected<std::shared_ptr<Avatar>> LoadLocked(std::unique_lock<std::mutex>& lock,
                                               Released& released, const std::string& id,
                                               bool force, bool* loaded_now, double* load_ms,
                                               std::optional<Clock::time_point> deadline);
  // Runs one load attempt of `entry` (state already kLoading) and settles it and
  // `ticket`. Called and returns with `lock` held; unlocks around all file work.
  void RunLoadLocked(std::unique_lock<std::mutex>& lock, Released& released,
                     const std::shared_ptr<Entry>& entry, bool reload, AvatarState previous,
                     LoadTicket& ticket);
  // Evicts unpinned avatars (not `keep`) until both caps hold with `extra_models`
  // more avatars and `extra_bytes` more bytes; false if it could not.
  bool MakeRoomLocked(Released& released, int extra_models, int64_t extra_bytes,
                      const std::string& keep);
  // Sets (or, with null, drops into `released`) the entry's avatar and its measured
  // bytes, keeping the running totals.
  void SetAvatarLocked(Entry& entry, std::shared_ptr<Avatar> avatar, int64_t bytes,
                       Released& released);
  // Brings the running totals in line with `entry` after its avatar, state or
  // reservation changed.
  void AccountLocked(Entry& entry);
  // Marks `entry` failed with `error` and schedules its retry (backoff).
  void RecordFailureLocked(Entry& entry, const Status& error);
  AvatarHandle Pin(const std::shared_ptr<Entry>& entry, std::shared_ptr<Avatar> avatar);
  void SweeperLoop();

  AvatarRegistryOptions options_;
  mutable std::mutex mu_;
  std::condition_variable load_done_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;
  // Running totals over entries_ (see AccountLocked).
  int slots_used_ = 0;        // avatars held or loading (the max_models count)
  int avatars_held_ = 0;      // avatars held
  int64_t evictions_ = 0;     // evicted to make room, since start
  int64_t bytes_held_ = 0;    // measured avatar bytes plus reservations of loads in flight
  int background_loads_ = 0;  // load threads still running (the destructor waits)
  std::condition_variable background_done_;
  bool stopping_ = false;
  std::condition_variable sweeper_cv_;
  std::thread sweeper_;
};

const char* AvatarStateName(AvatarState state);

}  // namespace lipsync::avatar
