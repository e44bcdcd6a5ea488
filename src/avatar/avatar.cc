#include "avatar/avatar.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>

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

// frame_NNNN.png, else frame_NNNN.jpg / .jpeg; "" if none exists.
std::string FindFramePath(const std::string& dir, int index) {
  char name[32];
  for (const char* ext : {"png", "jpg", "jpeg"}) {
    std::snprintf(name, sizeof(name), "frame_%04d.%s", index, ext);
    fs::path p = fs::path(dir) / name;
    std::error_code ec;
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  return "";
}

// The crop rect grown by `margin` on each side, clipped to the frame.
image::PixelRect Grown(const CropRect& r, int margin, int width, int height) {
  const int x1 = std::max(0, r.x1 - margin), y1 = std::max(0, r.y1 - margin);
  const int x2 = std::min(width, r.x2 + margin), y2 = std::min(height, r.y2 + margin);
  return {x1, y1, x2 - x1, y2 - y1};
}

}  // namespace

Expected<std::shared_ptr<Avatar>> Avatar::Open(const AvatarOptions& options) {
  auto start = std::chrono::steady_clock::now();
  std::shared_ptr<Avatar> a(new Avatar(options));
  std::error_code ec;
  if (!fs::is_directory(options.frames_dir, ec)) {
    return Status::NotFound("avatar '" + options.id + "': frames directory " + options.frames_dir +
                            " does not exist; expected frame_0000.png, frame_0001.png, ...");
  }
  LIPSYNC_ASSIGN_OR_RETURN(a->rects_, LoadCropRects(options.crop_rects_path));

  if (options.num_frames > 0) {
    for (int i = 0; i < options.num_frames; ++i) {
      std::string p = FindFramePath(options.frames_dir, i);
      if (p.empty()) {
        char name[32];
        std::snprintf(name, sizeof(name), "frame_%04d.png", i);
        return Status::NotFound(
            "avatar '" + options.id + "': " + (fs::path(options.frames_dir) / name).string() +
            " (or .jpg) is missing; num_frames is " + std::to_string(options.num_frames));
      }
      a->paths_.push_back(std::move(p));
    }
  } else {
    for (int i = 0;; ++i) {
      std::string p = FindFramePath(options.frames_dir, i);
      if (p.empty()) break;
      a->paths_.push_back(std::move(p));
    }
    if (a->paths_.empty()) {
      return Status::NotFound("avatar '" + options.id + "': no frame_0000.png (or .jpg) in " +
                              options.frames_dir);
    }
  }
  a->num_frames_ = static_cast<int>(a->paths_.size());

  // The first frame fixes the size every other frame must have.
  LIPSYNC_ASSIGN_OR_RETURN(image::Image first, image::ReadImageFile(a->paths_[0]));
  a->width_ = first.width;
  a->height_ = first.height;
  LIPSYNC_RETURN_IF_ERROR(
      ValidateCropRects(a->rects_, a->num_frames_, a->width_, a->height_, options.crop_rects_path));

  a->frames_.resize(a->num_frames_);
  a->lru_pos_.resize(a->num_frames_);
  int to_load = options.preload ? a->num_frames_ : std::min(1, a->num_frames_);
  for (int i = 0; i < to_load; ++i) {
    LIPSYNC_ASSIGN_OR_RETURN(FrameHandle f, a->LoadFrame(i));
    a->frames_[i] = f;
    if (!options.preload) a->lru_pos_[i] = a->lru_.insert(a->lru_.begin(), i);
    a->cached_++;
    a->cached_bytes_ += static_cast<int64_t>(f->memory_bytes());
  }
  a->load_ms_ =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return a;
}

Expected<image::Image> Avatar::ReadOriginal(int index) const {
  if (index < 0 || index >= num_frames_) {
    return Status::InvalidArgument("avatar '" + options_.id + "': frame " + std::to_string(index) +
                                   " out of range; expected 0.." + std::to_string(num_frames_ - 1));
  }
  const std::string& path = paths_[index];
  LIPSYNC_ASSIGN_OR_RETURN(image::Image img, image::ReadImageFile(path));
  if (img.width != width_ || img.height != height_ || img.channels != 3) {
    return Status::InvalidArgument("avatar '" + options_.id + "': " + path + " is " +
                                   std::to_string(img.width) + "x" + std::to_string(img.height) +
                                   "; expected " + std::to_string(width_) + "x" +
                                   std::to_string(height_) + " like frame 0");
  }
  return img;
}

Expected<FrameHandle> Avatar::LoadFrame(int index) const {
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

Expected<FrameHandle> Avatar::Frame(int index) {
  if (index < 0 || index >= num_frames_) {
    return Status::InvalidArgument("avatar '" + options_.id + "': frame " + std::to_string(index) +
                                   " out of range; expected 0.." + std::to_string(num_frames_ - 1));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (frames_[index]) {
      if (!options_.preload) lru_.splice(lru_.begin(), lru_, lru_pos_[index]);
      return frames_[index];
    }
  }
  // Decode outside the lock; two threads may decode the same frame, the first insert wins.
  LIPSYNC_ASSIGN_OR_RETURN(FrameHandle loaded, LoadFrame(index));
  std::lock_guard<std::mutex> lock(mu_);
  if (frames_[index]) return frames_[index];
  frames_[index] = loaded;
  lru_pos_[index] = lru_.insert(lru_.begin(), index);
  cached_++;
  cached_bytes_ += static_cast<int64_t>(loaded->memory_bytes());
  int limit = std::max(1, options_.cache_frames);
  while (cached_ > limit) {
    int victim = lru_.back();
    lru_.pop_back();
    cached_bytes_ -= static_cast<int64_t>(frames_[victim]->memory_bytes());
    frames_[victim].reset();
    cached_--;
  }
  return loaded;
}

int64_t Avatar::memory_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_bytes_ + static_cast<int64_t>(rects_.capacity() * sizeof(CropRect));
}

int Avatar::cached_frames() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

}  // namespace lipsync::avatar
