// Per-frame cost of the compositing stages at 1280x720 with a 182-px crop (the guide's
// avatar), on one core: visual input build, model output conversion, resize + paste
// (both modes), full JPEG encode, region JPEG encode, and one whole composed frame.
// Run: <build>/bench/compositing/compositing_bench --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "avatar/avatar.h"
#include "compositing/compositor.h"
#include "compositing/paste_back.h"
#include "compositing/visual_input.h"
#include "image/image.h"
#include "image/region_jpeg.h"

namespace lipsync::compositing {
namespace {

constexpr int kW = 1280, kH = 720;
const avatar::CropRect kRect{532, 210, 714, 392};

image::Image Frame() {
  image::Image img(kW, kH, 3);
  std::mt19937 rng(1);
  for (int y = 0; y < kH; ++y) {
    for (int x = 0; x < kW; ++x) {
      uint8_t* p = img.row(y) + x * 3;
      p[0] = static_cast<uint8_t>(128 + 90 * std::sin(x / 37.0) + rng() % 16);
      p[1] = static_cast<uint8_t>(128 + 90 * std::cos(y / 23.0) + rng() % 16);
      p[2] = static_cast<uint8_t>((x + y) * 255 / (kW + kH));
    }
  }
  return img;
}

std::vector<float> Prediction() {
  std::vector<float> p(3 * 320 * 320);
  for (size_t i = 0; i < p.size(); ++i) p[i] = 0.5f + 0.4f * std::sin(i * 0.001f);
  return p;
}

void BM_VisualInput(benchmark::State& state) {
  image::Image frame = Frame();
  VisualInputBuilder builder;
  std::vector<float> out(kVisualInputFloats);
  for (auto _ : state) {
    auto st = builder.Build(frame.pixels.data(), kW, kH, frame.stride(), kRect, out.data());
    benchmark::DoNotOptimize(out.data());
    if (!st.ok()) state.SkipWithError(st.message().c_str());
  }
}
BENCHMARK(BM_VisualInput)->Unit(benchmark::kMillisecond);

void BM_OutputToRgb(benchmark::State& state) {
  auto pred = Prediction();
  std::vector<uint8_t> rgb(320 * 320 * 3);
  for (auto _ : state) {
    ModelOutputToRgb(pred.data(), OutputType::kFloat32, rgb.data());
    benchmark::DoNotOptimize(rgb.data());
  }
}
BENCHMARK(BM_OutputToRgb)->Unit(benchmark::kMillisecond);

void BM_Paste(benchmark::State& state) {
  const auto mode = state.range(0) ? config::PasteMode::kSynctalk328 : config::PasteMode::kResize;
  const int feather = static_cast<int>(state.range(1));
  image::Image frame = Frame(), work = frame;
  std::vector<uint8_t> face(320 * 320 * 3, 128);
  PasteBack paste;
  for (auto _ : state) {
    auto st =
        paste.Paste(face.data(), mode, feather, kRect, work.pixels.data(), kW, kH, work.stride());
    benchmark::DoNotOptimize(work.pixels.data());
    if (!st.ok()) state.SkipWithError(st.message().c_str());
  }
  state.SetLabel(std::string(state.range(0) ? "synctalk328" : "resize") + " feather " +
                 std::to_string(feather));
}
BENCHMARK(BM_Paste)->Args({1, 0})->Args({0, 0})->Args({1, 8})->Unit(benchmark::kMillisecond);

void BM_CopyBackground(benchmark::State& state) {
  image::Image frame = Frame(), work = frame;
  for (auto _ : state) {
    std::copy(frame.pixels.begin(), frame.pixels.end(), work.pixels.begin());
    benchmark::DoNotOptimize(work.pixels.data());
  }
}
BENCHMARK(BM_CopyBackground)->Unit(benchmark::kMillisecond);

void BM_JpegFullEncode(benchmark::State& state) {
  image::Image frame = Frame();
  for (auto _ : state) {
    auto jpeg = image::EncodeJpeg(frame, 75);
    benchmark::DoNotOptimize(jpeg);
  }
}
BENCHMARK(BM_JpegFullEncode)->Unit(benchmark::kMillisecond);

void BM_JpegRegionEncode(benchmark::State& state) {
  image::Image frame = Frame();
  auto bg = image::RegionJpegBackground::Create(frame.pixels.data(), kW, kH, frame.stride(),
                                                image::JpegSettings{});
  for (auto _ : state) {
    auto jpeg = bg->EncodeWithRegion(frame.pixels.data(), frame.stride(),
                                     {kRect.x1, kRect.y1, kRect.width(), kRect.height()});
    benchmark::DoNotOptimize(jpeg);
  }
}
BENCHMARK(BM_JpegRegionEncode)->Unit(benchmark::kMillisecond);

// One whole frame through Compositor::Compose (batch 1 runs on the calling thread).
// range(0): 0 = full frames + full encode, 1 = full frames + region JPEG,
// 2 = compact storage + region JPEG.
void BM_ComposeFrame(benchmark::State& state) {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / ("lipsync-bench-" + std::to_string(::getpid()));
  fs::create_directories(dir / "frames");
  (void)image::WritePng((dir / "frames" / "frame_0000.png").string(), Frame());
  (void)image::WriteFileBytes((dir / "crop_rects.json").string(), "[[532,210,714,392]]");
  avatar::AvatarOptions o;
  o.id = "bench";
  o.frames_dir = (dir / "frames").string();
  o.crop_rects_path = (dir / "crop_rects.json").string();
  o.region_jpeg = state.range(0) >= 1;
  o.compact = state.range(0) == 2;
  auto a = avatar::Avatar::Open(o);
  fs::remove_all(dir);
  if (!a.ok()) {
    state.SkipWithError(a.status().message().c_str());
    return;
  }
  Compositor compositor(1);
  auto pred = Prediction();
  CompositeOptions opt;
  for (auto _ : state) {
    auto r = compositor.Compose(**a, {pred.data(), OutputType::kFloat32, 1}, 0,
                                avatar::LoopMode::kWrap, opt);
    if (!r.ok()) state.SkipWithError(r.status().message().c_str());
    benchmark::DoNotOptimize(r);
  }
  state.counters["avatar_bytes_per_frame"] = static_cast<double>((*a)->memory_bytes());
  const char* labels[] = {"full frame, full encode", "full frame, region jpeg",
                          "compact, region jpeg"};
  state.SetLabel(labels[state.range(0)]);
}
BENCHMARK(BM_ComposeFrame)->Arg(0)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace lipsync::compositing

BENCHMARK_MAIN();
