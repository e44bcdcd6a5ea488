// Cold first batch with and without the prepared avatar store (issue 11), side by side
// in interleaved rounds, plus preparation time and file size.
//   prepared_store_bench [--frames 523] [--width 1280] [--height 720] [--batch 8]
//                        [--rounds 3] [--dir DIR] [--store DIR] [--threads 0]
// The demo avatar (src/demo) is generated into --dir (default
// /tmp/lipsync-avatar-<frames>-<w>x<h>, kept for later runs) unless already there.
// Settings are the server's defaults (JPEG q75, region JPEG, compact backgrounds).
// Each round, for every mode, the files it reads are first evicted from the page cache
// (fdatasync + posix_fadvise DONTNEED), then it times Plan + Open + composing the first
// `--batch` frames (JPEG out) from a fresh Avatar:
//   today     : no store, preload (today's model_root tenant: every frame decoded);
//   unprepared: store set, no file yet (frames decoded on demand, the file built in the
//               background, which is timed to WaitPrepared as `prepare`);
//   prepared  : store set, file present (frames read from it).
// Prints one line per mode and round, then the median per mode. Not run by ctest.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "avatar/avatar.h"
#include "avatar/prepared_store.h"
#include "common/flags.h"
#include "compositing/compositor.h"
#include "demo/avatar_generator.h"

namespace {

using namespace lipsync;
namespace fs = std::filesystem;
using Ms = std::chrono::duration<double, std::milli>;

void Evict(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void EvictSources(const std::string& dir) {
  Evict(dir + "/crop_rects.json");
  for (const auto& e : fs::directory_iterator(dir + "/frames")) Evict(e.path().string());
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Run(int argc, char** argv) {
  auto flags = Flags::Parse(
      argc - 1, argv + 1,
      {"frames", "width", "height", "batch", "rounds", "dir", "store", "threads"}, {"help"});
  if (!flags.ok()) {
    std::fprintf(stderr, "%s\n", flags.status().ToString().c_str());
    return 2;
  }
  if (flags->Has("help")) {
    std::printf(
        "prepared_store_bench [--frames 523] [--width 1280] [--height 720] [--batch 8] "
        "[--rounds 3] [--dir DIR] [--store DIR] [--threads 0]\n");
    return 0;
  }
  demo::AvatarSpec spec;
  auto frames = flags->GetInt("frames", 523);
  auto width = flags->GetInt("width", 1280);
  auto height = flags->GetInt("height", 720);
  auto batch = flags->GetInt("batch", 8);
  auto rounds = flags->GetInt("rounds", 3);
  auto threads = flags->GetInt("threads", 0);
  for (const auto* v : {&frames, &width, &height, &batch, &rounds, &threads}) {
    if (!v->ok()) {
      std::fprintf(stderr, "%s\n", v->status().ToString().c_str());
      return 2;
    }
  }
  spec.frames = int(*frames);
  spec.width = int(*width);
  spec.height = int(*height);
  if (Status st = demo::ValidateAvatarSpec(spec); !st.ok() || *batch < 1 || *rounds < 1) {
    std::fprintf(stderr, "bad --frames/--width/--height/--batch/--rounds\n");
    return 2;
  }
  const std::string dir =
      flags->GetString("dir", "/tmp/lipsync-avatar-" + std::to_string(spec.frames) + "-" +
                                  std::to_string(spec.width) + "x" + std::to_string(spec.height));
  const std::string store = flags->GetString("store", dir + "-store");
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

  avatar::AvatarOptions base;
  base.id = "bench";
  base.frames_dir = dir + "/frames";
  base.crop_rects_path = dir + "/crop_rects.json";
  base.region_jpeg = base.compact = true;
  base.jpeg_quality = 75;
  const std::string file = avatar::PreparedPath(store, base.id);

  std::vector<float> output(size_t(*batch) * 3 * 320 * 320);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  for (float& v : output) v = uniform(rng);
  compositing::Compositor compositor{static_cast<size_t>(*threads)};
  compositing::CompositeOptions jpeg;
  jpeg.format = config::OutputFormat::kJpeg;
  jpeg.jpeg_quality = 75;

  std::map<std::string, std::vector<double>> ms;
  std::map<std::string, double> memory;
  std::vector<double> prepare_ms;
  int64_t file_bytes = 0;
  for (int round = 0; round < *rounds; ++round) {
    for (const std::string mode : {"today", "unprepared", "prepared"}) {
      avatar::AvatarOptions o = base;
      o.preload = mode == "today";
      if (mode != "today") o.prepared_dir = store;
      if (mode == "unprepared") fs::remove(file);
      if (mode == "prepared" && !fs::exists(file)) {
        auto r = avatar::PrepareAvatar(o);
        if (!r.ok()) {
          std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
          return 1;
        }
      }
      EvictSources(dir);
      Evict(file);
      const auto t0 = std::chrono::steady_clock::now();
      auto a = avatar::Avatar::Open(o);
      if (!a.ok()) {
        std::fprintf(stderr, "%s\n", a.status().ToString().c_str());
        return 1;
      }
      const auto t1 = std::chrono::steady_clock::now();
      const double idle_bytes = double((*a)->memory_bytes());
      auto r =
          compositor.Compose(**a, {output.data(), compositing::OutputType::kFloat32, int(*batch)},
                             0, avatar::LoopMode::kPingPong, jpeg);
      const auto t2 = std::chrono::steady_clock::now();
      if (!r.ok()) {
        std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
        return 1;
      }
      const double total = Ms(t2 - t0).count();
      ms[mode].push_back(total);
      memory[mode] = double((*a)->memory_bytes());
      std::printf(
          "round %d %-10s: first batch of %d in %7.1f ms (open %7.1f, compose %6.1f), "
          "avatar holds %.1f KB after open, %.1f MB after the batch\n",
          round + 1, mode.c_str(), int(*batch), total, Ms(t1 - t0).count(), Ms(t2 - t1).count(),
          idle_bytes / 1e3, memory[mode] / 1e6);
      std::fflush(stdout);
      if (mode == "unprepared") {
        if (!(*a)->WaitPrepared(std::chrono::minutes(10))) {
          std::fprintf(stderr, "background preparation did not finish\n");
          return 1;
        }
        const double prep = Ms(std::chrono::steady_clock::now() - t0).count();
        prepare_ms.push_back(prep);
        file_bytes = int64_t(fs::file_size(file));
        std::printf(
            "round %d prepare   : background preparation done %.0f ms after the load "
            "began, file %.1f MB\n",
            round + 1, prep, double(file_bytes) / 1e6);
        std::fflush(stdout);
      }
    }
  }
  std::printf("\nmedian of %d rounds, %d frames %dx%d, first batch of %d (JPEG q75 out):\n",
              int(*rounds), spec.frames, spec.width, spec.height, int(*batch));
  for (const std::string mode : {"today", "unprepared", "prepared"}) {
    std::printf("  %-10s %8.1f ms   (spread %.1f..%.1f), avatar holds %.1f MB after it\n",
                mode.c_str(), Median(ms[mode]), *std::min_element(ms[mode].begin(), ms[mode].end()),
                *std::max_element(ms[mode].begin(), ms[mode].end()), memory[mode] / 1e6);
  }
  std::printf("  prepare    %8.0f ms   (background, from the load), file %.1f MB (%.0f KB/frame)\n",
              Median(prepare_ms), double(file_bytes) / 1e6, double(file_bytes) / 1e3 / spec.frames);
  std::printf("  today / prepared: %.1fx\n", Median(ms["today"]) / Median(ms["prepared"]));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return Run(argc, argv); }
