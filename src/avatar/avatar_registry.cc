#include "avatar/avatar_registry.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <new>

#include "avatar/prepared_store.h"
#include "common/guarded.h"
#include "common/log.h"
#include "common/model_id.h"

namespace lipsync::avatar {

namespace fs = std::filesystem;

struct AvatarRegistry::Entry {
  std::string id;
  AvatarState state = AvatarState::kUnloaded;
  std::shared_ptr<Avatar> avatar;
  std::atomic<int> pins{0};
  int64_t usage_count = 0;
  Clock::time_point last_used{};
  int64_t last_used_unix_ms = 0;
  double load_ms = 0;
  Status error;
  Clock::time_point failed_at{};
  Clock::time_point retry_at{};  // kFailed: answered from memory until then
  int consecutive_failures = 0;
  int64_t load_attempts = 0;
  int64_t reserved_bytes = 0;  // estimate of a load in flight, counted against the budget
  int64_t avatar_bytes = 0;    // avatar->memory_bytes() as last measured (0 without one)
  // What this entry adds to the registry's running totals now (AccountLocked).
  bool counted_slot = false;
  bool counted_avatar = false;
  int64_t counted_bytes = 0;
  double composite_ms_sum = 0;
  int64_t composite_count = 0;
};

// One load attempt's outcome, shared by the thread running it and the call that
// started it (which may stop waiting at its deadline).
struct AvatarRegistry::LoadTicket {
  bool done = false;
  Status status;
  std::shared_ptr<Avatar> avatar;
  double load_ms = 0;
  Clock::time_point started = Clock::now();
};

class AvatarRegistry::Released {
 public:
  explicit Released(const AvatarRegistryOptions& options) : hook_(options.before_release) {}
  Released(const Released&) = delete;
  Released& operator=(const Released&) = delete;
  ~Released() {
    for (auto& avatar : avatars_) {
      if (hook_) hook_(avatar->id());
      avatar.reset();
    }
  }
  void Add(std::shared_ptr<Avatar> avatar) {
    if (avatar) avatars_.push_back(std::move(avatar));
  }

