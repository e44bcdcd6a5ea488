#include "avatar/prepared_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "common/guarded.h"
#include "common/log.h"

namespace lipsync::avatar {

static_assert(std::endian::native == std::endian::little,
              "the prepared avatar format is little-endian; add byte swaps for this host");

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'L', 'S', 'A', 'V', 'P', 'R', 'E', 'P'};
constexpr size_t kRectBytes = 16;
// Bounds on what a file may claim, checked before anything is allocated for it (the
// table is also bounded by the file's real size).
constexpr int kMaxSide = 65500;
constexpr int kMaxFrames = 10'000'000;

// Header field offsets (see the file comment in the header).
enum : size_t {
  kOffMagic = 0,
  kOffVersion = 8,
  kOffHeaderBytes = 12,
  kOffFileBytes = 16,
  kOffFingerprint = 24,
  kOffWidth = 32,
  kOffHeight = 36,
  kOffFrames = 40,
  kOffRegionJpeg = 44,
  kOffQuality = 48,
  kOffInterval = 52,
  kOffCompact = 56,
  kOffMargin = 60,
  kOffRects = 64,
  kOffTable = 72,
  kOffData = 80,
  kOffMetaCrc = 88,
  kOffHeaderCrc = 92,
};

template <typename T>
void Put(uint8_t* buf, size_t off, T v) {
  std::memcpy(buf + off, &v, sizeof(T));
}
template <typename T>
T Get(const uint8_t* buf, size_t off) {
  T v;
  std::memcpy(&v, buf + off, sizeof(T));
  return v;
}

std::string Errno(int err) { return std::strerror(err); }

// Reads exactly [offset, offset + size) into the iovecs; false on a short read (the
// file shrank) or an error.
Status PreadAll(int fd, std::vector<iovec> iov, uint64_t offset, const std::string& path) {
  size_t first = 0;
  while (first < iov.size()) {
    if (iov[first].iov_len == 0) {
      ++first;
      continue;
    }
    const ssize_t n = ::preadv(fd, iov.data() + first, static_cast<int>(iov.size() - first),
                               static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Internal("prepared avatar file " + path + ": read failed: " + Errno(errno));
    }
    if (n == 0) {
      return Status::Internal("prepared avatar file " + path +
                              " is shorter than its header says (truncated under the server?)");
    }
    offset += uint64_t(n);
    size_t left = size_t(n);
    while (left > 0 && first < iov.size()) {
      const size_t take = std::min(left, iov[first].iov_len);
      iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + take;
      iov[first].iov_len -= take;
      left -= take;
      if (iov[first].iov_len == 0) ++first;
    }
  }
  return Status::Ok();
}

Status WriteAll(int fd, const void* data, size_t size, uint64_t offset, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (size > 0) {
    const ssize_t n = ::pwrite(fd, p, size, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::Internal("writing " + path + ": " + Errno(errno));
    }
    p += n;
    size -= size_t(n);
    offset += uint64_t(n);
  }
  return Status::Ok();
}

uint64_t Mix(uint64_t h, uint64_t v) {
  // FNV-1a over the 8 bytes of v.
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xFF;
    h *= 0x100000001b3ULL;
  }
  return h;
}

uint64_t MixString(uint64_t h, const std::string& s) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return Mix(h, s.size());
}

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int release() { return std::exchange(fd, -1); }
};

}  // namespace

uint32_t Crc32(const void* bytes, size_t size, uint32_t crc) {
  const auto* p = static_cast<const Bytef*>(bytes);
  while (size > 0) {
    const uInt chunk = static_cast<uInt>(std::min<size_t>(size, 1u << 30));
    crc = static_cast<uint32_t>(::crc32(crc, p, chunk));
    p += chunk;
    size -= chunk;
  }
  return crc;
}

PreparedSettings SettingsFor(const AvatarOptions& options, int width, int height, int num_frames) {
  PreparedSettings s;
  s.width = width;
  s.height = height;
  s.num_frames = num_frames;
  s.region_jpeg = options.region_jpeg || options.compact;
  s.jpeg_quality = options.jpeg_quality;
  s.restart_interval_mcus = options.restart_interval_mcus;
  s.compact = options.compact;
  s.compact_margin_px = options.compact ? std::max(0, options.compact_margin_px) : 0;
  return s;
}

