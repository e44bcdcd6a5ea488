// Signals and helpers shared by the audio tests: synthetic speech-like audio, a
// deterministic stand-in for the audio encoder, temp files and the numpy reference.
#pragma once

#include <unistd.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "audio/batch_audio.h"
#include "audio/wav_reader.h"
#include "common/status.h"

namespace lipsync::audio::testing {

// A fresh directory per call, removed by the caller's TempDir destructor.
class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = std::filesystem::temp_directory_path() /
            ("lipsync_audio_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// Voiced-speech-like test signal: a 120..220 Hz glottal tone with harmonics, syllable-rate
// amplitude modulation, a short pause, and a little noise. `seconds` long at `rate`.
inline std::vector<float> SpeechLike(double seconds, int rate, uint32_t seed = 7) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.01f);
  const size_t n = size_t(seconds * rate);
  std::vector<float> x(n);
  double phase = 0.0;
  for (size_t i = 0; i < n; ++i) {
    const double t = double(i) / rate;
    const double f0 = 170.0 + 50.0 * std::sin(2 * M_PI * 0.7 * t);
    phase += 2 * M_PI * f0 / rate;
    double v = 0.0;
    for (int h = 1; h <= 12; ++h) v += std::sin(h * phase) / h;
    const double envelope = 0.5 + 0.5 * std::sin(2 * M_PI * 4.0 * t);
    const bool pause = t > 0.8 && t < 0.95;
    x[i] = float(pause ? 0.0 : 0.2 * envelope * v) + noise(rng);
  }
  return x;
}

inline std::vector<float> Tone(double hz, double seconds, int rate, float amplitude = 0.5f) {
  std::vector<float> x(size_t(seconds * rate));
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = amplitude * float(std::sin(2 * M_PI * hz * double(i) / rate));
  }
  return x;
}

// Stand-in for audio_encoder.onnx: a fixed random sparse linear map [80x16] -> 512.
// Deterministic, so equal windows give bit-identical vectors.
class StandInEncoder {
 public:
  StandInEncoder() : index_(kEncoderVectorSize * kTaps), weight_(kEncoderVectorSize * kTaps) {
    std::mt19937 rng(1234);
    std::uniform_int_distribution<int> pick(0, 80 * 16 - 1);
    std::uniform_real_distribution<float> weight(-1.0f, 1.0f);
    for (int o = 0; o < kEncoderVectorSize; ++o) {
      for (int q = 0; q < kTaps; ++q) {
        index_[size_t(o * kTaps + q)] = pick(rng);
        weight_[size_t(o * kTaps + q)] = weight(rng);
      }
    }
  }
  Expected<std::vector<float>> operator()(const float* windows, int n) const {
    std::vector<float> out(size_t(n) * kEncoderVectorSize);
    for (int w = 0; w < n; ++w) {
      const float* in = windows + size_t(w) * 80 * 16;
      for (int o = 0; o < kEncoderVectorSize; ++o) {
        float sum = 0.0f;
        for (int q = 0; q < kTaps; ++q) {
          sum += weight_[size_t(o * kTaps + q)] * in[index_[size_t(o * kTaps + q)]];
        }
        out[size_t(w) * kEncoderVectorSize + size_t(o)] = sum;
      }
    }
    return out;
  }

 private:
  static constexpr int kTaps = 24;
  std::vector<int> index_;
  std::vector<float> weight_;
};

inline bool PythonHasNumpy() {
  return std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

inline void WriteFloats(const std::string& path, const std::vector<float>& v) {
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
}

inline std::vector<float> ReadFloats(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return {};
  std::vector<float> v(size_t(in.tellg()) / sizeof(float));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), std::streamsize(v.size() * sizeof(float)));
  return v;
}

}  // namespace lipsync::audio::testing