 private:
  const std::function<void(const std::string&)>& hook_;
  std::vector<std::shared_ptr<Avatar>> avatars_;
};

const char* AvatarStateName(AvatarState state) {
  switch (state) {
    case AvatarState::kUnloaded:
      return "UNLOADED";
    case AvatarState::kLoading:
      return "LOADING";
    case AvatarState::kLoaded:
      return "LOADED";
    case AvatarState::kFailed:
      return "FAILED";
  }
  return "UNKNOWN";
}

AvatarRegistryOptions AvatarRegistryOptions::FromConfig(const config::CompositingConfig& config) {
  AvatarRegistryOptions o;
  o.models = config.models;
  o.model_root = config.model_root;
  o.max_models = config.capacity.max_models;
  o.background_cache_frames = config.capacity.background_cache_frames;
  o.eviction_policy = config.capacity.eviction_policy;
  o.idle_timeout = std::chrono::milliseconds(
      static_cast<int64_t>(config.capacity.idle_timeout_minutes * 60'000.0));
  o.memory_limit_bytes = config.capacity.memory_limit_mb * 1024 * 1024;
  o.failed_load_retry_seconds = config.capacity.failed_load_retry_seconds;
  o.failed_load_retry_max_seconds = config.capacity.failed_load_retry_max_seconds;
  o.image_limits.max_width = config.limits.max_image_width;
  o.image_limits.max_height = config.limits.max_image_height;
  o.image_limits.max_file_bytes = config.limits.max_image_file_mb * 1024 * 1024;
  o.crop_rects_limits.max_file_bytes = config.limits.max_crop_rects_file_mb * 1024 * 1024;
  o.crop_rects_limits.max_json_depth = config.limits.max_json_depth;
  o.crop_rects_limits.max_rects = config.limits.max_frames;
  o.max_frames = config.limits.max_frames;
  o.region_jpeg = config.output.format == config::OutputFormat::kJpeg && config.output.region_jpeg;
  o.compact_backgrounds = o.region_jpeg && config.output.compact_backgrounds;
  o.jpeg_quality = config.output.jpeg_quality;
  o.avatar_store_dir = ResolveAvatarStoreDir(config.server.avatar_store_dir);
  return o;
}

AvatarRegistry::AvatarRegistry(AvatarRegistryOptions options) : options_(std::move(options)) {
  bool sweep = options_.idle_timeout.count() > 0 || options_.memory_limit_bytes > 0;
  if (options_.start_sweeper && sweep) sweeper_ = std::thread([this] { SweeperLoop(); });
}

AvatarRegistry::~AvatarRegistry() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  sweeper_cv_.notify_all();
  if (sweeper_.joinable()) sweeper_.join();
  std::unique_lock<std::mutex> lock(mu_);
  background_done_.wait(lock, [this] { return background_loads_ == 0; });
}

void AvatarRegistry::SweeperLoop() {
  auto period = std::chrono::milliseconds(30'000);
  if (options_.idle_timeout.count() > 0) {
    period = std::clamp(options_.idle_timeout / 4, std::chrono::milliseconds(100), period);
  }
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    sweeper_cv_.wait_for(lock, period, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    int n = SweepIdle();
    if (n > 0) LOG_INFO("avatar registry: unloaded %d idle avatar(s)", n);
    lock.lock();
  }
}

std::optional<AvatarOptions> AvatarRegistry::SourceFor(const std::string& id) const {
  AvatarOptions o;
  o.id = id;
  o.cache_frames = options_.background_cache_frames;
  o.region_jpeg = options_.region_jpeg || options_.compact_backgrounds;
  o.compact = options_.compact_backgrounds;
  o.jpeg_quality = options_.jpeg_quality;
  o.image_limits = options_.image_limits;
  o.crop_rects_limits = options_.crop_rects_limits;
  o.max_frames = options_.max_frames;
  o.prepared_dir = options_.avatar_store_dir;
  auto it = options_.models.find(id);
  if (it != options_.models.end()) {
    o.frames_dir = it->second.background_dir;
    o.crop_rects_path = it->second.crop_rects_path;
    o.num_frames = it->second.num_frames;
    o.preload = it->second.preload_backgrounds;
    return o;
  }
  if (options_.model_root.empty()) return std::nullopt;
  if (options_.before_disk_lookup) options_.before_disk_lookup(id);
  fs::path dir = fs::path(options_.model_root) / id;
  std::error_code ec;
  if (!fs::is_directory(dir / "frames", ec)) return std::nullopt;
  o.frames_dir = (dir / "frames").string();
  o.crop_rects_path = (dir / "crop_rects.json").string();
  o.preload = options_.avatar_store_dir.empty();
  o.confine_to = options_.model_root;  // a tenant's files stay inside model_root
  return o;
}

bool AvatarRegistry::Exists(const std::string& id) const {
  return ValidateModelId(id).ok() && SourceFor(id).has_value();
}

std::vector<std::string> AvatarRegistry::KnownIds() const {
  std::vector<std::string> ids;
  ids.reserve(options_.models.size());
  for (const auto& [id, entry] : options_.models) ids.push_back(id);
  if (options_.model_root.empty()) return ids;  // the map's ids are sorted
  if (options_.before_disk_lookup) options_.before_disk_lookup("");
  // One readdir pass, no per-tenant stat (11,000 tenants: a stat of each one's frames/
  // was most of ListModels' own time). A directory entry named as a valid id is
  // offered; its frames/ is looked at when it is loaded (SourceFor: NOT_FOUND then). A
  // tenant directory that is itself a symlink (it may lead out of model_root) is not
  // offered; d_type says so without a syscall (an lstat only where d_type is unknown).
  if (DIR* dir = ::opendir(options_.model_root.c_str())) {
    while (const dirent* d = ::readdir(dir)) {
      bool is_dir = d->d_type == DT_DIR;
      if (d->d_type == DT_UNKNOWN) {
        struct stat st;
        is_dir = ::fstatat(::dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                 S_ISDIR(st.st_mode);
      }
      if (!is_dir) continue;
      std::string id = d->d_name;
      if (ValidateModelId(id).ok() && !options_.models.count(id)) ids.push_back(std::move(id));
    }
    ::closedir(dir);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

AvatarHandle AvatarRegistry::Pin(const std::shared_ptr<Entry>& entry,
                                 std::shared_ptr<Avatar> avatar) {
  // Counts itself in the entry's pins for exactly its own lifetime (never copied).
  struct PinToken {
    PinToken(std::shared_ptr<Entry> e, std::shared_ptr<Avatar> a)
        : entry(std::move(e)), avatar(std::move(a)) {
      entry->pins.fetch_add(1);
    }
    PinToken(const PinToken&) = delete;
    PinToken& operator=(const PinToken&) = delete;
    ~PinToken() { entry->pins.fetch_sub(1); }
    std::shared_ptr<Entry> entry;
    std::shared_ptr<Avatar> avatar;
  };
  auto token = std::make_shared<PinToken>(entry, std::move(avatar));
  Avatar* raw = token->avatar.get();
  return AvatarHandle(token, raw);
}

void AvatarRegistry::AccountLocked(Entry& entry) {
  const bool slot = entry.avatar != nullptr || entry.state == AvatarState::kLoading;
  const bool held = entry.avatar != nullptr;
  const int64_t bytes = (held ? entry.avatar_bytes : 0) + entry.reserved_bytes;
  slots_used_ += int(slot) - int(entry.counted_slot);
  avatars_held_ += int(held) - int(entry.counted_avatar);
  bytes_held_ += bytes - entry.counted_bytes;
  entry.counted_slot = slot;
  entry.counted_avatar = held;
  entry.counted_bytes = bytes;
}

void AvatarRegistry::SetAvatarLocked(Entry& entry, std::shared_ptr<Avatar> avatar, int64_t bytes,
                                     Released& released) {
  released.Add(std::move(entry.avatar));
  entry.avatar = std::move(avatar);
  entry.avatar_bytes = entry.avatar ? bytes : 0;
  AccountLocked(entry);
}

bool AvatarRegistry::MakeRoomLocked(Released& released, int extra_models, int64_t extra_bytes,
                                    const std::string& keep) {
  for (;;) {
    const bool over_count = slots_used_ + extra_models > options_.max_models;
    const bool over_bytes =
        options_.memory_limit_bytes > 0 && bytes_held_ + extra_bytes > options_.memory_limit_bytes;
    if (!over_count && !over_bytes) return true;
    Entry* victim = nullptr;
    for (const auto& [id, e] : entries_) {
      if (!e->avatar || e->state != AvatarState::kLoaded || e->pins.load() > 0 || id == keep) {
        continue;
      }
      if (!victim) {
        victim = e.get();
        continue;
      }
      bool better;
      if (options_.eviction_policy == config::EvictionPolicy::kLfu &&
          e->usage_count != victim->usage_count) {
        better = e->usage_count < victim->usage_count;
      } else {
        better = e->last_used < victim->last_used;
      }
      if (better) victim = e.get();
    }
    if (!victim) return false;
    LOG_INFO("avatar registry: evicting '%s' (%s, uses %lld)", victim->id.c_str(),
             over_count ? "model cap" : "memory cap", static_cast<long long>(victim->usage_count));
    victim->state = AvatarState::kUnloaded;
    ++evictions_;
    SetAvatarLocked(*victim, nullptr, 0, released);  // freed once the mutex is unlocked
  }
}

void AvatarRegistry::RecordFailureLocked(Entry& entry, const Status& error) {
  entry.state = AvatarState::kFailed;
  entry.error = error;
  entry.consecutive_failures++;
  // failed_load_retry_seconds, doubling per consecutive failure, capped.
  double delay = std::max(0.0, options_.failed_load_retry_seconds);
  for (int i = 1; i < entry.consecutive_failures && delay < options_.failed_load_retry_max_seconds;
       ++i) {
    delay *= 2;
  }
  delay = std::min(
      delay, std::max(options_.failed_load_retry_seconds, options_.failed_load_retry_max_seconds));
  entry.failed_at = options_.now();
  entry.retry_at = entry.failed_at + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(delay));
  LOG_WARN("avatar '%s' failed to load (failure %d in a row; answered from memory for %.0f s): %s",
           entry.id.c_str(), entry.consecutive_failures, delay, error.ToString().c_str());
}

namespace {

int64_t PhysicalMemoryBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && page_size > 0 ? int64_t(pages) * page_size : 0;
}

}  // namespace

Expected<std::shared_ptr<Avatar>> AvatarRegistry::LoadLocked(
    std::unique_lock<std::mutex>& lock, Released& released, const std::string& id, bool force,
    bool* loaded_now, double* load_ms, std::optional<Clock::time_point> deadline) {
  for (;;) {
    auto it = entries_.find(id);
    std::shared_ptr<Entry> entry = it == entries_.end() ? nullptr : it->second;
    if (entry && entry->state == AvatarState::kLoading) {
      // Another caller's load: wait for it, but only until our own deadline.
      if (!deadline) {
        load_done_.wait(lock);
      } else if (load_done_.wait_until(lock, *deadline) == std::cv_status::timeout &&
                 entry->state == AvatarState::kLoading) {
        return Status::DeadlineExceeded("avatar '" + id +
                                        "' is still being loaded for another request and this "
                                        "request's deadline has passed; retry later");
      }
      continue;
    }
    if (entry && entry->state == AvatarState::kLoaded && !force) return entry->avatar;
    if (entry && entry->state == AvatarState::kFailed && !force &&
        options_.now() < entry->retry_at) {
      return entry->error;  // remembered: the files are not read again before retry_at
    }
    if (!entry) {
      entry = std::make_shared<Entry>();
      entry->id = id;
      entries_[id] = entry;
    }
    const bool reload = entry->avatar != nullptr;
    if (!reload && !MakeRoomLocked(released, 1, 0, id)) {
      if (entry->state == AvatarState::kUnloaded && entry->usage_count == 0 &&
          entry->consecutive_failures == 0 && entry->pins.load() == 0) {
        entries_.erase(id);  // never held anything
      }
      return Status::ResourceExhausted("avatar '" + id + "': all " +
                                       std::to_string(options_.max_models) +
                                       " avatar slots (max_models) are in use; retry later");
    }
    const AvatarState previous = entry->state;
    entry->state = AvatarState::kLoading;
    entry->load_attempts++;
    AccountLocked(*entry);
    auto ticket = std::make_shared<LoadTicket>();

    if (!deadline) {
      RunLoadLocked(lock, released, entry, reload, previous, *ticket);
    } else {
      // On a background thread, so that this call (and every other waiter) can stop
      // waiting at its own deadline while the load goes on.
      ++background_loads_;
      std::thread([this, entry, reload, previous, ticket] {
        {
          Released dropped(options_);  // after the lock below is released
          std::unique_lock<std::mutex> load_lock(mu_);
          RunLoadLocked(load_lock, dropped, entry, reload, previous, *ticket);
        }
        std::lock_guard<std::mutex> done_lock(mu_);
        if (--background_loads_ == 0) background_done_.notify_all();
      }).detach();
      if (!load_done_.wait_until(lock, *deadline, [&] { return ticket->done; })) {
        const double waited =
            std::chrono::duration<double, std::milli>(Clock::now() - ticket->started).count();
        return Status::DeadlineExceeded(
            "avatar '" + id + "' is still loading (" + std::to_string(int64_t(waited)) +
            " ms so far) and this request's deadline has passed; the load goes on in the "
            "background: retry later");
      }
    }
    if (!ticket->status.ok()) return ticket->status;
    if (loaded_now) *loaded_now = true;
    if (load_ms) *load_ms = ticket->load_ms;
    return ticket->avatar;
  }
}

void AvatarRegistry::RunLoadLocked(std::unique_lock<std::mutex>& lock, Released& released,
                                   const std::shared_ptr<Entry>& entry, bool reload,
                                   AvatarState previous, LoadTicket& ticket) {
  const std::string id = entry->id;
  // Whatever happens from here on, the load ends as loaded or failed, the ticket is
  // settled and the waiters are woken: each path below settles the state itself;
  // anything that escapes (it should not) is settled here as a failure.
  struct Settle {
    AvatarRegistry* registry;
    std::unique_lock<std::mutex>& lock;
    Entry& entry;
    LoadTicket& ticket;
    bool reload;
    bool done = false;
    ~Settle() {
      if (!lock.owns_lock()) lock.lock();
      entry.reserved_bytes = 0;
      if (!done && entry.state == AvatarState::kLoading) {
        const Status error = Status::Internal("avatar '" + entry.id + "': load abandoned");
        if (reload) {
          entry.state = AvatarState::kLoaded;
        } else {
          registry->RecordFailureLocked(entry, error);
        }
        ticket.status = error;
      }
      registry->AccountLocked(entry);
      ticket.done = true;
      registry->load_done_.notify_all();
    }
  } settle{this, lock, *entry, ticket, reload};
  // A failure of this attempt: a failed reload keeps the old avatar; a first load is
  // remembered (with backoff) unless `remember` is false (a transient refusal).
  auto fail = [&](const Status& error, bool remember) {
    settle.done = true;
    ticket.status = error;
    entry->reserved_bytes = 0;
    if (reload) {
      entry->state = AvatarState::kLoaded;
      LOG_WARN("avatar '%s' reload failed, keeping the loaded one: %s", id.c_str(),
               error.ToString().c_str());
    } else if (remember) {
      RecordFailureLocked(*entry, error);
    } else {
      entry->state =
          previous == AvatarState::kFailed ? AvatarState::kFailed : AvatarState::kUnloaded;
      // Forgets an entry that never held anything (an unknown id, a refused first load).
      auto found = entries_.find(id);
      if (found != entries_.end() && found->second == entry && !entry->avatar &&
          entry->state == AvatarState::kUnloaded && entry->usage_count == 0 &&
          entry->consecutive_failures == 0 && entry->pins.load() == 0) {
        entries_.erase(found);
      }
    }
  };

  // Outside the mutex: find the files, read crop_rects.json and frame 0's header.
  lock.unlock();
  std::optional<AvatarOptions> source;
  AvatarPlan plan;
  Status planned = Guarded("avatar '" + id + "': load", [&]() -> Status {
    source = SourceFor(id);
    if (!source) return Status::Ok();
    LIPSYNC_ASSIGN_OR_RETURN(plan, Avatar::Plan(*source));
    return Status::Ok();
  });
  lock.lock();
  if (planned.ok() && !source) {
    // No such avatar (any more): nothing to remember for an id that does not exist.
    return fail(
        Status::NotFound("avatar '" + id + "' does not exist: not in the config's models and no " +
                         (options_.model_root.empty()
                              ? std::string("model_root is set")
                              : (fs::path(options_.model_root) / id / "frames").string())),
        /*remember=*/false);
  }
  if (!planned.ok()) return fail(planned, /*remember=*/true);

  // The memory budget, before anything is decoded. Without a configured budget an
  // avatar that needs more than the machine's physical memory is still refused: it
  // could only end with the process killed.
  const int64_t estimate = plan.estimated_bytes;
  const std::string needs = "avatar '" + id + "' needs about " + std::to_string(estimate) +
                            " bytes decoded (" + std::to_string(plan.paths.size()) + " frames of " +
                            std::to_string(plan.width) + "x" + std::to_string(plan.height) + ")";
  if (options_.memory_limit_bytes > 0 && estimate > options_.memory_limit_bytes) {
    return fail(Status::ResourceExhausted(needs + "; capacity.memory_limit_mb allows " +
                                          std::to_string(options_.memory_limit_bytes) +
                                          " bytes over all avatars"),
                /*remember=*/true);
  }
  if (const int64_t physical = PhysicalMemoryBytes(); physical > 0 && estimate > physical) {
    return fail(Status::ResourceExhausted(needs + "; this machine has " + std::to_string(physical) +
                                          " bytes of memory"),
                /*remember=*/true);
  }
  if (options_.memory_limit_bytes > 0 && !MakeRoomLocked(released, 0, estimate, id)) {
    return fail(Status::ResourceExhausted(needs + "; the memory budget (" +
                                          std::to_string(options_.memory_limit_bytes) +
                                          " bytes) is held by avatars in use; retry later"),
                /*remember=*/false);
  }
  entry->reserved_bytes = estimate;
  AccountLocked(*entry);

  lock.unlock();
  Expected<std::shared_ptr<Avatar>> opened = Status::Internal("not opened");
  int64_t opened_bytes = 0;
  Status decoded = Guarded("avatar '" + id + "': load", [&]() -> Status {
    if (options_.before_decode) options_.before_decode(id);
    opened = Avatar::Open(*source, std::move(plan));
    if (opened.ok()) opened_bytes = (*opened)->memory_bytes();
    return opened.status();
  });
  lock.lock();
  entry->reserved_bytes = 0;
  if (!decoded.ok()) return fail(decoded, /*remember=*/true);

  settle.done = true;
  SetAvatarLocked(*entry, *opened, opened_bytes, released);  // a reload drops the old one
  entry->state = AvatarState::kLoaded;
  entry->load_ms = entry->avatar->load_ms();
  entry->error = Status::Ok();
  entry->consecutive_failures = 0;
  entry->last_used = options_.now();
  if (!MakeRoomLocked(released, 0, 0, id)) {
    const int64_t own = entry->avatar_bytes;
    entry->state = AvatarState::kUnloaded;
    SetAvatarLocked(*entry, nullptr, 0, released);
    ticket.status = Status::ResourceExhausted(
        "avatar '" + id + "' needs " + std::to_string(own) + " bytes; memory_limit_mb allows " +
        std::to_string(options_.memory_limit_bytes) +
        " bytes over all avatars and the others are in use; retry later or raise the limit");
    return;
  }
  ticket.avatar = entry->avatar;
  ticket.load_ms = entry->load_ms;
  LOG_INFO("avatar '%s' loaded: %d frames %dx%d, %.1f MB, %.1f ms", id.c_str(),
           entry->avatar->num_frames(), entry->avatar->width(), entry->avatar->height(),
           entry->avatar_bytes / 1e6, entry->load_ms);
}

Expected<AvatarHandle> AvatarRegistry::Acquire(const std::string& id, bool* loaded_now,
                                               double* load_ms,
                                               std::optional<Clock::time_point> deadline) {
  if (loaded_now) *loaded_now = false;
  if (load_ms) *load_ms = 0;
  LIPSYNC_RETURN_IF_ERROR(ValidateModelId(id));
  Released released(options_);
  std::unique_lock<std::mutex> lock(mu_);
  LIPSYNC_ASSIGN_OR_RETURN(std::shared_ptr<Avatar> avatar,
                           LoadLocked(lock, released, id, false, loaded_now, load_ms, deadline));
  const std::shared_ptr<Entry> entry = entries_[id];
  entry->usage_count++;
  entry->last_used = options_.now();
  entry->last_used_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
  AvatarHandle handle = Pin(entry, avatar);
  // Re-measure the avatar's bytes (its frame cache grows as requests use it) outside
  // the mutex: the avatar takes its own lock.
  lock.unlock();
  const int64_t bytes = avatar->memory_bytes();
  lock.lock();
  if (entry->avatar == avatar && entry->avatar_bytes != bytes) {
    entry->avatar_bytes = bytes;
    AccountLocked(*entry);
  }
  return handle;
}

Status AvatarRegistry::Load(const std::string& id, bool force_reload) {
  LIPSYNC_RETURN_IF_ERROR(ValidateModelId(id));
  Released released(options_);
  std::unique_lock<std::mutex> lock(mu_);
  auto loaded = LoadLocked(lock, released, id, force_reload, nullptr, nullptr, std::nullopt);
  return loaded.status();
}

Status AvatarRegistry::Unload(const std::string& id) {
  LIPSYNC_RETURN_IF_ERROR(ValidateModelId(id));
  Released released(options_);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end() ||
      (it->second->state != AvatarState::kLoaded && it->second->state != AvatarState::kFailed)) {
    return Status::NotFound("avatar '" + id + "' is not loaded");
  }
  Entry& entry = *it->second;
  entry.error = Status::Ok();
  entry.consecutive_failures = 0;
  entry.retry_at = {};
  entry.state = AvatarState::kUnloaded;
  SetAvatarLocked(entry, nullptr, 0, released);
  return Status::Ok();
}

void AvatarRegistry::RecordComposite(const std::string& id, double ms) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  it->second->composite_ms_sum += ms;
  it->second->composite_count++;
}

namespace {

AvatarStats StatsOf(const std::string& id, AvatarState state, const Avatar* a) {
  AvatarStats s;
  s.id = id;
  s.state = state;
  if (a) {
    s.num_frames = a->num_frames();
    s.frame_width = a->width();
    s.frame_height = a->height();
    s.cached_frames = a->cached_frames();
    s.memory_bytes = a->memory_bytes();
  }
  return s;
}

}  // namespace

Expected<AvatarStats> AvatarRegistry::Stats(const std::string& id) const {
  LIPSYNC_RETURN_IF_ERROR(ValidateModelId(id));
  std::unique_lock<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    lock.unlock();  // SourceFor looks at the disk
    if (!SourceFor(id)) return Status::NotFound("avatar '" + id + "' does not exist");
    return StatsOf(id, AvatarState::kUnloaded, nullptr);
  }
  const Entry& e = *it->second;
  AvatarStats s;
  s.usage_count = e.usage_count;
  s.last_used_unix_ms = e.last_used_unix_ms;
  s.load_ms = e.load_ms;
  s.error = e.state == AvatarState::kFailed ? e.error.message() : "";
  s.avg_composite_ms = e.composite_count ? e.composite_ms_sum / e.composite_count : 0;
  s.load_attempts = e.load_attempts;
  s.consecutive_failures = e.consecutive_failures;
  if (e.state == AvatarState::kFailed) {
    s.retry_in_seconds =
        std::max(0.0, std::chrono::duration<double>(e.retry_at - options_.now()).count());
  }
  const AvatarState state = e.state;
  std::shared_ptr<Avatar> avatar = e.avatar;
  lock.unlock();
  // The avatar's own figures (its lock) outside the registry mutex; if it was dropped
  // meanwhile, this copy is the last reference and is freed here, unlocked.
  const AvatarStats own = StatsOf(id, state, avatar.get());
  s.id = own.id;
  s.state = own.state;
  s.num_frames = own.num_frames;
  s.frame_width = own.frame_width;
  s.frame_height = own.frame_height;
  s.cached_frames = own.cached_frames;
  s.memory_bytes = own.memory_bytes;
  return s;
}

std::vector<AvatarStats> AvatarRegistry::LoadedStats() const {
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, e] : entries_) {
      if (e->state != AvatarState::kUnloaded) ids.push_back(id);
    }
  }
  std::vector<AvatarStats> out;
  for (const auto& id : ids) {
    auto s = Stats(id);
    if (s.ok()) out.push_back(*s);
  }
  return out;
}