Expected<uint64_t> FingerprintSources(const std::vector<std::string>& frame_paths,
                                      const std::string& crop_rects_path) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto add = [&](const std::string& path) -> Status {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return Status::NotFound("cannot stat " + path + ": " + Errno(errno));
    }
    h = MixString(h, path);
    h = Mix(h, uint64_t(st.st_size));
    h = Mix(h, uint64_t(st.st_mtim.tv_sec) * 1'000'000'000ULL + uint64_t(st.st_mtim.tv_nsec));
    h = Mix(h, uint64_t(st.st_ino));
    h = Mix(h, uint64_t(st.st_dev));
    return Status::Ok();
  };
  LIPSYNC_RETURN_IF_ERROR(add(crop_rects_path));
  for (const std::string& p : frame_paths) LIPSYNC_RETURN_IF_ERROR(add(p));
  return Mix(h, frame_paths.size());
}

std::string ResolveAvatarStoreDir(const std::string& configured) {
  if (configured == "off") return "";
  if (!configured.empty()) return configured;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && xdg[0] == '/') {
    return (fs::path(xdg) / "lipsync" / "avatars").string();
  }
  if (const char* home = std::getenv("HOME"); home && home[0] == '/') {
    return (fs::path(home) / ".cache" / "lipsync" / "avatars").string();
  }
  return "/tmp/lipsync-avatars-" + std::to_string(::getuid());
}

std::string PreparedPath(const std::string& store_dir, const std::string& id) {
  return (fs::path(store_dir) / (id + kPreparedExtension)).string();
}

// ---- reading

PreparedFile::~PreparedFile() {
  if (fd_ >= 0) ::close(fd_);
}

Expected<std::shared_ptr<const PreparedFile>> PreparedFile::Open(const std::string& path) {
  // One descriptor per loaded avatar (max_models may be 11,000): the soft limit is
  // raised to the hard one once, as Go's runtime does at start.
  static std::once_flag raise_nofile;
  std::call_once(raise_nofile, [] {
    rlimit limit;
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
      limit.rlim_cur = limit.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &limit);
    }
  });
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("no prepared avatar file " + path);
    return Status::Internal("cannot open prepared avatar file " + path + ": " + Errno(errno));
  }
  return OpenFd(fd, path);
}

Expected<std::shared_ptr<const PreparedFile>> PreparedFile::OpenFd(int fd,
                                                                   const std::string& path) {
  std::shared_ptr<PreparedFile> f(new PreparedFile());
  f->fd_ = fd;
  f->path_ = path;
  return Guarded("prepared avatar file " + path,
                 [&]() -> Expected<std::shared_ptr<const PreparedFile>> {
                   LIPSYNC_RETURN_IF_ERROR(f->Validate());
                   return std::shared_ptr<const PreparedFile>(std::move(f));
                 });
}

