#include "audio/wav_reader.h"

#include <sndfile.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace lipsync::audio {

Expected<MonoAudio> ReadAudioFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return Status::NotFound("audio file '" + path + "' does not exist");
  }
  SF_INFO info{};
  std::unique_ptr<SNDFILE, int (*)(SNDFILE*)> file(sf_open(path.c_str(), SFM_READ, &info),
                                                   &sf_close);
  if (!file) {
    return Status::InvalidArgument("cannot decode audio file '" + path +
                                   "': " + sf_strerror(nullptr) +
                                   " (expected a format libsndfile reads, e.g. WAV)");
  }
  if (info.channels < 1 || info.samplerate < 1 || info.frames < 0) {
    return Status::InvalidArgument(
        "audio file '" + path + "' declares " + std::to_string(info.channels) + " channels at " +
        std::to_string(info.samplerate) + " Hz (expected >= 1 channel and a positive rate)");
  }
  // libsndfile scales integer formats to [-1, 1) when reading floats.
  std::vector<float> interleaved(size_t(info.frames) * size_t(info.channels));
  const sf_count_t frames_read = sf_readf_float(file.get(), interleaved.data(), info.frames);
  if (frames_read < 0) {
    return Status::InvalidArgument("reading audio file '" + path +
                                   "' failed: " + sf_strerror(file.get()));
  }
  MonoAudio out;
  out.sample_rate = info.samplerate;
  out.samples.resize(size_t(frames_read));
  const int channels = info.channels;
  for (size_t i = 0; i < out.samples.size(); ++i) {
    float sum = 0.0f;
    for (int c = 0; c < channels; ++c) sum += interleaved[i * size_t(channels) + size_t(c)];
    out.samples[i] = sum / float(channels);
  }
  return out;
}

Expected<std::vector<float>> S16leToFloat(std::string_view pcm_s16le) {
  if (pcm_s16le.size() % 2 != 0) {
    return Status::InvalidArgument("PCM s16le audio has an odd byte count (" +
                                   std::to_string(pcm_s16le.size()) +
                                   "); expected 2 bytes per sample");
  }
  std::vector<float> out(pcm_s16le.size() / 2);
  const auto* bytes = reinterpret_cast<const uint8_t*>(pcm_s16le.data());
  for (size_t i = 0; i < out.size(); ++i) {
    const auto value = int16_t(uint16_t(bytes[2 * i]) | uint16_t(bytes[2 * i + 1]) << 8);
    out[i] = float(value) / 32768.0f;
  }
  return out;
}

std::string FloatToS16le(const float* samples, size_t count) {
  std::string out(count * 2, '\0');
  for (size_t i = 0; i < count; ++i) {
    float scaled = std::nearbyint(samples[i] * 32768.0f);
    if (!(scaled >= -32768.0f)) scaled = -32768.0f;  // also maps NaN to a defined value
    if (scaled > 32767.0f) scaled = 32767.0f;
    const auto value = uint16_t(int16_t(scaled));
    out[2 * i] = char(value & 0xff);
    out[2 * i + 1] = char(value >> 8);
  }
  return out;
}

}  // namespace lipsync::audio