bool AvatarRegistry::IsLoaded(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(id);
  return it != entries_.end() && it->second->state == AvatarState::kLoaded;
}

int64_t AvatarRegistry::evictions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return evictions_;
}

int AvatarRegistry::loaded_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return avatars_held_;
}

int64_t AvatarRegistry::memory_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bytes_held_;
}

int AvatarRegistry::SweepIdle() {
  // Re-measure every held avatar outside the mutex (each takes its own lock), then
  // apply the idle timeout and the memory cap under it; whatever is dropped is freed
  // after the mutex is unlocked.
  std::vector<std::pair<std::shared_ptr<Entry>, std::shared_ptr<Avatar>>> held;
  {
    std::lock_guard<std::mutex> lock(mu_);
    held.reserve(static_cast<size_t>(avatars_held_));
    for (const auto& [id, e] : entries_) {
      if (e->avatar) held.emplace_back(e, e->avatar);
    }
  }
  std::vector<int64_t> bytes(held.size());
  for (size_t i = 0; i < held.size(); ++i) bytes[i] = held[i].second->memory_bytes();

  // `held` (declared first) outlives the lock: our copies are released unlocked too.
  Released released(options_);
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t i = 0; i < held.size(); ++i) {
    Entry& e = *held[i].first;
    // Only if it still holds the avatar measured (not evicted or reloaded meanwhile).
    if (e.avatar == held[i].second && e.avatar_bytes != bytes[i]) {
      e.avatar_bytes = bytes[i];
      AccountLocked(e);
    }
  }
  int unloaded = 0;
  if (options_.idle_timeout.count() > 0) {
    auto now = options_.now();
    for (auto& [id, e] : entries_) {
      if (e->state == AvatarState::kLoaded && e->pins.load() == 0 &&
          now - e->last_used >= options_.idle_timeout) {
        e->state = AvatarState::kUnloaded;
        SetAvatarLocked(*e, nullptr, 0, released);
        unloaded++;
      }
    }
  }
  MakeRoomLocked(released, 0, 0, "");
  return unloaded;
}

}  // namespace lipsync::avatar