Status PreparedFile::Validate() {
  auto corrupt = [&](const std::string& what) {
    return Status::Internal("prepared avatar file " + path_ + " is corrupt: " + what);
  };
  struct stat st;
  if (::fstat(fd_, &st) != 0) return corrupt("fstat failed: " + Errno(errno));
  if (!S_ISREG(st.st_mode)) return corrupt("not a regular file");
  inode_ = uint64_t(st.st_ino);
  device_ = uint64_t(st.st_dev);
  const uint64_t size = uint64_t(st.st_size);
  if (size < kPreparedHeaderBytes) {
    return corrupt(std::to_string(size) + " bytes, shorter than the " +
                   std::to_string(kPreparedHeaderBytes) + "-byte header");
  }
  uint8_t h[kPreparedHeaderBytes];
  LIPSYNC_RETURN_IF_ERROR(PreadAll(fd_, {{h, sizeof(h)}}, 0, path_));
  if (std::memcmp(h + kOffMagic, kMagic, sizeof(kMagic)) != 0) {
    return corrupt("no LSAVPREP magic; expected a prepared avatar file");
  }
  if (const uint32_t v = Get<uint32_t>(h, kOffVersion); v != kPreparedVersion) {
    return Status::FailedPrecondition("prepared avatar file " + path_ + " has format version " +
                                      std::to_string(v) + "; this build writes " +
                                      std::to_string(kPreparedVersion));
  }
  const uint32_t header_crc = Get<uint32_t>(h, kOffHeaderCrc);
  Put<uint32_t>(h, kOffHeaderCrc, 0);
  if (Crc32(h, sizeof(h)) != header_crc) return corrupt("header checksum mismatch");
  if (Get<uint32_t>(h, kOffHeaderBytes) != kPreparedHeaderBytes) {
    return corrupt("unexpected header size");
  }
  file_bytes_ = Get<uint64_t>(h, kOffFileBytes);
  if (file_bytes_ != size) {
    return corrupt("the header says " + std::to_string(file_bytes_) + " bytes, the file has " +
                   std::to_string(size) + " (truncated or extended)");
  }
  PreparedSettings& s = settings_;
  s.source_fingerprint = Get<uint64_t>(h, kOffFingerprint);
  s.width = Get<int32_t>(h, kOffWidth);
  s.height = Get<int32_t>(h, kOffHeight);
  s.num_frames = Get<int32_t>(h, kOffFrames);
  const int32_t region = Get<int32_t>(h, kOffRegionJpeg);
  const int32_t compact = Get<int32_t>(h, kOffCompact);
  s.jpeg_quality = Get<int32_t>(h, kOffQuality);
  s.restart_interval_mcus = Get<int32_t>(h, kOffInterval);
  s.compact_margin_px = Get<int32_t>(h, kOffMargin);
  if (s.width < 1 || s.width > kMaxSide || s.height < 1 || s.height > kMaxSide ||
      s.num_frames < 1 || s.num_frames > kMaxFrames || (region != 0 && region != 1) ||
      (compact != 0 && compact != 1) || s.jpeg_quality < 1 || s.jpeg_quality > 100 ||
      s.restart_interval_mcus < 1 || s.restart_interval_mcus > 65535 || s.compact_margin_px < 0) {
    return corrupt("header values out of range");
  }
  s.region_jpeg = region == 1;
  s.compact = compact == 1;
  if (s.compact && !s.region_jpeg) return corrupt("compact without region JPEG");
  const uint64_t n = uint64_t(s.num_frames);
  const uint64_t rects_off = Get<uint64_t>(h, kOffRects);
  const uint64_t table_off = Get<uint64_t>(h, kOffTable);
  const uint64_t data_off = Get<uint64_t>(h, kOffData);
  if (rects_off != kPreparedHeaderBytes || table_off != rects_off + n * kRectBytes ||
      data_off != table_off + n * kPreparedEntryBytes || data_off > size) {
    return corrupt("section offsets do not fit the file");
  }
  // Bounded by the file's real size (checked just above).
  std::vector<uint8_t> meta(size_t(data_off - rects_off));
  LIPSYNC_RETURN_IF_ERROR(PreadAll(fd_, {{meta.data(), meta.size()}}, rects_off, path_));
  if (Crc32(meta.data(), meta.size()) != Get<uint32_t>(h, kOffMetaCrc)) {
    return corrupt("rects/table checksum mismatch");
  }
  rects_.resize(size_t(n));
  entries_.resize(size_t(n));
  const int interval_px = 16 * image::EffectiveRestartInterval(s.width, s.restart_interval_mcus);
  const uint64_t intervals = s.region_jpeg ? uint64_t((s.width + 15) / 16 * 16 / interval_px) *
                                                 uint64_t((s.height + 15) / 16)
                                           : 0;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* r = meta.data() + i * kRectBytes;
    rects_[i] = {Get<int32_t>(r, 0), Get<int32_t>(r, 4), Get<int32_t>(r, 8), Get<int32_t>(r, 12)};
    const uint8_t* e = meta.data() + n * kRectBytes + i * kPreparedEntryBytes;
    Entry& en = entries_[i];
    en.offset = Get<uint64_t>(e, 0);
    en.jpeg_bytes = Get<uint32_t>(e, 8);
    en.intervals = Get<uint32_t>(e, 12);
    en.x = Get<int32_t>(e, 16);
    en.y = Get<int32_t>(e, 20);
    en.w = Get<int32_t>(e, 24);
    en.h = Get<int32_t>(e, 28);
    en.crc = Get<uint32_t>(e, 32);
    const std::string which = "frame " + std::to_string(i) + "'s table entry";
    if (en.intervals != intervals || (s.region_jpeg ? en.jpeg_bytes < 4 : en.jpeg_bytes != 0)) {
      return corrupt(which + " has the wrong JPEG size or interval count");
    }
    if (en.x < 0 || en.y < 0 || en.w < 1 || en.h < 1 || en.x > s.width - en.w ||
        en.y > s.height - en.h) {
      return corrupt(which + " holds pixels outside the frame");
    }
    const uint64_t blob = uint64_t(en.intervals) * 8 + en.jpeg_bytes + uint64_t(en.w) * en.h * 3;
    if (en.offset < data_off || en.offset > size || blob > size - en.offset) {
      return corrupt(which + " points outside the file");
    }
    if (!s.compact && (en.w != s.width || en.h != s.height)) {
      return corrupt(which + " holds part of a frame without compact storage");
    }
  }
  return ValidateCropRects(rects_, s.num_frames, s.width, s.height, path_);
}

