// Per-frame cost of the compositing stages on ONE core, on the demo avatar (1280x720,
// src/demo, crop rects about 180 px): visual input build, model output conversion
// (float32 and uint8), resize + paste (both modes), full JPEG vs region JPEG, and one
// whole frame measured as
//   visual input build + output conversion + paste + encode
// (BuildVisualInputs + Compose of batch 1 on the calling thread), side by side:
//   full:    full decoded frames, full-frame JPEG encode
//   region:  compact backgrounds (JPEG + ReadRect), region JPEG (byte-identical)
// Frames cycle over the avatar's first --frames backgrounds.
//   compositing_bench [--frames=N] [google benchmark flags]
// Prints a "summary" block (CPU ms per frame, region speed-up) after the table.
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "avatar/avatar.h"
#include "compositing/compositor.h"
#include "compositing/paste_back.h"
#include "compositing/visual_input.h"
#include "demo/avatar_generator.h"
#include "image/image.h"
#include "image/region_jpeg.h"

namespace lipsync::compositing {
namespace {

namespace fs = std::filesystem;

int g_frames = 16;

struct DemoAvatar {
  fs::path dir;
  std::shared_ptr<avatar::Avatar> full;     // decoded frames, no JPEG
  std::shared_ptr<avatar::Avatar> compact;  // JPEG + ReadRect
  ~DemoAvatar() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

DemoAvatar& Demo() {
  static DemoAvatar* demo = [] {
    auto* d = new DemoAvatar;
    d->dir = fs::temp_directory_path() / ("lipsync-compositing-bench-" + std::to_string(getpid()));
    demo::AvatarSpec spec;
    spec.frames = g_frames;
    if (Status st = demo::GenerateAvatarFrames(spec, d->dir.string()); !st.ok()) {
      std::fprintf(stderr, "demo avatar: %s\n", st.ToString().c_str());
      std::exit(1);
    }
    avatar::AvatarOptions o;
    o.id = "demo";
    o.frames_dir = (d->dir / "frames").string();
    o.crop_rects_path = (d->dir / "crop_rects.json").string();
    d->full = *avatar::Avatar::Open(o);
    o.region_jpeg = o.compact = true;
    d->compact = *avatar::Avatar::Open(o);
    return d;
  }();
  return *demo;
}

// The decoded background frame 0 and its rect.
const image::Image& Frame0() {
  static image::Image frame = (*Demo().full->Frame(0))->pixels;
  return frame;
}
avatar::CropRect Rect0() { return Demo().full->rect(0); }

// A prediction in each output type, BGR planar 3x320x320.
const std::vector<float>& PredictionF() {
  static std::vector<float> p = [] {
    std::vector<float> v(3 * 320 * 320);
    for (size_t i = 0; i < v.size(); ++i) v[i] = 0.5f + 0.4f * std::sin(float(i) * 0.001f);
    return v;
  }();
  return p;
}
const std::vector<uint8_t>& PredictionU8() {
  static std::vector<uint8_t> p = [] {
    std::vector<uint8_t> v(PredictionF().size());
    for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t(PredictionF()[i] * 255.f + 0.5f);
    return v;
  }();
  return p;
}

void BM_VisualInput(benchmark::State& state) {
  const image::Image& frame = Frame0();
  VisualInputBuilder builder;
  std::vector<float> out(kVisualInputFloats);
  for (auto _ : state) {
    auto st = builder.Build(frame.pixels.data(), frame.width, frame.height, frame.stride(), Rect0(),
                            out.data());
    benchmark::DoNotOptimize(out.data());
    if (!st.ok()) state.SkipWithError(st.message().c_str());
  }
}
BENCHMARK(BM_VisualInput)->Unit(benchmark::kMillisecond);

// The uint8 form for the inference link's VISUAL_UINT8 (614 KB instead of 2.4 MB).
void BM_VisualInputU8(benchmark::State& state) {
  auto frame = *Demo().full->Frame(0);
  VisualInputBuilder builder;
  std::vector<uint8_t> out(kVisualInputFloats);
  for (auto _ : state) {
    auto st = builder.BuildU8(*frame, Rect0(), out.data());
    benchmark::DoNotOptimize(out.data());
    if (!st.ok()) state.SkipWithError(st.message().c_str());
  }
}
BENCHMARK(BM_VisualInputU8)->Unit(benchmark::kMillisecond);

void BM_OutputToRgb(benchmark::State& state) {
  const bool u8 = state.range(0) == 1;
  std::vector<uint8_t> rgb(320 * 320 * 3);
  for (auto _ : state) {
    if (u8) {
      ModelOutputToRgb(PredictionU8().data(), OutputType::kUint8, rgb.data());
    } else {
      ModelOutputToRgb(PredictionF().data(), OutputType::kFloat32, rgb.data());
    }
    benchmark::DoNotOptimize(rgb.data());
  }
  state.SetLabel(u8 ? "uint8" : "float32");
}
BENCHMARK(BM_OutputToRgb)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

void BM_Paste(benchmark::State& state) {
  const auto mode = state.range(0) ? config::PasteMode::kSynctalk328 : config::PasteMode::kResize;
  const int feather = static_cast<int>(state.range(1));
  const image::Image& frame = Frame0();
  image::Image work = frame;
  std::vector<uint8_t> face(320 * 320 * 3, 128);
  PasteBack paste;
  for (auto _ : state) {
    state.PauseTiming();
    std::memcpy(work.pixels.data(), frame.pixels.data(), frame.pixels.size());
    state.ResumeTiming();
    auto st = paste.Paste(face.data(), mode, feather, Rect0(), work.pixels.data(), work.width,
                          work.height, work.stride());
    benchmark::DoNotOptimize(work.pixels.data());
    if (!st.ok()) state.SkipWithError(st.message().c_str());
  }
  state.SetLabel(std::string(state.range(0) ? "synctalk328" : "resize") + " feather " +
                 std::to_string(feather));
}
BENCHMARK(BM_Paste)->Args({1, 0})->Args({0, 0})->Args({1, 8})->Unit(benchmark::kMillisecond);

void BM_JpegFull(benchmark::State& state) {
  const image::Image& frame = Frame0();
  for (auto _ : state) {
    auto jpeg = image::EncodeJpegWithRestarts(frame.pixels.data(), frame.width, frame.height,
                                              frame.stride(), image::JpegSettings{});
    benchmark::DoNotOptimize(jpeg);
  }
}
BENCHMARK(BM_JpegFull)->Unit(benchmark::kMillisecond);

void BM_JpegRegion(benchmark::State& state) {
  const image::Image& frame = Frame0();
  auto bg = image::RegionJpegBackground::Create(frame.pixels.data(), frame.width, frame.height,
                                                frame.stride(), image::JpegSettings{});
  const avatar::CropRect r = Rect0();
  for (auto _ : state) {
    auto jpeg = bg->EncodeWithRegion(frame.pixels.data(), frame.stride(),
                                     {r.x1, r.y1, r.width(), r.height()});
    benchmark::DoNotOptimize(jpeg);
  }
}
BENCHMARK(BM_JpegRegion)->Unit(benchmark::kMillisecond);

// One whole frame: visual input build + output conversion (uint8, the servers' transport)
// + paste (synctalk328) + encode, batch 1 on the calling thread.
// range(0): 0 = full frames + full JPEG, 1 = compact + region JPEG.
void BM_Frame(benchmark::State& state) {
  const bool region = state.range(0) == 1;
  avatar::Avatar& a = region ? *Demo().compact : *Demo().full;
  Compositor compositor(1);
  std::vector<float> visual(kVisualInputFloats);
  CompositeOptions opt;
  int64_t start = 0;
  size_t bytes = 0;
  CompositeTimings sum;
  double visual_ms = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    Status st = compositor.BuildVisualInputs(a, start, 1, avatar::LoopMode::kWrap, visual.data());
    visual_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    auto r = compositor.Compose(a, {PredictionU8().data(), OutputType::kUint8, 1}, start,
                                avatar::LoopMode::kWrap, opt);
    if (!st.ok() || !r.ok()) {
      state.SkipWithError("compose failed");
      break;
    }
    bytes = r->frames[0].size();
    sum.background_ms += r->timings.background_ms;
    sum.convert_ms += r->timings.convert_ms;
    sum.paste_ms += r->timings.paste_ms;
    sum.encode_ms += r->timings.encode_ms;
    benchmark::DoNotOptimize(r);
    start = (start + 1) % a.num_frames();
  }
  // Stage split inside the whole frame (wall ms per frame, same loop).
  const double n = std::max<double>(1, double(state.iterations()));
  state.counters["visual_ms"] = visual_ms / n;
  state.counters["bg_ms"] = sum.background_ms / n;
  state.counters["convert_ms"] = sum.convert_ms / n;
  state.counters["paste_ms"] = sum.paste_ms / n;
  state.counters["encode_ms"] = sum.encode_ms / n;
  state.counters["jpeg_bytes"] = double(bytes);
  state.counters["avatar_bytes_per_frame"] = double(a.memory_bytes()) / a.num_frames();
  state.SetLabel(region ? "compact + region jpeg" : "full frames + full jpeg");
}
BENCHMARK(BM_Frame)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

class SummaryReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Iteration)
        cpu_ms_[run.benchmark_name()] = run.GetAdjustedCPUTime();
    }
  }
  void PrintSummary() const {
    auto get = [&](const char* name) {
      auto it = cpu_ms_.find(name);
      return it == cpu_ms_.end() ? -1.0 : it->second;
    };
    std::printf("summary (CPU ms per 1280x720 frame, one core, demo avatar):\n");
    std::printf("  visual_input_ms %.3f\n", get("BM_VisualInput"));
    std::printf("  visual_input_u8_ms %.3f\n", get("BM_VisualInputU8"));
    std::printf("  output_to_rgb_float_ms %.3f\n", get("BM_OutputToRgb/0"));
    std::printf("  output_to_rgb_uint8_ms %.3f\n", get("BM_OutputToRgb/1"));
    std::printf("  paste_synctalk328_ms %.3f\n", get("BM_Paste/1/0"));
    std::printf("  paste_resize_ms %.3f\n", get("BM_Paste/0/0"));
    std::printf("  jpeg_full_ms %.3f\n", get("BM_JpegFull"));
    std::printf("  jpeg_region_ms %.3f\n", get("BM_JpegRegion"));
    const double full = get("BM_Frame/0"), region = get("BM_Frame/1");
    std::printf("  frame_full_ms %.3f\n", full);
    std::printf("  frame_region_ms %.3f\n", region);
    if (full > 0 && region > 0) std::printf("  frame_speedup %.2f\n", full / region);
  }

 private:
  std::map<std::string, double> cpu_ms_;
};

}  // namespace
}  // namespace lipsync::compositing

int main(int argc, char** argv) {
  // Our own flag first; Google Benchmark rejects unknown ones.
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--frames=", 9) == 0) {
      lipsync::compositing::g_frames = std::max(1, std::atoi(argv[i] + 9));
      for (int j = i; j + 1 < argc; ++j) argv[j] = argv[j + 1];
      --argc;
      --i;
    }
  }
  benchmark::Initialize(&argc, argv);
  lipsync::compositing::SummaryReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSummary();
  benchmark::Shutdown();
  return 0;
}
