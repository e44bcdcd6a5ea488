// One tenant's avatar: its background frames and face crop rects.
//
// Frames come from `<frames_dir>/frame_NNNN.png` (or .jpg), NNNN from 0000. With
// `preload` every frame is decoded at Open; otherwise an LRU of `cache_frames`
// decoded frames is kept and the rest are read from disk on demand.
//
// Two storage forms per frame (BackgroundFrame):
//  - full: the whole decoded RGB frame;
//  - compact (issue 6): the frame's JPEG, encoded once with restart intervals, plus
//    only the pixels the pipeline reads: the crop rect snapped out to the restart
//    intervals the region encode re-encodes for it (RegionJpegBackground::ReadRect),
//    e.g. 256x192 px for a 182-px rect at 1280x720. The compositor re-encodes only
//    those intervals and splices them into the cached JPEG, so the full frame is never
//    held decoded.
// With region_jpeg (and not compact) the whole frame is kept as well as its JPEG.
//
// The files are a tenant's, so untrusted: Plan() reads only crop_rects.json and the
// first frame's header (sizes and counts checked against AvatarOptions' limits, paths
// confined to `confine_to`) and estimates the bytes Open will hold, so that a caller
// can check its memory budget before anything is decoded; Open() then decodes within
// the same limits. No exception leaves this class (allocation failures are errors).
//
// Prepared store (issue 11, avatar/prepared_store.h): with `prepared_dir` set, Plan
// looks for a current prepared file (same sources, settings and format version: one
// stat per source file, so that a frame rewritten in place is noticed; the directory's
// mtime alone would miss it, and the fingerprint of files prepared before stays); if
// there is one, rects and sizes come from it, Open decodes nothing (preload: copies every
// frame from the file) and a frame is read from the file when first touched, so source
// PNGs are never decoded on the serving path. Without one (never prepared, stale, or
// corrupt: logged with its path), Open decodes only frame 0, frames are decoded on
// demand as without preload, and the file is built once on the background worker; the
// Avatar switches to it when it is ready. A frame that fails its checksum later is
// served from its source, the file is logged, removed and rebuilt. What memory_bytes()
// counts is what is held in memory (copied frames, rects, table), never the file.
// Without preload at most `cache_frames` frames are held (LRU); with preload, every
// frame once touched.
//
// Thread-safe (internal mutex). A FrameHandle stays valid while it lives, even if the
// frame leaves the cache or the Avatar is destroyed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "avatar/crop_rects.h"
#include "common/status.h"
#include "image/image.h"
#include "image/region_jpeg.h"

namespace lipsync::avatar {

class PreparedFile;

enum class LoopMode { kWrap, kPingPong };

// Background frame of output i of a request starting at `start` over n frames:
// kWrap: (start + i) mod n; kPingPong: position (start + i) in 0,1,..,n-1,n-2,..,1,0,1,..
// start and i must be >= 0, n >= 1.
int BackgroundIndex(int64_t start, int64_t i, int n, LoopMode mode);

// True when `rect` lies inside `area`.
inline bool Covers(const image::PixelRect& area, const CropRect& rect) {
  return rect.x1 >= area.x && rect.y1 >= area.y && rect.x2 <= area.x + area.width &&
         rect.y2 <= area.y + area.height;
}

struct BackgroundFrame {
  int frame_width = 0;
  int frame_height = 0;
  // RGB pixels of `pixels_rect`: the whole frame, or in compact mode the region
  // encode's ReadRect of the crop rect (plus margin).
  image::Image pixels;
  image::PixelRect pixels_rect;
  // The original frame encoded once with restart intervals (region JPEG output);
  // null when region JPEG is off.
  std::shared_ptr<const image::RegionJpegBackground> jpeg;