int64_t PreparedFile::frame_memory_bytes(int index) const {
  const Entry& e = entries_[size_t(index)];
  int64_t bytes = int64_t(e.w) * e.h * 3;
  if (e.jpeg_bytes > 0) {
    bytes += int64_t(e.jpeg_bytes) + int64_t(e.intervals) * 8 +
             int64_t(sizeof(image::RegionJpegBackground));
  }
  return bytes + int64_t(sizeof(BackgroundFrame));
}

int64_t PreparedFile::memory_bytes() const {
  return int64_t(sizeof(*this) + rects_.capacity() * sizeof(CropRect) +
                 entries_.capacity() * sizeof(Entry) + path_.capacity());
}

void PreparedFile::RemoveIfCurrent() const {
  struct stat st;
  if (::stat(path_.c_str(), &st) == 0 && uint64_t(st.st_ino) == inode_ &&
      uint64_t(st.st_dev) == device_) {
    ::unlink(path_.c_str());
  }
}

Expected<FrameHandle> PreparedFile::ReadFrame(int index) const {
  if (index < 0 || index >= settings_.num_frames) {
    return Status::InvalidArgument("prepared avatar file " + path_ + ": frame " +
                                   std::to_string(index) + " out of range");
  }
  return Guarded("prepared avatar file " + path_, [&]() -> Expected<FrameHandle> {
    const Entry& e = entries_[size_t(index)];
    std::vector<uint32_t> begin(e.intervals), end(e.intervals);
    std::string jpeg(e.jpeg_bytes, '\0');
    auto f = std::make_shared<BackgroundFrame>();
    f->frame_width = settings_.width;
    f->frame_height = settings_.height;
    f->pixels_rect = {e.x, e.y, e.w, e.h};
    f->pixels = image::Image(e.w, e.h, 3);
    LIPSYNC_RETURN_IF_ERROR(PreadAll(fd_,
                                     {{begin.data(), begin.size() * 4},
                                      {end.data(), end.size() * 4},
                                      {jpeg.data(), jpeg.size()},
                                      {f->pixels.pixels.data(), f->pixels.pixels.size()}},
                                     e.offset, path_));
    uint32_t crc = Crc32(begin.data(), begin.size() * 4);
    crc = Crc32(end.data(), end.size() * 4, crc);
    crc = Crc32(jpeg.data(), jpeg.size(), crc);
    crc = Crc32(f->pixels.pixels.data(), f->pixels.pixels.size(), crc);
    if (crc != e.crc) {
      return Status::Internal("prepared avatar file " + path_ + " is corrupt: frame " +
                              std::to_string(index) + " checksum mismatch");
    }
    if (settings_.region_jpeg) {
      image::JpegSettings js;
      js.quality = settings_.jpeg_quality;
      js.restart_interval_mcus = settings_.restart_interval_mcus;
      auto bg = image::RegionJpegBackground::FromIndexed(
          std::move(jpeg), settings_.width, settings_.height, js, std::move(begin), std::move(end));
      if (!bg.ok()) {
        return Status::Internal("prepared avatar file " + path_ + " is corrupt: frame " +
                                std::to_string(index) + ": " + bg.status().message());
      }
      f->jpeg = std::make_shared<const image::RegionJpegBackground>(std::move(bg).value());
    }
    return FrameHandle(std::move(f));
  });
}

