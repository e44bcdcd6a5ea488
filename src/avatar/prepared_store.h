// Prepared avatar store (issue 11): one file per avatar holding exactly what serving
// needs, so that a cold tenant reads a few frames from a file instead of decoding every
// PNG and encoding every JPEG (523 frames at 720p: ~9 s) before its first batch.
//
// File `<store_dir>/<id>.lsavatar`, little-endian, version kPreparedVersion:
//   header (kHeaderBytes): magic, version, file size, source fingerprint, frame size and
//     count, encoder settings (region JPEG, quality, restart interval, compact, margin),
//     section offsets, a CRC-32 of the rects + frame table and a CRC-32 of the header;
//   rects:   num_frames x {x1, y1, x2, y2} (int32);
//   table:   num_frames x {offset, jpeg bytes, intervals, held rect x/y/w/h, CRC-32};
//   frames:  per frame [interval begins][interval ends] (uint32 each) [JPEG] [held RGB],
//            i.e. a BackgroundFrame: the JPEG with its restart-interval index
//            (image::RegionJpegBackground) and the held pixels (compact: the region
//            encode's ReadRect of the crop rect; otherwise the whole frame).
//
// Reading is pread(2), not mmap: a file truncated or rewritten under the server then
// shows as a short read or a checksum mismatch (an error value), never as SIGBUS, and
// what the process holds is exactly the bytes it copied (the page cache is the second
// tier and is not counted against capacity.*). Open checks the size against the header,
// the header and table checksums and every table entry's bounds; ReadFrame checks the
// frame's CRC before building anything from it. A file that fails any check is
// reported with its path (INTERNAL) and the caller rebuilds it.
//
// Writing goes to a unique temporary file in the store directory (O_EXCL, pid + random
// suffix), is fsynced and renamed over the target, under an flock on
// `<store_dir>/<id>.lock` so that two processes preparing the same avatar do the work
// once (the second finds the first's file current); without the lock (e.g. a
// filesystem without flock) the rename alone keeps readers safe.
//
// The source fingerprint hashes, per frame file and crop_rects.json, the path, size,
// mtime (ns), inode and device: a changed source (or a different frame list) makes the
// file stale and it is rebuilt. Encoder settings are compared field by field.
//
// Thread-safety: a PreparedFile is immutable after Open; its const methods may be
// called from any thread (pread has no shared offset). PreparedStore functions are
// reentrant. Background preparation runs on one process-wide worker thread
// (SchedulePreparation), stopped and joined at exit.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "avatar/avatar.h"
#include "common/status.h"

namespace lipsync::avatar {

inline constexpr uint32_t kPreparedVersion = 1;
inline constexpr size_t kPreparedHeaderBytes = 128;
inline constexpr size_t kPreparedEntryBytes = 40;
inline constexpr const char* kPreparedExtension = ".lsavatar";

// What the frames were encoded with, and from which sources: a file is current only
// when all of it matches.
struct PreparedSettings {
  int width = 0;
  int height = 0;
  int num_frames = 0;
  bool region_jpeg = false;
  int jpeg_quality = 75;
  int restart_interval_mcus = 2;
  bool compact = false;
  int compact_margin_px = 0;
  uint64_t source_fingerprint = 0;

