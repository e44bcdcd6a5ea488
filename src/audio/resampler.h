// Conversion of speech to the 16 kHz the mel spectrogram is defined at (libsoxr, high
// quality: 20-bit precision, linear phase, passband to 91.3% of Nyquist).
// Free functions; each call builds its own resampler, so any thread may call them.
#pragma once

#include <cstddef>
#include <vector>

#include "common/status.h"

namespace lipsync::audio {

inline constexpr int kModelSampleRate = 16000;
// Input rates accepted on the wire; each is a whole number of samples per 25 fps frame.
inline constexpr int kSupportedSampleRates[] = {8000, 16000, 22050, 24000, 44100, 48000};

// OK for a supported rate, else INVALID_ARGUMENT listing the supported ones.
Status CheckSupportedSampleRate(int sample_rate);

// Resamples `count` samples at `sample_rate` to 16 kHz. The output has exactly
// round(count * 16000 / sample_rate) samples and is time-aligned with the input (the
// filter delay is removed; the signal is taken as silent outside [0, count)).
// 16 kHz input is copied unchanged.
Expected<std::vector<float>> ResampleTo16k(const float* samples, size_t count, int sample_rate);

}  // namespace lipsync::audio