// ---- writing

Status WritePreparedFile(const std::string& path, const PreparedSettings& settings,
                         const std::vector<CropRect>& rects,
                         const std::function<Expected<FrameHandle>(int)>& frame,
                         const std::function<bool()>& cancelled) {
  const int n = settings.num_frames;
  if (n < 1 || rects.size() != size_t(n)) {
    return Status::InvalidArgument("prepared avatar file " + path +
                                   ": expected one crop rect per frame");
  }
  std::random_device rd;
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(rd()) +
                          std::to_string(rd());
  Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (out.fd < 0) return Status::Internal("cannot create " + tmp + ": " + Errno(errno));
  bool keep = false;
  struct Cleanup {
    const std::string& tmp;
    bool& keep;
    ~Cleanup() {
      if (!keep) ::unlink(tmp.c_str());
    }
  } cleanup{tmp, keep};

  const uint64_t rects_off = kPreparedHeaderBytes;
  const uint64_t table_off = rects_off + uint64_t(n) * kRectBytes;
  const uint64_t data_off = table_off + uint64_t(n) * kPreparedEntryBytes;
  std::vector<uint8_t> meta(size_t(data_off - rects_off));
  for (int i = 0; i < n; ++i) {
    uint8_t* r = meta.data() + size_t(i) * kRectBytes;
    Put<int32_t>(r, 0, rects[size_t(i)].x1);
    Put<int32_t>(r, 4, rects[size_t(i)].y1);
    Put<int32_t>(r, 8, rects[size_t(i)].x2);
    Put<int32_t>(r, 12, rects[size_t(i)].y2);
  }
  uint64_t offset = data_off;
  for (int i = 0; i < n; ++i) {
    if (cancelled && cancelled()) return Status::Cancelled("preparing " + path + ": cancelled");
    LIPSYNC_ASSIGN_OR_RETURN(FrameHandle f, frame(i));
    const BackgroundFrame& bg = *f;
    if (bg.frame_width != settings.width || bg.frame_height != settings.height ||
        bg.pixels.channels != 3 || bool(bg.jpeg) != settings.region_jpeg) {
      return Status::Internal("preparing " + path + ": frame " + std::to_string(i) +
                              " does not match the settings");
    }
    static const std::vector<uint32_t> kNone;
    const auto& begin = bg.jpeg ? bg.jpeg->interval_begin() : kNone;
    const auto& end = bg.jpeg ? bg.jpeg->interval_end() : kNone;
    const std::string jpeg = bg.jpeg ? bg.jpeg->background_jpeg() : std::string();
    const auto& px = bg.pixels.pixels;
    uint32_t crc = Crc32(begin.data(), begin.size() * 4);
    crc = Crc32(end.data(), end.size() * 4, crc);
    crc = Crc32(jpeg.data(), jpeg.size(), crc);
    crc = Crc32(px.data(), px.size(), crc);
    uint8_t* e = meta.data() + size_t(n) * kRectBytes + size_t(i) * kPreparedEntryBytes;
    Put<uint64_t>(e, 0, offset);
    Put<uint32_t>(e, 8, static_cast<uint32_t>(jpeg.size()));
    Put<uint32_t>(e, 12, static_cast<uint32_t>(begin.size()));
    Put<int32_t>(e, 16, bg.pixels_rect.x);
    Put<int32_t>(e, 20, bg.pixels_rect.y);
    Put<int32_t>(e, 24, bg.pixels_rect.width);
    Put<int32_t>(e, 28, bg.pixels_rect.height);
    Put<uint32_t>(e, 32, crc);
    Put<uint32_t>(e, 36, 0);
    LIPSYNC_RETURN_IF_ERROR(WriteAll(out.fd, begin.data(), begin.size() * 4, offset, tmp));
    offset += begin.size() * 4;
    LIPSYNC_RETURN_IF_ERROR(WriteAll(out.fd, end.data(), end.size() * 4, offset, tmp));
    offset += end.size() * 4;
    LIPSYNC_RETURN_IF_ERROR(WriteAll(out.fd, jpeg.data(), jpeg.size(), offset, tmp));
    offset += jpeg.size();
    LIPSYNC_RETURN_IF_ERROR(WriteAll(out.fd, px.data(), px.size(), offset, tmp));
    offset += px.size();
  }
  uint8_t h[kPreparedHeaderBytes] = {};
  std::memcpy(h + kOffMagic, kMagic, sizeof(kMagic));
  Put<uint32_t>(h, kOffVersion, kPreparedVersion);
  Put<uint32_t>(h, kOffHeaderBytes, kPreparedHeaderBytes);
  Put<uint64_t>(h, kOffFileBytes, offset);
  Put<uint64_t>(h, kOffFingerprint, settings.source_fingerprint);
  Put<int32_t>(h, kOffWidth, settings.width);
  Put<int32_t>(h, kOffHeight, settings.height);
  Put<int32_t>(h, kOffFrames, n);
  Put<int32_t>(h, kOffRegionJpeg, settings.region_jpeg ? 1 : 0);
  Put<int32_t>(h, kOffQuality, settings.jpeg_quality);
  Put<int32_t>(h, kOffInterval, settings.restart_interval_mcus);
  Put<int32_t>(h, kOffCompact, settings.compact ? 1 : 0);
  Put<int32_t>(h, kOffMargin, settings.compact_margin_px);
  Put<uint64_t>(h, kOffRects, rects_off);
  Put<uint64_t>(h, kOffTable, table_off);
  Put<uint64_t>(h, kOffData, data_off);
  Put<uint32_t>(h, kOffMetaCrc, Crc32(meta.data(), meta.size()));
  Put<uint32_t>(h, kOffHeaderCrc, Crc32(h, sizeof(h)));
  LIPSYNC_RETURN_IF_ERROR(WriteAll(out.fd, meta.data(), meta.size(), rects_off, tmp));
  LIPSYNC_RETURN_IF_ERROR(WriteAll(out.fd, h, sizeof(h), 0, tmp));
  if (::fsync(out.fd) != 0) return Status::Internal("fsync " + tmp + ": " + Errno(errno));
  if (::close(out.release()) != 0) return Status::Internal("close " + tmp + ": " + Errno(errno));
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Status::Internal("rename " + tmp + " to " + path + ": " + Errno(errno));
  }
  keep = true;
  // The rename itself durable: fsync the directory (best effort).
  if (Fd dir(::open(fs::path(path).parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      dir.fd >= 0) {
    ::fsync(dir.fd);
  }
  return Status::Ok();
}

Expected<PrepareResult> PrepareAvatar(const AvatarOptions& options,
                                      const std::function<bool()>& cancelled) {
  const std::string what = "avatar '" + options.id + "': preparing";
  return Guarded(what, [&]() -> Expected<PrepareResult> {
    const auto start = std::chrono::steady_clock::now();
    if (options.prepared_dir.empty()) {
      return Status::InvalidArgument(what + ": no store directory; expected avatar_store_dir");
    }
    std::error_code ec;
    fs::create_directories(options.prepared_dir, ec);
    if (ec) {
      return Status::Internal(what + ": cannot create " + options.prepared_dir + ": " +
                              ec.message());
    }
    PrepareResult result;
    result.path = PreparedPath(options.prepared_dir, options.id);
    // One preparer per avatar across processes; the others wait, then find it current.
    const std::string lock_path =
        (fs::path(options.prepared_dir) / (options.id + ".lock")).string();
    Fd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (lock.fd >= 0) {
      // Polled, so that a cancelled preparer (server shutdown) does not wait for another
      // process's preparation to finish.
      while (::flock(lock.fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno != EWOULDBLOCK && errno != EINTR) break;  // no flock here: rename only
        if (cancelled && cancelled()) {
          return Status::Cancelled(what + ": cancelled while another process prepares it");
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    } else {
      LOG_WARN("%s: cannot open lock %s (%s); relying on the atomic rename alone", what.c_str(),
               lock_path.c_str(), Errno(errno).c_str());
    }
    LIPSYNC_ASSIGN_OR_RETURN(AvatarPlan plan, Avatar::Plan(options));
    if (!plan.prepared) {
      AvatarOptions source = options;
      source.preload = false;
      source.cache_frames = 1;
      source.prepared_dir.clear();  // decode from the sources, no background job
      const uint64_t fingerprint = plan.source_fingerprint;
      LIPSYNC_ASSIGN_OR_RETURN(std::shared_ptr<Avatar> avatar, Avatar::Open(source, plan));
      PreparedSettings settings =
          SettingsFor(options, avatar->width(), avatar->height(), avatar->num_frames());
      settings.source_fingerprint = fingerprint;
      std::vector<CropRect> rects;
      for (int i = 0; i < avatar->num_frames(); ++i) rects.push_back(avatar->rect(i));
      LIPSYNC_RETURN_IF_ERROR(WritePreparedFile(
          result.path, settings, rects, [&](int i) { return avatar->Frame(i); }, cancelled));
      result.built = true;
    }
    struct stat st;
    if (::stat(result.path.c_str(), &st) == 0) result.file_bytes = st.st_size;
    result.ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    return result;
  });
}

// ---- background worker

namespace {

class Preparer {
 public:
  using Done = std::function<void(Expected<std::shared_ptr<const PreparedFile>>)>;

  static Preparer& Get() {
    static Preparer preparer;
    return preparer;
  }

  ~Preparer() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (worker_.joinable()) worker_.join();
  }

  bool Schedule(const AvatarOptions& options, Done done) {
    const std::string path = PreparedPath(options.prepared_dir, options.id);
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return false;
    auto it = jobs_.find(path);
    if (it != jobs_.end()) {
      it->second.done.push_back(std::move(done));
      return true;
    }
    if (jobs_.size() >= kMaxQueuedPreparations) return false;
    Job& job = jobs_[path];
    job.options = options;
    job.done.push_back(std::move(done));
    order_.push_back(path);
    if (!worker_.joinable()) worker_ = std::thread([this] { Run(); });
    cv_.notify_one();
    return true;
  }

 private:
  struct Job {
    AvatarOptions options;
    std::vector<Done> done;
  };

  void Run() {
    // Background work: let request threads win the CPU.
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 10);
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stopping_ || !order_.empty(); });
      if (stopping_) return;
      const std::string path = order_.front();
      order_.pop_front();
      const AvatarOptions options = jobs_[path].options;
      lock.unlock();
      auto prepared = PrepareAvatar(options, [this] { return stopping_.load(); });
      if (stopping_) return;  // exiting: no logging or callbacks during static destruction
      Expected<std::shared_ptr<const PreparedFile>> file =
          prepared.ok() ? PreparedFile::Open(prepared->path)
                        : Expected<std::shared_ptr<const PreparedFile>>(prepared.status());
      if (prepared.ok()) {
        LOG_INFO("avatar '%s': prepared file %s %s (%.1f MB, %.0f ms)", options.id.c_str(),
                 prepared->path.c_str(), prepared->built ? "built" : "already current",
                 prepared->file_bytes / 1e6, prepared->ms);
      } else {
        LOG_WARN("avatar '%s': preparing %s failed: %s", options.id.c_str(), path.c_str(),
                 prepared.status().ToString().c_str());
      }
      lock.lock();
      std::vector<Done> done = std::move(jobs_[path].done);
      jobs_.erase(path);
      lock.unlock();
      for (Done& d : done) d(file);
      done.clear();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, Job> jobs_;
  std::deque<std::string> order_;
  std::atomic<bool> stopping_{false};
  std::thread worker_;
};

}  // namespace

bool SchedulePreparation(const AvatarOptions& options,
                         std::function<void(Expected<std::shared_ptr<const PreparedFile>>)> done) {
  return Preparer::Get().Schedule(options, std::move(done));
}

}  // namespace lipsync::avatar