  bool operator==(const PreparedSettings&) const = default;
};

// The settings `options` asks for with frames of `width` x `height` (no fingerprint).
PreparedSettings SettingsFor(const AvatarOptions& options, int width, int height, int num_frames);

// Fingerprint of the sources: path, size, mtime, inode and device of every frame file
// and of crop_rects.json. NOT_FOUND naming the file if one cannot be stat'ed.
Expected<uint64_t> FingerprintSources(const std::vector<std::string>& frame_paths,
                                      const std::string& crop_rects_path);

// The store directory for config value `configured` (server.avatar_store_dir): "off"
// -> "" (no store); "" -> $XDG_CACHE_HOME/lipsync/avatars, else
// $HOME/.cache/lipsync/avatars, else /tmp/lipsync-avatars-<uid>; else `configured`.
std::string ResolveAvatarStoreDir(const std::string& configured);

// `<store_dir>/<id>.lsavatar`.
std::string PreparedPath(const std::string& store_dir, const std::string& id);

// CRC-32 (zlib) of `bytes`, continuing `crc`.
uint32_t Crc32(const void* bytes, size_t size, uint32_t crc = 0);

class PreparedFile {
 public:
  // Opens and validates `path` (see the file comment). NOT_FOUND when absent,
  // FAILED_PRECONDITION for another format version (stale: rebuild), INTERNAL naming
  // the path for a truncated, extended or corrupt file. Holds the fd, the rects and the
  // frame table (about 56 bytes per frame). One descriptor per open file: the first
  // Open raises the process's soft RLIMIT_NOFILE to its hard limit.
  static Expected<std::shared_ptr<const PreparedFile>> Open(const std::string& path);
  // Same on an open descriptor (taken over; closed on error too); `path` names it in
  // messages. For the fuzz harness.
  static Expected<std::shared_ptr<const PreparedFile>> OpenFd(int fd, const std::string& path);
  ~PreparedFile();
  PreparedFile(const PreparedFile&) = delete;
  PreparedFile& operator=(const PreparedFile&) = delete;

  const std::string& path() const { return path_; }
  const PreparedSettings& settings() const { return settings_; }
  const std::vector<CropRect>& rects() const { return rects_; }
  uint64_t file_bytes() const { return file_bytes_; }

  // Frame `index` read from the file into memory (JPEG + index + held pixels), its CRC
  // checked first. INTERNAL naming the path on a short read or mismatch;
  // INVALID_ARGUMENT for an index out of range.
  Expected<FrameHandle> ReadFrame(int index) const;
  // Bytes ReadFrame(index)'s frame will hold (BackgroundFrame::memory_bytes, about).
  int64_t frame_memory_bytes(int index) const;
  // Heap bytes this object holds (rects + table).
  int64_t memory_bytes() const;
  // Unlinks path() if it is still this file (same inode and device), so that a corrupt
  // file is rebuilt rather than found current again; a newer file there is kept.
  void RemoveIfCurrent() const;

 private:
  struct Entry {
    uint64_t offset = 0;
    uint32_t jpeg_bytes = 0;
    uint32_t intervals = 0;
    int32_t x = 0, y = 0, w = 0, h = 0;
    uint32_t crc = 0;
  };
  PreparedFile() = default;
  Status Validate();

  int fd_ = -1;
  std::string path_;
  uint64_t file_bytes_ = 0;
  uint64_t inode_ = 0;
  uint64_t device_ = 0;
  PreparedSettings settings_;
  std::vector<CropRect> rects_;
  std::vector<Entry> entries_;
};

// Writes the prepared file for `settings` at `path`: `frame(i)` supplies frame i (as
// Avatar's decode builds it), `rects` the crop rects. Temp file + fsync + rename; the
// temp file is removed on any error. `cancelled` (optional) is polled between frames
// (CANCELLED). Does not take the lock (see PrepareAvatar).
Status WritePreparedFile(const std::string& path, const PreparedSettings& settings,
                         const std::vector<CropRect>& rects,
                         const std::function<Expected<FrameHandle>(int)>& frame,
                         const std::function<bool()>& cancelled = {});

struct PrepareResult {
  std::string path;
  bool built = false;  // false: a current file was already there
  int64_t file_bytes = 0;
  double ms = 0;
};

// The avatar's prepared file in options.prepared_dir, built from its sources unless a
// current one exists (checked again under the lock, so a concurrent preparer's file is
// reused). Decodes every frame once. Errors name the file.
Expected<PrepareResult> PrepareAvatar(const AvatarOptions& options,
                                      const std::function<bool()>& cancelled = {});

// Queues PrepareAvatar(options) on the process-wide background worker (one at a time;
// one queued job per target path, later requests share it). `done` runs on the worker
// with the opened file, or with the error. Returns false when the queue is full
// (kMaxQueuedPreparations); the next load asks again.
inline constexpr size_t kMaxQueuedPreparations = 65536;
bool SchedulePreparation(const AvatarOptions& options,
                         std::function<void(Expected<std::shared_ptr<const PreparedFile>>)> done);

}  // namespace lipsync::avatar
