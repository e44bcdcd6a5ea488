#include "client/stream_saver.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

extern char** environ;

namespace lipsync::client {

namespace fs = std::filesystem;

Expected<std::unique_ptr<StreamSaver>> StreamSaver::Create(const std::string& dir,
                                                           const std::string& name) {
  std::error_code ec;
  fs::create_directories(fs::path(dir) / "frames", ec);
  if (ec) {
    return Status::FailedPrecondition("cannot create output directory '" + dir +
                                      "/frames': " + ec.message());
  }
  // Frames of an earlier run would end up in this run's video.
  for (const auto& entry : fs::directory_iterator(fs::path(dir) / "frames", ec)) {
    if (entry.path().extension() == ".jpg") fs::remove(entry.path(), ec);
  }
  return std::unique_ptr<StreamSaver>(new StreamSaver(dir, name));
}

std::string StreamSaver::FramePath(int index) const {
  char name[32];
  std::snprintf(name, sizeof name, "frame_%05d.jpg", index);
  return (fs::path(dir_) / "frames" / name).string();
}

Status StreamSaver::AddFrame(int index, std::string_view bytes, bool raw_rgb, int width,
                             int height) {
  if (index < 0) return Status::InvalidArgument("frame index must be >= 0");
  std::string encoded;
  if (raw_rgb) {
    if (width <= 0 || height <= 0 || bytes.size() != size_t(width) * height * 3) {
      return Status::InvalidArgument("raw frame " + std::to_string(index) + " has " +
                                     std::to_string(bytes.size()) + " bytes, expected " +
                                     std::to_string(width) + "x" + std::to_string(height) + "x3");
    }
    LIPSYNC_ASSIGN_OR_RETURN(
        encoded, image::EncodeJpeg(reinterpret_cast<const uint8_t*>(bytes.data()), width, height,
                                   size_t(width) * 3, 95));
    bytes = encoded;
  }
  LIPSYNC_RETURN_IF_ERROR(image::WriteFileBytes(FramePath(index), bytes));
  std::lock_guard<std::mutex> lock(mu_);
  indices_.push_back(index);
  return Status::Ok();
}

int RunProgram(const std::vector<std::string>& args, const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int wstatus = 0;
  if (waitpid(pid, &wstatus, 0) < 0) return -1;
  return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}

Expected<SavedOutputs> StreamSaver::Finish(const std::string& wav_path, int columns, int rows,
                                           int tile_width) {
  std::vector<int> indices;
  {
    std::lock_guard<std::mutex> lock(mu_);
    indices = indices_;
  }
  std::sort(indices.begin(), indices.end());
  SavedOutputs out;
  out.frames_dir = (fs::path(dir_) / "frames").string();
  out.frames = int(indices.size());
  if (indices.empty()) return Status::FailedPrecondition("no frames were received to save");

  // MP4: ffmpeg reads the numbered JPEGs from the first index on; H.264 needs even sizes.
  std::string video = (fs::path(dir_) / (name_ + ".mp4")).string();
  std::string log = (fs::path(dir_) / "ffmpeg.log").string();
  std::vector<std::string> args = {"ffmpeg",
                                   "-nostdin",
                                   "-y",
                                   "-loglevel",
                                   "error",
                                   "-framerate",
                                   "25",
                                   "-start_number",
                                   std::to_string(indices.front()),
                                   "-i",
                                   (fs::path(dir_) / "frames" / "frame_%05d.jpg").string()};
  if (!wav_path.empty()) {
    for (const char* a : {"-i", wav_path.c_str(), "-c:a", "aac", "-b:a", "128k", "-shortest"}) {
      args.emplace_back(a);
    }
  }
  for (const char* a :
       {"-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-preset", "veryfast", "-crf",
        "20", "-pix_fmt", "yuv420p", "-movflags", "+faststart"}) {
    args.emplace_back(a);
  }
  args.push_back(video);
  int rc = RunProgram(args, log);
  if (rc == 0 && fs::exists(video)) {
    out.video_path = video;
  } else {
    out.video_error = "ffmpeg failed (exit " + std::to_string(rc) + "), see " + log;
  }

  // Contact sheet: tiles spread evenly over the received frames.
  int tiles = std::max(1, columns * rows);
  std::vector<image::Image> thumbs;
  for (int t = 0; t < tiles && t < int(indices.size()); ++t) {
    size_t pick = indices.size() == 1 ? 0 : size_t(t) * (indices.size() - 1) / size_t(tiles - 1);
    auto frame = image::ReadImageFile(FramePath(indices[pick]));
    if (!frame.ok()) return frame.status();
    thumbs.push_back(Downscale(*frame, tile_width));
  }
  image::Image sheet = ContactSheet(thumbs, columns, rows);
  out.contact_sheet_path = (fs::path(dir_) / "contact_sheet.png").string();
  LIPSYNC_RETURN_IF_ERROR(image::WritePng(out.contact_sheet_path, sheet));
  return out;
}

image::Image Downscale(const image::Image& src, int width) {
  if (src.empty() || width <= 0) return {};
  width = std::min(width, src.width);
  int height = std::max(1, int(int64_t(src.height) * width / src.width));
  image::Image dst(width, height, src.channels);
  const int c = src.channels;
  for (int y = 0; y < height; ++y) {
    int y0 = int(int64_t(y) * src.height / height);
    int y1 = std::max(y0 + 1, int(int64_t(y + 1) * src.height / height));
    for (int x = 0; x < width; ++x) {
      int x0 = int(int64_t(x) * src.width / width);
      int x1 = std::max(x0 + 1, int(int64_t(x + 1) * src.width / width));
      for (int ch = 0; ch < c; ++ch) {
        uint32_t sum = 0;
        for (int yy = y0; yy < y1; ++yy) {
          const uint8_t* row = src.row(yy);
          for (int xx = x0; xx < x1; ++xx) sum += row[xx * c + ch];
        }
        uint32_t n = uint32_t((y1 - y0) * (x1 - x0));
        dst.row(y)[x * c + ch] = uint8_t((sum + n / 2) / n);
      }
    }
  }
  return dst;
}

image::Image ContactSheet(const std::vector<image::Image>& tiles, int columns, int rows) {
  if (tiles.empty() || columns <= 0 || rows <= 0) return {};
  const int tw = tiles[0].width, th = tiles[0].height, c = tiles[0].channels;
  image::Image sheet(tw * columns, th * rows, c);
  for (size_t t = 0; t < tiles.size() && int(t) < columns * rows; ++t) {
    const auto& tile = tiles[t];
    if (tile.width != tw || tile.height != th || tile.channels != c) continue;
    int ox = int(t) % columns * tw, oy = int(t) / columns * th;
    for (int y = 0; y < th; ++y) {
      std::copy(tile.row(y), tile.row(y) + tile.stride(), sheet.row(oy + y) + size_t(ox) * c);
    }
  }
  return sheet;
}

}  // namespace lipsync::client
