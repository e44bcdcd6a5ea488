// Cost of turning raw speech into per-frame features, excluding the audio encoder:
// PrepareBatchAudio (validation, s16 -> float, resampling, mel steps, windows) and
// AssembleFrameFeatures, for a batch of 24 frames in the middle of a long utterance
// (full 11 + 13 frames of context). Counter "per_frame" = seconds per video frame.
#include <benchmark/benchmark.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "audio/batch_audio.h"
#include "audio/mel_spectrogram.h"
#include "audio/wav_reader.h"

namespace lipsync::audio {
namespace {

constexpr int kBatch = 24;

std::string SpeechLikePcm(int rate, int frames) {
  std::mt19937 rng(3);
  std::normal_distribution<float> noise(0.0f, 0.01f);
  std::vector<float> x(size_t(frames) * size_t(rate / kFramesPerSecond));
  double phase = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double t = double(i) / rate;
    phase += 2 * M_PI * (170.0 + 50.0 * std::sin(2 * M_PI * 0.7 * t)) / rate;
    double v = 0.0;
    for (int h = 1; h <= 12; ++h) v += std::sin(h * phase) / h;
    x[i] = float(0.1 * (1.0 + std::sin(2 * M_PI * 4.0 * t)) * v) + noise(rng);
  }
  return FloatToS16le(x);
}

BatchAudioSpec MiddleBatch(int rate) {
  BatchAudioSpec spec;
  spec.start_frame = 240;
  spec.batch_size = kBatch;
  spec.sample_rate = rate;
  return spec;
}

void SetPerFrame(benchmark::State& state) {
  state.counters["per_frame"] = benchmark::Counter(
      double(kBatch), benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_PrepareBatchAudio(benchmark::State& state) {
  const int rate = int(state.range(0));
  const BatchAudioSpec spec = MiddleBatch(rate);
  const auto utterance = SpeechLikePcm(rate, 400);
  const auto pcm = SliceBatchAudio(utterance, spec).value();
  for (auto _ : state) {
    auto windows = PrepareBatchAudio(pcm, spec);
    benchmark::DoNotOptimize(windows);
  }
  SetPerFrame(state);
}
BENCHMARK(BM_PrepareBatchAudio)
    ->Arg(16000)
    ->Arg(24000)
    ->Arg(44100)
    ->Arg(48000)
    ->Unit(benchmark::kMicrosecond);

void BM_AssembleFrameFeatures(benchmark::State& state) {
  const BatchAudioSpec spec = MiddleBatch(16000);
  const auto pcm = SliceBatchAudio(SpeechLikePcm(16000, 400), spec).value();
  const MelWindows windows = PrepareBatchAudio(pcm, spec).value();
  const std::vector<float> vectors(size_t(windows.count) * kEncoderVectorSize, 0.5f);
  for (auto _ : state) {
    auto features = AssembleFrameFeatures(windows, vectors, spec);
    benchmark::DoNotOptimize(features);
  }
  SetPerFrame(state);
}
BENCHMARK(BM_AssembleFrameFeatures)->Unit(benchmark::kMicrosecond);

// Whole-utterance mel alone, per second of speech (80 steps).
void BM_MelSpectrogramOneSecond(benchmark::State& state) {
  const auto pcm = SpeechLikePcm(16000, 25);
  const auto samples = S16leToFloat(pcm).value();
  for (auto _ : state) {
    int steps = 0;
    auto mel = MelSpectrogram(samples.data(), samples.size(), &steps);
    benchmark::DoNotOptimize(mel);
  }
}
BENCHMARK(BM_MelSpectrogramOneSecond)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace lipsync::audio

BENCHMARK_MAIN();
