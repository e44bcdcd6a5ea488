// Speech input: audio files decoded by libsndfile (WAV, FLAC, OGG, ... any rate or
// channel count) down-mixed to mono float, and the s16le <-> float conversions used on
// the wire (raw_audio is PCM signed 16-bit little-endian).
// Free functions, no shared state: safe from any thread. Results are owned by the caller.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace lipsync::audio {

// Mono audio in [-1, 1] at its own sample rate.
struct MonoAudio {
  std::vector<float> samples;
  int sample_rate = 0;
};

// Decodes any format libsndfile reads; channels are averaged into one.
// NOT_FOUND if the file is missing; INVALID_ARGUMENT naming the file if it cannot be decoded.
Expected<MonoAudio> ReadAudioFile(const std::string& path);

// s16le bytes -> floats in [-1, 1) (sample / 32768). INVALID_ARGUMENT on an odd byte count.
Expected<std::vector<float>> S16leToFloat(std::string_view pcm_s16le);
// Floats -> s16le bytes (x * 32768, rounded to nearest, clipped to [-32768, 32767]).
std::string FloatToS16le(const float* samples, size_t count);
inline std::string FloatToS16le(const std::vector<float>& samples) {
  return FloatToS16le(samples.data(), samples.size());
}

}  // namespace lipsync::audio
