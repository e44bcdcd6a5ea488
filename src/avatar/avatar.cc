#include "avatar/avatar.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <new>

#include "avatar/prepared_store.h"
#include "common/guarded.h"
#include "common/log.h"

namespace lipsync::avatar {

namespace fs = std::filesystem;

int BackgroundIndex(int64_t start, int64_t i, int n, LoopMode mode) {
  if (n <= 1) return 0;
  int64_t pos = std::max<int64_t>(0, start) + std::max<int64_t>(0, i);
  if (mode == LoopMode::kWrap) return static_cast<int>(pos % n);
  int64_t period = 2 * static_cast<int64_t>(n - 1);
  int64_t p = pos % period;
  return static_cast<int>(p < n ? p : period - p);
}

namespace {

// Index of `name` if it is frame_NNNN.<ext> exactly as "frame_%04d.<ext>" spells index
// NNNN, with ext png (rank 0), jpg (1) or jpeg (2); -1 otherwise.
int FrameIndex(const char* name, int* rank) {
  if (std::strncmp(name, "frame_", 6) != 0) return -1;
  const char* digits = name + 6;
  const char* dot = std::strchr(digits, '.');
  if (dot == nullptr || dot - digits < 4 || dot - digits > 9) return -1;
  int index = 0;
  for (const char* c = digits; c < dot; ++c) {
    if (*c < '0' || *c > '9') return -1;
    index = index * 10 + (*c - '0');
  }
  static const char* const kExts[] = {"png", "jpg", "jpeg"};
  for (int r = 0; r < 3; ++r) {
    if (std::strcmp(dot + 1, kExts[r]) != 0) continue;
    char canonical[32];
    std::snprintf(canonical, sizeof(canonical), "frame_%04d.%s", index, kExts[r]);
    if (std::strcmp(canonical, name) != 0) return -1;  // e.g. frame_00001.png
    *rank = r;
    return index;
  }
  return -1;
}

// True when `path` is `root` or below it (both canonical).
bool Inside(const fs::path& root, const fs::path& path) {
  auto [r, p] = std::mismatch(root.begin(), root.end(), path.begin(), path.end());
  return r == root.end();
}

// `path` with symlinks resolved, checked to lie inside `root` (canonical).
Expected<std::string> Confine(const fs::path& root, const std::string& path,
                              const std::string& id) {
  std::error_code ec;
  const fs::path resolved = fs::weakly_canonical(path, ec);
  if (ec) {
    return Status::NotFound("avatar '" + id + "': cannot resolve " + path + ": " + ec.message());
  }
  if (!Inside(root, resolved)) {
    return Status::PermissionDenied("avatar '" + id + "': " + path + " resolves to " +
                                    resolved.string() + ", which leaves model_root " +
                                    root.string() + "; expected the tenant's files inside it");
  }
  return resolved.string();
}

Status TooManyFrames(const AvatarOptions& o, const std::string& what) {
  return Status::InvalidArgument("avatar '" + o.id + "': " + what + "; expected at most " +
                                 std::to_string(o.max_frames) + " frames (limits.max_frames)");
}

// The frame files of `dir` in index order: per index frame_NNNN.png, else .jpg, else
// .jpeg (a regular file, symlinks followed), from 0000 up to the first missing index,
// or exactly options.num_frames of them. One readdir pass names them all: no stat per
// frame. `dir` is the frames directory as configured, or (confined: `root` set) its
// real path inside `root`; a plain file found in it is inside too, and only a frame
// that is a symlink is resolved (its real path is returned, and must stay inside root).
Expected<std::vector<std::string>> ListFrames(const AvatarOptions& options, const std::string& dir,
                                              const fs::path& root) {
  // Entries the scan reads at most: three names per frame the limits allow, and room
  // for other files; beyond that the directory is refused rather than read on.
  const int64_t max_entries = 3 * (int64_t(options.max_frames) + 1) + 4096;
  const int index_limit = std::max(options.num_frames, options.max_frames + 1);
  struct Found {
    unsigned char type[3] = {DT_UNKNOWN, DT_UNKNOWN, DT_UNKNOWN};
    bool present[3] = {false, false, false};
  };
  std::vector<Found> found;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return Status::NotFound("avatar '" + options.id + "': cannot read frames directory " + dir +
                            ": " + std::strerror(errno));
  }
  std::unique_ptr<DIR, int (*)(DIR*)> closer(d, &::closedir);
  int64_t entries = 0;
  while (const dirent* e = ::readdir(d)) {
    if (++entries > max_entries) {
      return TooManyFrames(options, "the frames directory " + options.frames_dir +
                                        " holds more than " + std::to_string(max_entries) +
                                        " entries");
    }
    int rank = 0;
    const int index = FrameIndex(e->d_name, &rank);
    if (index < 0 || index >= index_limit) continue;
    if (static_cast<int>(found.size()) <= index) found.resize(size_t(index) + 1);
    found[size_t(index)].present[rank] = true;
    found[size_t(index)].type[rank] = e->d_type;
  }
  static const char* const kExts[] = {"png", "jpg", "jpeg"};
  std::vector<std::string> paths;
  const int wanted = options.num_frames > 0 ? options.num_frames : index_limit;
  for (int i = 0; i < wanted; ++i) {
    std::string path;
    for (int r = 0; r < 3 && path.empty() && i < static_cast<int>(found.size()); ++r) {
      if (!found[size_t(i)].present[r]) continue;
      char name[32];
      std::snprintf(name, sizeof(name), "frame_%04d.%s", i, kExts[r]);
      const std::string candidate = (fs::path(dir) / name).string();
      unsigned char type = found[size_t(i)].type[r];
      if (type == DT_UNKNOWN) {  // file systems without d_type: one lstat
        struct stat st;
        if (::fstatat(::dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        type = S_ISREG(st.st_mode) ? DT_REG : S_ISLNK(st.st_mode) ? DT_LNK : DT_DIR;
      }
      if (type == DT_REG) {
        path = candidate;
      } else if (type == DT_LNK) {
        struct stat st;  // a symlink counts when it leads to a regular file
        if (::fstatat(::dirfd(d), name, &st, 0) != 0 || !S_ISREG(st.st_mode)) continue;
        if (root.empty()) {
          path = candidate;
        } else {
          LIPSYNC_ASSIGN_OR_RETURN(path, Confine(root, candidate, options.id));
        }
      }
    }
    if (path.empty()) {
      if (options.num_frames <= 0) break;
      char name[32];
      std::snprintf(name, sizeof(name), "frame_%04d.png", i);
      return Status::NotFound(
          "avatar '" + options.id + "': " + (fs::path(options.frames_dir) / name).string() +
          " (or .jpg) is missing; num_frames is " + std::to_string(options.num_frames));
    }
    if (i >= options.max_frames) {
      return TooManyFrames(options, "found more than " + std::to_string(options.max_frames) +
                                        " frame files in " + options.frames_dir);
    }
    paths.push_back(std::move(path));
  }
  if (paths.empty()) {
    return Status::NotFound("avatar '" + options.id + "': no frame_0000.png (or .jpg) in " +
                            options.frames_dir);
  }
  return paths;
}

// The crop rect grown by `margin` on each side, clipped to the frame.
image::PixelRect Grown(const CropRect& r, int margin, int width, int height) {
  const int x1 = std::max(0, r.x1 - margin), y1 = std::max(0, r.y1 - margin);
  const int x2 = std::min(width, r.x2 + margin), y2 = std::min(height, r.y2 + margin);
  return {x1, y1, x2 - x1, y2 - y1};
}

// Bytes one decoded frame holds (see AvatarPlan::estimated_bytes).
int64_t FrameEstimate(const AvatarOptions& o, int w, int h, const CropRect& rect) {
  const int64_t full = int64_t(w) * h * 3;
  if (!o.region_jpeg && !o.compact) return full;
  // The cached JPEG: ~1.5 bits per pixel at q75 on textured frames, rounded up.
  const int64_t jpeg = int64_t(w) * h / 4 + 1024;
  if (!o.compact) return full + jpeg;
  const int interval_px =
      16 * std::max(1, image::EffectiveRestartInterval(w, o.restart_interval_mcus));
  const image::PixelRect grown = Grown(rect, std::max(0, o.compact_margin_px), w, h);
  const int64_t held_w = std::min<int64_t>(w, (grown.width / interval_px + 2) * interval_px);
  const int64_t held_h = std::min<int64_t>(h, (grown.height / 16 + 2) * 16);
  if (held_w * held_h * 2 > int64_t(w) * h) return full + jpeg;  // kept whole
  return held_w * held_h * 3 + jpeg;
}

}  // namespace

Expected<AvatarPlan> Avatar::Plan(const AvatarOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  Expected<AvatarPlan> planned = PlanUnguarded(options);
  if (planned.ok()) {
    planned->plan_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  return planned;
}

Expected<AvatarPlan> Avatar::PlanUnguarded(const AvatarOptions& options) {
  return Guarded("avatar '" + options.id + "': planning the load", [&]() -> Expected<AvatarPlan> {
    AvatarPlan plan;
    std::error_code ec;
    if (!fs::is_directory(options.frames_dir, ec)) {
      return Status::NotFound("avatar '" + options.id + "': frames directory " +
                              options.frames_dir +
                              " does not exist; expected frame_0000.png, frame_0001.png, ...");
    }
    fs::path root;
    std::string frames_dir = options.frames_dir;
    std::string crop_rects_path = options.crop_rects_path;
    if (!options.confine_to.empty()) {
      root = fs::canonical(options.confine_to, ec);
      if (ec) {
        return Status::NotFound("avatar '" + options.id + "': model_root " + options.confine_to +
                                " cannot be resolved: " + ec.message());
      }
      LIPSYNC_ASSIGN_OR_RETURN(frames_dir, Confine(root, options.frames_dir, options.id));
      LIPSYNC_ASSIGN_OR_RETURN(crop_rects_path, Confine(root, crop_rects_path, options.id));
    }
    CropRectsLimits rect_limits = options.crop_rects_limits;
    rect_limits.max_rects = std::min(rect_limits.max_rects, options.max_frames);
    LIPSYNC_ASSIGN_OR_RETURN(plan.rects, LoadCropRects(crop_rects_path, rect_limits));

    if (options.num_frames > options.max_frames) {
      return TooManyFrames(options, "num_frames is " + std::to_string(options.num_frames));
    }
    // Confined: the frames directory is resolved once; its frames are then found by
    // name in its real path (ListFrames), not each resolved component by component.
    LIPSYNC_ASSIGN_OR_RETURN(plan.paths, ListFrames(options, frames_dir, root));
    const int num_frames = static_cast<int>(plan.paths.size());
    plan.crop_rects_path = crop_rects_path;

    if (!options.prepared_dir.empty()) {
      LIPSYNC_ASSIGN_OR_RETURN(plan.source_fingerprint,
                               FingerprintSources(plan.paths, crop_rects_path));
      const std::string path = PreparedPath(options.prepared_dir, options.id);
      auto file = PreparedFile::Open(path);
      if (file.ok()) {
        const PreparedSettings& have = (*file)->settings();
        PreparedSettings want = SettingsFor(options, have.width, have.height, num_frames);
        want.source_fingerprint = plan.source_fingerprint;
        if (have == want) {
          plan.prepared = *file;
          plan.rects = plan.prepared->rects();
          plan.width = have.width;
          plan.height = have.height;
          plan.estimated_bytes =
              int64_t(plan.rects.capacity() * sizeof(CropRect)) + plan.prepared->memory_bytes();
          if (options.preload) {
            for (int i = 0; i < num_frames; ++i) {
              plan.estimated_bytes += plan.prepared->frame_memory_bytes(i);
            }
          }
          return plan;
        }
        LOG_INFO("avatar '%s': prepared file %s is stale (sources or settings changed); rebuilding",
                 options.id.c_str(), path.c_str());
      } else if (file.status().code() != StatusCode::kNotFound) {
        LOG_WARN("avatar '%s': %s; rebuilding it", options.id.c_str(),
                 file.status().ToString().c_str());
      }
    }

    // The first frame's header fixes the size every frame must have; nothing decoded.
    LIPSYNC_ASSIGN_OR_RETURN(image::ImageInfo first,
                             image::ReadImageFileInfo(plan.paths[0], options.image_limits));
    plan.width = first.width;
    plan.height = first.height;
    LIPSYNC_RETURN_IF_ERROR(
        ValidateCropRects(plan.rects, num_frames, plan.width, plan.height, crop_rects_path));
    // With a store but no current file, frames are decoded on demand until it is built.
    const int decoded = options.preload && options.prepared_dir.empty() ? num_frames : 1;
    plan.estimated_bytes = int64_t(plan.rects.capacity() * sizeof(CropRect));
    for (int i = 0; i < decoded; ++i) {
      plan.estimated_bytes += FrameEstimate(options, plan.width, plan.height, plan.rects[i]);
    }
    return plan;
  });
}

Expected<std::shared_ptr<Avatar>> Avatar::Open(const AvatarOptions& options) {
  LIPSYNC_ASSIGN_OR_RETURN(AvatarPlan plan, Plan(options));
  return Open(options, std::move(plan));
}

Expected<std::shared_ptr<Avatar>> Avatar::Open(const AvatarOptions& options, AvatarPlan plan) {
  return Guarded("avatar '" + options.id + "': loading",
                 [&] { return OpenUnguarded(options, std::move(plan)); });
}

Expected<std::shared_ptr<Avatar>> Avatar::OpenUnguarded(const AvatarOptions& options,
                                                        AvatarPlan plan) {
  auto start = std::chrono::steady_clock::now();
  std::shared_ptr<Avatar> a(new Avatar(options));
  if (plan.paths.empty() || plan.rects.size() != plan.paths.size()) {
    return Status::InvalidArgument("avatar '" + options.id +
                                   "': the plan has no frames or not one rect per frame");
  }
  a->rects_ = std::move(plan.rects);
  a->paths_ = std::move(plan.paths);
  a->num_frames_ = static_cast<int>(a->paths_.size());
  a->width_ = plan.width;
  a->height_ = plan.height;

  a->self_ = a;
  a->prepared_ = plan.prepared;

  a->frames_.resize(a->num_frames_);
  a->lru_pos_.resize(a->num_frames_);
  // Prepared: nothing decoded (preload copies every frame from the file). A store but no
  // file: frame 0 decoded (the sources are sound), the rest on demand, the file built in
  // the background. No store: as configured.
  int to_load = options.preload ? a->num_frames_ : std::min(1, a->num_frames_);
  if (plan.prepared && !options.preload) to_load = 0;
  if (!plan.prepared && !options.prepared_dir.empty()) to_load = 1;
  for (int i = 0; i < to_load; ++i) {
    LIPSYNC_ASSIGN_OR_RETURN(FrameHandle f, a->Fetch(i, plan.prepared));
    a->frames_[i] = f;
    a->lru_pos_[i] = a->lru_.insert(a->lru_.begin(), i);
    a->cached_++;
    a->cached_bytes_ += static_cast<int64_t>(f->memory_bytes());
  }
  if (!plan.prepared && !options.prepared_dir.empty()) a->SchedulePrepare();
  a->load_ms_ =
      plan.plan_ms +
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return a;
}

void Avatar::SchedulePrepare() {
  std::weak_ptr<Avatar> weak = self_;
  const bool queued =
      SchedulePreparation(options_, [weak](Expected<std::shared_ptr<const PreparedFile>> file) {
        if (!file.ok()) return;  // logged by the worker; the next load tries again
        if (auto a = weak.lock()) a->AttachPrepared(std::move(file).value());
      });
  if (!queued) {
    LOG_WARN("avatar '%s': the preparation queue is full; its frames stay decoded on demand",
             options_.id.c_str());
  }
}

void Avatar::AttachPrepared(std::shared_ptr<const PreparedFile> file) {
  const PreparedSettings& s = file->settings();
  if (s.num_frames != num_frames_ || s.width != width_ || s.height != height_ ||
      !std::equal(rects_.begin(), rects_.end(), file->rects().begin(),
                  [](const CropRect& a, const CropRect& b) {
                    return a.x1 == b.x1 && a.y1 == b.y1 && a.x2 == b.x2 && a.y2 == b.y2;
                  })) {
    LOG_WARN("avatar '%s': prepared file %s does not match the loaded sources; not used",
             options_.id.c_str(), file->path().c_str());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    prepared_ = std::move(file);
  }
  prepared_cv_.notify_all();
}

Expected<FrameHandle> Avatar::Fetch(int index, const std::shared_ptr<const PreparedFile>& file) {
  if (file) {
    auto frame = file->ReadFrame(index);
    if (frame.ok()) return frame;
    LOG_WARN("avatar '%s': %s; serving frames from the sources and rebuilding the file",
             options_.id.c_str(), frame.status().ToString().c_str());
    bool dropped = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (prepared_ == file) {
        prepared_.reset();
        dropped = true;
      }
    }
    if (dropped) {
      file->RemoveIfCurrent();
      SchedulePrepare();
    }
  }
  return LoadFrame(index);
}

bool Avatar::prepared() const {
  std::lock_guard<std::mutex> lock(mu_);
  return prepared_ != nullptr;
}

bool Avatar::WaitPrepared(std::chrono::milliseconds timeout) const {
  std::unique_lock<std::mutex> lock(mu_);
  return prepared_cv_.wait_for(lock, timeout, [this] { return prepared_ != nullptr; });
}

Expected<image::Image> Avatar::ReadOriginal(int index) const {
  if (index < 0 || index >= num_frames_) {
    return Status::InvalidArgument("avatar '" + options_.id + "': frame " + std::to_string(index) +
                                   " out of range; expected 0.." + std::to_string(num_frames_ - 1));
  }
  const std::string& path = paths_[index];
  LIPSYNC_ASSIGN_OR_RETURN(image::Image img, image::ReadImageFile(path, options_.image_limits));
  if (img.width != width_ || img.height != height_ || img.channels != 3) {
    return Status::InvalidArgument("avatar '" + options_.id + "': " + path + " is " +
                                   std::to_string(img.width) + "x" + std::to_string(img.height) +
                                   "; expected " + std::to_string(width_) + "x" +
                                   std::to_string(height_) + " like frame 0");
  }
  return img;
}

Expected<FrameHandle> Avatar::LoadFrame(int index) const {
  return Guarded("avatar '" + options_.id + "': " + paths_[index],
                 [&] { return LoadFrameUnguarded(index); });
}

Expected<FrameHandle> Avatar::LoadFrameUnguarded(int index) const {
  const std::string& path = paths_[index];
  LIPSYNC_ASSIGN_OR_RETURN(image::Image img, ReadOriginal(index));
  auto f = std::make_shared<BackgroundFrame>();
  f->frame_width = width_;
  f->frame_height = height_;
  f->pixels_rect = {0, 0, width_, height_};
  if (options_.region_jpeg || options_.compact) {
    image::JpegSettings settings;
    settings.quality = options_.jpeg_quality;
    settings.restart_interval_mcus = options_.restart_interval_mcus;
    auto jpeg = image::RegionJpegBackground::Create(img.pixels.data(), width_, height_,
                                                    img.stride(), settings);
    if (!jpeg.ok()) return jpeg.status().WithContext("avatar '" + options_.id + "': " + path);
    f->jpeg = std::make_shared<const image::RegionJpegBackground>(std::move(jpeg).value());
  }
  if (!options_.compact || !f->jpeg) {
    f->pixels = std::move(img);
    return FrameHandle(std::move(f));
  }
  // Exactly what the pipeline reads: the crop rect (visual input, paste-back) inside
  // the restart intervals the region encode re-encodes for it.
  const CropRect& rect = rects_[index];
  const image::PixelRect grown =
      Grown(rect, std::max(0, options_.compact_margin_px), width_, height_);
  const image::PixelRect held = f->jpeg->ReadRect(grown);
  if (int64_t(held.width) * held.height * 2 > int64_t(width_) * height_) {
    f->pixels = std::move(img);  // most of the frame anyway: keep it whole
    return FrameHandle(std::move(f));
  }
  f->pixels_rect = held;
  f->pixels = image::Image(held.width, held.height, 3);
  for (int y = 0; y < held.height; ++y) {
    std::copy_n(img.row(held.y + y) + size_t(held.x) * 3, size_t(held.width) * 3, f->pixels.row(y));
  }
  return FrameHandle(std::move(f));
}

namespace {
std::atomic<int64_t> g_cache_hits{0};
std::atomic<int64_t> g_cache_misses{0};
}  // namespace

FrameCacheCounts BackgroundCacheCounts() {
  return {g_cache_hits.load(std::memory_order_relaxed),
          g_cache_misses.load(std::memory_order_relaxed)};
}

Expected<FrameHandle> Avatar::Frame(int index) {
  if (index < 0 || index >= num_frames_) {
    return Status::InvalidArgument("avatar '" + options_.id + "': frame " + std::to_string(index) +
                                   " out of range; expected 0.." + std::to_string(num_frames_ - 1));
  }
  std::shared_ptr<const PreparedFile> file;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (frames_[index]) {
      lru_.splice(lru_.begin(), lru_, lru_pos_[index]);
      g_cache_hits.fetch_add(1, std::memory_order_relaxed);
      return frames_[index];
    }
    if (auto it = broken_.find(index); it != broken_.end()) return it->second;
    file = prepared_;
  }
  g_cache_misses.fetch_add(1, std::memory_order_relaxed);
  // Read or decode outside the lock; two threads may load the same frame, the first
  // insert wins.
  Expected<FrameHandle> fetched = Fetch(index, file);
  if (!fetched.ok()) {
    const StatusCode code = fetched.status().code();
    if (code == StatusCode::kInvalidArgument || code == StatusCode::kNotFound) {
      std::lock_guard<std::mutex> lock(mu_);
      broken_.emplace(index, fetched.status());
    }
    return fetched.status();
  }
  FrameHandle loaded = std::move(fetched).value();
  std::vector<FrameHandle> evicted;  // freed after the lock is released
  std::lock_guard<std::mutex> lock(mu_);
  if (frames_[index]) return frames_[index];
  frames_[index] = loaded;
  lru_pos_[index] = lru_.insert(lru_.begin(), index);
  cached_++;
  cached_bytes_ += static_cast<int64_t>(loaded->memory_bytes());
  const int limit = options_.preload ? num_frames_ : std::max(1, options_.cache_frames);
  while (cached_ > limit) {
    int victim = lru_.back();
    lru_.pop_back();
    cached_bytes_ -= static_cast<int64_t>(frames_[victim]->memory_bytes());
    evicted.push_back(std::move(frames_[victim]));
    cached_--;
  }
  return loaded;
}

int64_t Avatar::memory_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_bytes_ + static_cast<int64_t>(rects_.capacity() * sizeof(CropRect)) +
         (prepared_ ? prepared_->memory_bytes() : 0);
}

int Avatar::cached_frames() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

}  // namespace lipsync::avatar