  bool compact() const {
    return pixels_rect.width < frame_width || pixels_rect.height < frame_height;
  }
  size_t memory_bytes() const {
    return pixels.pixels.capacity() + (jpeg ? static_cast<size_t>(jpeg->memory_bytes()) : 0);
  }
};
using FrameHandle = std::shared_ptr<const BackgroundFrame>;

struct AvatarOptions {
  std::string id;
  std::string frames_dir;
  std::string crop_rects_path;
  int num_frames = 0;  // 0: count frame_NNNN files from 0000 upwards
  bool preload = true;
  int cache_frames = 600;  // LRU size when !preload (>= 1)
  // Keep each frame's JPEG (restart intervals) for region-only JPEG output at
  // `jpeg_quality`.
  bool region_jpeg = false;
  int jpeg_quality = 75;
  // Restart interval of the cached JPEG in 16-px MCUs (see image::JpegSettings). Also
  // the horizontal granularity of a compact frame's held pixels: 2 keeps 32-px columns
  // (about 2/3 of the pixels 4 keeps for a 180-px rect) for about 4% more JPEG bytes.
  int restart_interval_mcus = 2;
  // Compact storage (implies the JPEG): keep only the pixels the region encode reads
  // for the crop rect grown by `compact_margin_px` (0: exactly what the pipeline
  // reads). A frame whose region would be more than half of it is kept whole.
  bool compact = false;
  int compact_margin_px = 0;
  // Bounds on the tenant's files (CompositingConfig::Limits): each frame file's size
  // and dimensions, crop_rects.json's size, depth and entry count, and the frame count.
  image::DecodeLimits image_limits;
  CropRectsLimits crop_rects_limits;
  int max_frames = 100000;
  // Set (e.g. model_root): the frames directory, crop_rects.json and every frame must
  // resolve, symlinks followed, to a path inside this directory; PERMISSION_DENIED
  // otherwise. The frames directory is resolved once and its frames are found by name
  // in its real path from one directory scan: a regular file there is inside, and only
  // a frame that is a symlink is resolved (and must stay inside). Frames are read
  // through these paths.
  std::string confine_to;
  // Set: the prepared store directory (`<prepared_dir>/<id>.lsavatar`, see above).
  std::string prepared_dir;
};

// What Avatar::Plan learns without decoding any pixels.
struct AvatarPlan {
  std::vector<CropRect> rects;
  std::vector<std::string> paths;  // frame files, in order
  int width = 0;                   // from frame 0's header
  int height = 0;
  // Bytes the Avatar will hold once Open returns (every frame when preloading, else
  // the one frame Open decodes): frames x w x h x 3 for full frames, the JPEG and the
  // held region for compact ones (an estimate).
  int64_t estimated_bytes = 0;
  // With AvatarOptions::prepared_dir: the resolved crop_rects.json, the sources'
  // fingerprint, and the prepared file when a current one exists.
  std::string crop_rects_path;
  uint64_t source_fingerprint = 0;
  std::shared_ptr<const PreparedFile> prepared;
  // Time Plan took (file lookups, crop_rects.json, the freshness check); Open adds it
  // to the Avatar's load_ms().
  double plan_ms = 0;
};

class Avatar {
 public:
  // Reads the crop rects, counts the frames, reads frame 0's header and estimates the
  // decoded bytes; decodes no pixels. NOT_FOUND for a missing directory/file,
  // INVALID_ARGUMENT for a file over the limits or malformed, PERMISSION_DENIED for a
  // path that leaves confine_to. Errors name the file.
  static Expected<AvatarPlan> Plan(const AvatarOptions& options);
  // Plan, then Open(options, plan).
  static Expected<std::shared_ptr<Avatar>> Open(const AvatarOptions& options);
  // Decodes the planned frames (all with preload, else the first; every frame must
  // have frame 0's size) within options.image_limits. Errors name the file.
  static Expected<std::shared_ptr<Avatar>> Open(const AvatarOptions& options, AvatarPlan plan);

  const std::string& id() const { return options_.id; }
  int num_frames() const { return num_frames_; }
  int width() const { return width_; }
  int height() const { return height_; }
  // Crop rect of background frame `index` (0 <= index < num_frames).
  const CropRect& rect(int index) const { return rects_[index]; }

  // Background frame `index`; INVALID_ARGUMENT if out of range, NOT_FOUND /
  // INVALID_ARGUMENT naming the file if it vanished or became unreadable (remembered:
  // a broken frame is answered with the same error, without touching the disk, for as
  // long as this Avatar lives).
  Expected<FrameHandle> Frame(int index);

  // Bytes held now: cached frames (pixels + JPEG) and rects.
  int64_t memory_bytes() const;
  int cached_frames() const;
  // Time the load took: Plan (finding the files, the prepared file's check) and Open.
  double load_ms() const { return load_ms_; }

  // Frame `index` decoded from its file, whole and exact (for output a compact frame
  // cannot give, e.g. a JPEG quality other than the cached one). Same errors as Frame;
  // the caller owns the image. Not cached.
  Expected<image::Image> ReadOriginal(int index) const;

  // Path of frame `index` as found at Open.
  const std::string& frame_path(int index) const { return paths_[index]; }

  // True when frames come from a prepared file (see above).
  bool prepared() const;
  // Waits up to `timeout` for the prepared file (background preparation); true when
  // frames come from one.
  bool WaitPrepared(std::chrono::milliseconds timeout) const;

 private:
  explicit Avatar(AvatarOptions options) : options_(std::move(options)) {}
  static Expected<AvatarPlan> PlanUnguarded(const AvatarOptions& options);
  Expected<FrameHandle> LoadFrame(int index) const;
  // Frame `index` from `file` when set (falling back to the source, and scheduling a
  // rebuild, if the file fails), else decoded from its source.
  Expected<FrameHandle> Fetch(int index, const std::shared_ptr<const PreparedFile>& file);
  void SchedulePrepare();
  void AttachPrepared(std::shared_ptr<const PreparedFile> file);
  Expected<FrameHandle> LoadFrameUnguarded(int index) const;
  static Expected<std::shared_ptr<Avatar>> OpenUnguarded(const AvatarOptions& options,
                                                         AvatarPlan plan);

  AvatarOptions options_;
  std::vector<CropRect> rects_;
  std::vector<std::string> paths_;
  int num_frames_ = 0;
  int width_ = 0;
  int height_ = 0;
  double load_ms_ = 0;
  std::weak_ptr<Avatar> self_;

  mutable std::mutex mu_;
  mutable std::condition_variable prepared_cv_;
  std::shared_ptr<const PreparedFile> prepared_;  // null: frames from the sources
  std::map<int, Status> broken_;                  // frames whose source is unusable
  // preload: every slot set; otherwise an LRU (front = most recent).
  std::vector<FrameHandle> frames_;
  std::list<int> lru_;
  std::vector<std::list<int>::iterator> lru_pos_;
  int cached_ = 0;
  int64_t cached_bytes_ = 0;
};

// Background frame cache counts of every Avatar in this process since start (metrics):
// a hit is a Frame() answered from the cache, a miss one that had to read or decode.
struct FrameCacheCounts {
  int64_t hits = 0;
  int64_t misses = 0;
};
FrameCacheCounts BackgroundCacheCounts();

}  // namespace lipsync::avatar
