// Wav2Lip's mel spectrogram of 16 kHz speech, the input of the "ave" audio encoder:
// pre-emphasis 0.97, STFT (n_fft 800, hop 200, periodic Hann 800, centred with reflect
// padding of 400), magnitude, 80 Slaney mel bands 55..7600 Hz, 20*log10(max(1e-5, x)) - 20,
// symmetric normalisation to [-4, 4]. docs/AUDIO.md has the exact formula.
// Thread-safe: the FFTW plan and the filterbank are built once (under a lock) and shared
// read-only. Results are owned by the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/status.h"

namespace lipsync::audio {

inline constexpr int kMelBands = 80;
inline constexpr int kFftSize = 800;
inline constexpr int kHopSize = 200;

// A stretch of a 16 kHz utterance: samples[i] is utterance sample `first_sample + i`.
// Mel steps can be computed from a stretch alone when it holds every sample they reach,
// which is how a batch computes the same values as the whole utterance.
struct SignalSpan {
  const float* samples = nullptr;
  size_t count = 0;
  int64_t first_sample = 0;
  // Length of the whole utterance in samples, or -1 when its end lies beyond this span
  // (the span then must not reach the end: nothing is reflected there).
  int64_t utterance_samples = -1;
};

// Mel steps of an utterance of `utterance_samples` samples (centred STFT): 1 + n / 200.
int64_t MelStepCount(int64_t utterance_samples);

// Mel steps [first_step, first_step + step_count) of the utterance, as [80, step_count]
// row-major. Step t reads the pre-emphasised samples [200t - 400, 200t + 400), reflected
// at the utterance's edges, so it needs samples [200t - 401, 200t + 400) (clipped to the
// utterance) inside the span; INVALID_ARGUMENT naming both ranges otherwise.
Expected<std::vector<float>> MelSteps(const SignalSpan& span, int64_t first_step, int step_count);

// The whole signal at once, as Wav2Lip's audio.melspectrogram: [80, T] row-major with
// T = MelStepCount(count), stored in *num_steps. INVALID_ARGUMENT for an empty signal.
Expected<std::vector<float>> MelSpectrogram(const float* samples, size_t count, int* num_steps);

}  // namespace lipsync::audio
