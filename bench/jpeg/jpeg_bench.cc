// Full-frame JPEG encode vs region re-encode + restart-interval splice
// (RegionJpegBackground) for a 384x384 mouth-sized rect, single thread.
// Run: <build>/bench/jpeg/jpeg_bench ; prints region/full speed-up per size at the end.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "image/image.h"
#include "image/region_jpeg.h"

namespace lipsync::image {
namespace {

constexpr int kPatch = 384;

// Camera-like texture: smooth gradients plus sensor noise.
Image TexturedFrame(int w, int h) {
  std::mt19937 rng(42);
  std::normal_distribution<float> noise(0.f, 6.f);
  Image img(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.row(y) + x * 3;
      const float base[3] = {60.f + 140.f * x / w, 40.f + 120.f * y / h,
                             90.f + 60.f * float((x + y) % 97) / 97.f};
      for (int c = 0; c < 3; ++c) p[c] = uint8_t(std::clamp(base[c] + noise(rng), 0.f, 255.f));
    }
  return img;
}

// Region roughly where a face's lower half sits, deliberately not MCU-aligned.
PixelRect MouthRect(int w, int h) {
  return {w / 2 - kPatch / 2 + 5, h / 2 - kPatch / 4 + 3, kPatch, kPatch};
}

struct Fixture {
  Image background;
  Image frame;
  PixelRect rect;
  RegionJpegBackground region;
};

const Fixture& GetFixture(int w, int h) {
  static std::map<int, Fixture*> fixtures;
  auto it = fixtures.find(w);
  if (it != fixtures.end()) return *it->second;
  Image bg = TexturedFrame(w, h);
  Image frame = bg;
  const PixelRect rect = MouthRect(w, h);
  // A different but equally camera-like patch (inverted background, fresh noise).
  std::mt19937 rng(7);
  std::normal_distribution<float> noise(0.f, 6.f);
  for (int y = rect.y; y < rect.y + rect.height; ++y)
    for (int x = rect.x; x < rect.x + rect.width; ++x)
      for (int c = 0; c < 3; ++c) {
        uint8_t& p = frame.row(y)[x * 3 + c];
        p = uint8_t(std::clamp(255.f - p + noise(rng), 0.f, 255.f));
      }
  auto region = RegionJpegBackground::Create(bg.pixels.data(), w, h, bg.stride(), {});
  if (!region.ok()) {
    std::fprintf(stderr, "%s\n", region.status().ToString().c_str());
    std::abort();
  }
  // A benchmark of wrong output would be meaningless: check the splice once.
  auto full = EncodeJpegWithRestarts(frame.pixels.data(), w, h, frame.stride(), {});
  auto spliced = region->EncodeWithRegion(frame.pixels.data(), frame.stride(), rect);
  if (!full.ok() || !spliced.ok() || *full != *spliced) {
    std::fprintf(stderr, "region encode differs from full encode at %dx%d\n", w, h);
    std::abort();
  }
  auto* f = new Fixture{std::move(bg), std::move(frame), rect, std::move(*region)};
  fixtures[w] = f;
  return *f;
}

void BM_FullEncode(benchmark::State& state) {
  const Fixture& f = GetFixture(int(state.range(0)), int(state.range(1)));
  size_t bytes = 0;
  for (auto _ : state) {
    auto jpeg = EncodeJpegWithRestarts(f.frame.pixels.data(), f.frame.width, f.frame.height,
                                       f.frame.stride(), f.region.settings());
    bytes = jpeg->size();
    benchmark::DoNotOptimize(jpeg);
  }
  state.counters["jpeg_bytes"] = double(bytes);
}

void BM_RegionEncode(benchmark::State& state) {
  const Fixture& f = GetFixture(int(state.range(0)), int(state.range(1)));
  size_t bytes = 0;
  for (auto _ : state) {
    auto jpeg = f.region.EncodeWithRegion(f.frame.pixels.data(), f.frame.stride(), f.rect);
    bytes = jpeg->size();
    benchmark::DoNotOptimize(jpeg);
  }
  state.counters["jpeg_bytes"] = double(bytes);
}

BENCHMARK(BM_FullEncode)->Args({1280, 720})->Args({1920, 1080})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_RegionEncode)->Args({1280, 720})->Args({1920, 1080})->Unit(benchmark::kMillisecond);

// Console output plus each run's CPU time (steadier than wall time on a shared machine),
// for the full/region ratios printed at the end.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  RatioReporter() : ConsoleReporter(OO_Tabular) {}
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Iteration)
        cpu_ms_[run.benchmark_name()] = run.GetAdjustedCPUTime();
    }
  }
  void PrintRatios() const {
    for (const char* size : {"1280/720", "1920/1080"}) {
      auto full = cpu_ms_.find(std::string("BM_FullEncode/") + size);
      auto region = cpu_ms_.find(std::string("BM_RegionEncode/") + size);
      if (full == cpu_ms_.end() || region == cpu_ms_.end()) continue;
      std::printf("%s (CPU time): full %.3f ms, region %.3f ms, speed-up %.1fx\n", size,
                  full->second, region->second, full->second / region->second);
    }
  }

 private:
  std::map<std::string, double> cpu_ms_;
};

}  // namespace
}  // namespace lipsync::image

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  lipsync::image::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintRatios();
  benchmark::Shutdown();
  return 0;
}
