// Writes a received frame stream to disk: DIR/frames/frame_NNNNN.jpg (raw RGB frames
// are JPEG-encoded first), then on Finish an MP4 at 25 fps (Debian's ffmpeg, with the
// speech muxed in when a WAV is given) and a contact-sheet PNG (a grid of downscaled
// frames spread evenly over the stream).
//
// Thread-safe for AddFrame (frames may arrive out of order from parallel calls);
// Finish once, after the last AddFrame.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "image/image.h"

namespace lipsync::client {

struct SavedOutputs {
  std::string frames_dir;
  int frames = 0;
  std::string video_path;  // empty if ffmpeg failed or is missing (see video_error)
  std::string video_error;
  std::string contact_sheet_path;
};

class StreamSaver {
 public:
  // Creates DIR and DIR/frames. `name` names the video: DIR/<name>.mp4.
  static Expected<std::unique_ptr<StreamSaver>> Create(const std::string& dir,
                                                       const std::string& name);

  // Frame `index` of the stream: JPEG bytes, or packed RGB (width*height*3 bytes).
  Status AddFrame(int index, std::string_view bytes, bool raw_rgb, int width, int height);

  // Writes the MP4 (frames 0..n-1 must all be present for it to cover the stream) and
  // the contact sheet (`columns` x `rows` tiles, each `tile_width` wide).
  Expected<SavedOutputs> Finish(const std::string& wav_path, int columns = 4, int rows = 3,
                                int tile_width = 320);

 private:
  StreamSaver(std::string dir, std::string name) : dir_(std::move(dir)), name_(std::move(name)) {}
  std::string FramePath(int index) const;

  std::string dir_;
  std::string name_;
  std::mutex mu_;
  std::vector<int> indices_;
};

// Box-filter downscale of an RGB image to `width` (height keeps the aspect ratio).
image::Image Downscale(const image::Image& src, int width);
// Tiles (same size) into a columns x rows grid; missing tiles stay black.
image::Image ContactSheet(const std::vector<image::Image>& tiles, int columns, int rows);

// Runs a program (searched in PATH, e.g. ffmpeg) with stdout and stderr written to
// `log_path`; its exit code, or -1 if it could not be started. No shell: arguments need
// no quoting.
int RunProgram(const std::vector<std::string>& args, const std::string& log_path);

}  // namespace lipsync::client
