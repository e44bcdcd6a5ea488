// Memory per tenant and load time for a long avatar, per storage mode, side by side
// with the raw decoded frames (frames x width x height x 3).
//   avatar_memory_bench [--frames 523] [--width 1280] [--height 720]
//                       [--modes compact,full] [--dir DIR] [--restart-interval 2]
// The demo avatar (src/demo) is generated into --dir (default
// /tmp/lipsync-avatar-<frames>-<w>x<h>, kept for later runs) unless already there.
// Modes: full (decoded frames), region (decoded frames + JPEG), compact (JPEG + the
// region encode's ReadRect). Each is opened with preload; memory is
// Avatar::memory_bytes() (the heap bytes of everything held), load time is Open's.
// Prints one "memory <mode> ..." line per mode. Not run by ctest.
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "avatar/avatar.h"
#include "common/flags.h"
#include "demo/avatar_generator.h"

namespace {

using namespace lipsync;
namespace fs = std::filesystem;

int Run(int argc, char** argv) {
  auto flags =
      Flags::Parse(argc - 1, argv + 1,
                   {"frames", "width", "height", "modes", "dir", "restart-interval"}, {"help"});
  if (!flags.ok()) {
    std::fprintf(stderr, "%s\n", flags.status().ToString().c_str());
    return 2;
  }
  if (flags->Has("help")) {
    std::printf(
        "avatar_memory_bench [--frames 523] [--width 1280] [--height 720] "
        "[--modes compact,full] [--dir DIR] [--restart-interval MCUS]\n");
    return 0;
  }
  demo::AvatarSpec spec;
  auto frames = flags->GetInt("frames", 523);
  auto width = flags->GetInt("width", 1280);
  auto height = flags->GetInt("height", 720);
  if (!frames.ok() || !width.ok() || !height.ok()) {
    std::fprintf(stderr, "--frames, --width and --height take integers\n");
    return 2;
  }
  spec.frames = int(*frames);
  spec.width = int(*width);
  spec.height = int(*height);
  if (Status st = demo::ValidateAvatarSpec(spec); !st.ok()) {
    std::fprintf(stderr, "%s\n", st.ToString().c_str());
    return 2;
  }
  const std::string dir =
      flags->GetString("dir", "/tmp/lipsync-avatar-" + std::to_string(spec.frames) + "-" +
                                  std::to_string(spec.width) + "x" + std::to_string(spec.height));
  char last[32];
  std::snprintf(last, sizeof(last), "frame_%04d.png", spec.frames - 1);
  if (!fs::exists(fs::path(dir) / "crop_rects.json") ||
      !fs::exists(fs::path(dir) / "frames" / last)) {
    std::printf("generating %d frames %dx%d in %s ...\n", spec.frames, spec.width, spec.height,
                dir.c_str());
    std::fflush(stdout);
    if (Status st = demo::GenerateAvatarFrames(spec, dir); !st.ok()) {
      std::fprintf(stderr, "%s\n", st.ToString().c_str());
      return 1;
    }
  }
  const double raw = double(spec.frames) * spec.width * spec.height * 3;
  std::printf("raw decoded frames: %d x %dx%dx3 = %.1f MB\n", spec.frames, spec.width, spec.height,
              raw / 1e6);
  std::stringstream modes(flags->GetString("modes", "compact,full"));
  std::string mode;
  while (std::getline(modes, mode, ',')) {
    avatar::AvatarOptions o;
    o.id = "bench";
    o.frames_dir = dir + "/frames";
    o.crop_rects_path = dir + "/crop_rects.json";
    o.num_frames = spec.frames;
    o.preload = true;
    auto interval = flags->GetInt("restart-interval", o.restart_interval_mcus);
    if (!interval.ok()) {
      std::fprintf(stderr, "--restart-interval takes an integer\n");
      return 2;
    }
    o.restart_interval_mcus = int(*interval);
    if (mode == "region") {
      o.region_jpeg = true;
    } else if (mode == "compact") {
      o.region_jpeg = o.compact = true;
    } else if (mode != "full") {
      std::fprintf(stderr, "unknown mode '%s'; expected full, region or compact\n", mode.c_str());
      return 2;
    }
    auto a = avatar::Avatar::Open(o);
    if (!a.ok()) {
      std::fprintf(stderr, "%s\n", a.status().ToString().c_str());
      return 1;
    }
    const double bytes = double((*a)->memory_bytes());
    double jpeg_bytes = 0, held_pixels = 0;
    for (int i = 0; i < spec.frames; ++i) {
      auto f = (*a)->Frame(i);
      if (!f.ok()) continue;
      if ((*f)->jpeg) jpeg_bytes += double((*f)->jpeg->background_jpeg().size());
      held_pixels += double((*f)->pixels_rect.width) * (*f)->pixels_rect.height;
    }
    std::printf(
        "memory %s: %.1f MB for %d frames (%.3f MB/frame), %.3f of raw (1/%.1f), load %.0f ms "
        "(%.2f ms/frame); JPEG %.1f KB/frame (restart interval %d MCUs), %.0f px held/frame\n",
        mode.c_str(), bytes / 1e6, spec.frames, bytes / 1e6 / spec.frames, bytes / raw, raw / bytes,
        (*a)->load_ms(), (*a)->load_ms() / spec.frames, jpeg_bytes / 1e3 / spec.frames,
        o.restart_interval_mcus, held_pixels / spec.frames);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
