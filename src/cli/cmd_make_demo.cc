// `lipsync make-demo --out DIR`: generates the demo/bench/identity tenants (a model_root).
#include <chrono>
#include <cstdio>
#include <sstream>

#include "cli/command.h"
#include "common/flags.h"
#include "demo/make_demo.h"

namespace {

constexpr char kUsage[] =
    "usage: lipsync make-demo --out DIR [--frames N] [--seed S] [--width W] [--height H]\n"
    "                         [--only demo,bench,identity] [--force] [--threads N] [--burn-index]\n"
    "Writes DIR/{demo,bench,identity}/ (frames/, crop_rects.json, checkpoint/*.onnx):\n"
    "a model_root for both servers. Reruns skip what is already made; --force redoes it.\n";

std::vector<std::string> SplitCommas(const std::string& text) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  for (std::string part; std::getline(stream, part, ',');) {
    if (!part.empty()) parts.push_back(part);
  }
  return parts;
}

int Fail(const std::string& message) {
  std::fprintf(stderr, "make-demo: %s\n%s", message.c_str(), kUsage);
  return 2;
}

}  // namespace

static int RunMakeDemo(int argc, char** argv) {
  auto flags = lipsync::Flags::Parse(
      argc, argv, {"out", "frames", "seed", "width", "height", "only", "threads"},
      {"force", "help", "burn-index"});
  if (!flags.ok()) return Fail(flags.status().message());
  if (flags->Has("help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  if (!flags->positional().empty())
    return Fail("unexpected argument '" + flags->positional()[0] + "'");
  lipsync::demo::MakeDemoOptions options;
  options.out_dir = flags->GetString("out");
  options.avatar.burn_index = flags->Has("burn-index");  // frame index stripe (page tests)
  if (options.out_dir.empty()) return Fail("--out DIR is required");
  auto frames = flags->GetInt("frames", options.avatar.frames);
  auto seed = flags->GetInt("seed", long(options.avatar.seed));
  auto width = flags->GetInt("width", options.avatar.width);
  auto height = flags->GetInt("height", options.avatar.height);
  auto threads = flags->GetInt("threads", 0);
  for (const auto* value : {&frames, &seed, &width, &height, &threads}) {
    if (!value->ok()) return Fail(value->status().message());
  }
  if (*frames < 1 || *frames > 100000) return Fail("--frames must be 1..100000");
  if (*seed < 0) return Fail("--seed must be >= 0");
  if (*width < 64 || *width > 8192 || *height < 64 || *height > 8192) {
    return Fail("--width and --height must be 64..8192");
  }
  if (*threads < 0 || *threads > 256) return Fail("--threads must be 0..256");
  options.avatar.frames = int(*frames);
  options.avatar.seed = uint64_t(*seed);
  options.avatar.width = int(*width);
  options.avatar.height = int(*height);
  options.threads = int(*threads);
  options.force = flags->Has("force");
  if (flags->Has("only")) options.tenants = SplitCommas(flags->GetString("only"));

  options.progress = [](const std::string& stage, int done, int total) {
    // Every tenth frame is enough to show it is moving without flooding a log.
    if (done == total || done % 10 == 0) {
      std::printf("%s %d/%d\n", stage.c_str(), done, total);
      std::fflush(stdout);
    }
  };
  const auto start = std::chrono::steady_clock::now();
  lipsync::Status made = lipsync::demo::MakeDemo(options);
  if (!made.ok()) {
    std::fprintf(stderr, "%s\n", made.ToString().c_str());
    return 1;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("model_root ready: %s (%.1f s)\n", options.out_dir.c_str(), seconds);
  return 0;
}
LIPSYNC_COMMAND("make-demo", "generate demo/bench/identity avatars and models (a model_root)",
                RunMakeDemo);
