#include "audio/mel_spectrogram.h"

#include <fftw3.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <string>

namespace lipsync::audio {
namespace {

constexpr int kBins = kFftSize / 2 + 1;
constexpr int kSampleRate = 16000;
constexpr double kMelMinHz = 55.0;
constexpr double kMelMaxHz = 7600.0;
constexpr double kPreemphasis = 0.97;
constexpr double kMinLevelDb = -100.0;
constexpr double kRefLevelDb = 20.0;
constexpr double kMaxAbsValue = 4.0;
constexpr double kMinAmplitude = 1e-5;  // 10^(kMinLevelDb / 20)

// Slaney's auditory scale (librosa htk=False): linear below 1 kHz, logarithmic above.
double HzToMel(double hz) {
  constexpr double kLinearStep = 200.0 / 3.0;
  constexpr double kLogStartHz = 1000.0;
  const double log_step = std::log(6.4) / 27.0;
  if (hz < kLogStartHz) return hz / kLinearStep;
  return kLogStartHz / kLinearStep + std::log(hz / kLogStartHz) / log_step;
}

double MelToHz(double mel) {
  constexpr double kLinearStep = 200.0 / 3.0;
  constexpr double kLogStartHz = 1000.0;
  constexpr double kLogStartMel = kLogStartHz / kLinearStep;
  const double log_step = std::log(6.4) / 27.0;
  if (mel < kLogStartMel) return mel * kLinearStep;
  return kLogStartHz * std::exp(log_step * (mel - kLogStartMel));
}

// librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600), Slaney-normalised
// triangles, stored sparsely: each band touches a few dozen of the 401 bins.
struct MelBand {
  int first_bin = 0;
  std::vector<double> weights;
};

std::vector<MelBand> BuildFilterbank() {
  std::vector<double> edges(kMelBands + 2);
  const double mel_lo = HzToMel(kMelMinHz);
  const double mel_hi = HzToMel(kMelMaxHz);
  for (int i = 0; i < kMelBands + 2; ++i) {
    edges[size_t(i)] = MelToHz(mel_lo + (mel_hi - mel_lo) * i / (kMelBands + 1));
  }
  std::vector<MelBand> bands(kMelBands);
  for (int b = 0; b < kMelBands; ++b) {
    const double left = edges[size_t(b)], centre = edges[size_t(b) + 1],
                 right = edges[size_t(b) + 2];
    const double norm = 2.0 / (right - left);
    MelBand& band = bands[size_t(b)];
    band.first_bin = -1;
    for (int k = 0; k < kBins; ++k) {
      const double hz = double(k) * kSampleRate / kFftSize;
      const double rising = (hz - left) / (centre - left);
      const double falling = (right - hz) / (right - centre);
      const double weight = std::max(0.0, std::min(rising, falling)) * norm;
      if (weight <= 0.0) {
        if (band.first_bin >= 0) break;
        continue;
      }
      if (band.first_bin < 0) band.first_bin = k;
      band.weights.push_back(weight);
    }
    if (band.first_bin < 0) band.first_bin = 0;
  }
  return bands;
}

// One r2c plan for every thread: FFTW's planner is not thread-safe, its execute is.
// Double precision: see src/audio/CMakeLists.txt.
class Stft {
 public:
  static const Stft& Get() {
    static std::once_flag once;
    static std::unique_ptr<Stft> instance;
    std::call_once(once, [] { instance.reset(new Stft()); });
    return *instance;
  }
  ~Stft() {
    if (plan_) fftw_destroy_plan(plan_);
  }

  // `in` (kFftSize doubles) and `out` (kBins complex) must come from fftw_malloc, so their
  // alignment matches the plan's and results do not depend on where a buffer happened to land.
  void Execute(double* in, fftw_complex* out) const { fftw_execute_dft_r2c(plan_, in, out); }
  const double* window() const { return window_.data(); }
  const std::vector<MelBand>& filterbank() const { return filterbank_; }

 private:
  Stft() : window_(kFftSize), filterbank_(BuildFilterbank()) {
    // Periodic Hann (scipy get_window('hann', 800, fftbins=True)).
    for (int n = 0; n < kFftSize; ++n) {
      window_[size_t(n)] = 0.5 - 0.5 * std::cos(2.0 * M_PI * n / kFftSize);
    }
    double* in = fftw_alloc_real(kFftSize);
    fftw_complex* out = fftw_alloc_complex(kBins);
    // ESTIMATE: the same algorithm in every process, so results are reproducible.
    plan_ = fftw_plan_dft_r2c_1d(kFftSize, in, out, FFTW_ESTIMATE);
    fftw_free(in);
    fftw_free(out);
  }

  fftw_plan plan_ = nullptr;
  std::vector<double> window_;
  std::vector<MelBand> filterbank_;
};

struct FftwFree {
  void operator()(void* p) const { fftw_free(p); }
};

// numpy.pad(mode='reflect') index: mirror about the first and last sample, repeating.
int64_t Reflect(int64_t index, int64_t length) {
  if (length == 1) return 0;
  const int64_t period = 2 * (length - 1);
  index %= period;
  if (index < 0) index += period;
  return index < length ? index : period - index;
}

std::string Range(int64_t lo, int64_t hi) {
  std::string text = "[";  // appended piecewise: GCC 12 misreports "[" + to_string (-Wrestrict)
  text.append(std::to_string(lo)).append(", ").append(std::to_string(hi)).append(")");
  return text;
}

}  // namespace

int64_t MelStepCount(int64_t utterance_samples) {
  return utterance_samples <= 0 ? 0 : 1 + utterance_samples / kHopSize;
}

Expected<std::vector<float>> MelSteps(const SignalSpan& span, int64_t first_step, int step_count) {
  if (step_count < 0 || first_step < 0) {
    return Status::InvalidArgument("mel steps from " + std::to_string(first_step) + " count " +
                                   std::to_string(step_count) + ": expected both >= 0");
  }
  const int64_t total = span.utterance_samples;
  if (total == 0) return Status::InvalidArgument("empty utterance: expected at least one sample");
  const int64_t span_lo = span.first_sample;
  const int64_t span_hi = span.first_sample + int64_t(span.count);
  if (total > 0 && (span_lo < 0 || span_hi > total)) {
    return Status::InvalidArgument("span " + Range(span_lo, span_hi) +
                                   " lies outside the utterance " + Range(0, total));
  }
  const Stft& stft = Stft::Get();
  std::unique_ptr<double, FftwFree> frame(fftw_alloc_real(kFftSize));
  std::unique_ptr<fftw_complex, FftwFree> spectrum(fftw_alloc_complex(kBins));
  std::vector<double> magnitude(kBins);
  std::vector<float> out(size_t(kMelBands) * size_t(step_count));
  const double* window = stft.window();
  const float* x = span.samples;

  for (int c = 0; c < step_count; ++c) {
    const int64_t t = first_step + c;
    const int64_t lo = t * kHopSize - kFftSize / 2;
    const int64_t hi = lo + kFftSize;
    // Samples this step reads: the pre-emphasis of sample n also reads n - 1.
    int64_t need_lo = std::max<int64_t>(lo - 1, 0);
    int64_t need_hi = total > 0 ? std::min(hi, total) : hi;
    // An unknown length means the utterance runs past the span, so only the start reflects.
    auto source_index = [total](int64_t a) -> int64_t {
      if (total > 0) return Reflect(a, total);
      return a < 0 ? -a : a;
    };
    const bool reflected = lo < 0 || (total > 0 && hi > total);
    if (reflected) {
      need_lo = std::numeric_limits<int64_t>::max();
      need_hi = 0;
      for (int64_t a = lo; a < hi; ++a) {
        const int64_t r = source_index(a);
        need_lo = std::min(need_lo, std::max<int64_t>(r - 1, 0));
        need_hi = std::max(need_hi, r + 1);
      }
    }
    if (need_lo < span_lo || need_hi > span_hi) {
      return Status::InvalidArgument("mel step " + std::to_string(t) + " needs samples " +
                                     Range(need_lo, need_hi) + " but the span holds " +
                                     Range(span_lo, span_hi));
    }
    auto preemphasised = [&](int64_t n) -> double {
      const size_t i = size_t(n - span_lo);
      return n == 0 ? double(x[i]) : double(x[i]) - kPreemphasis * double(x[i - 1]);
    };
    double* f = frame.get();
    if (!reflected) {
      for (int u = 0; u < kFftSize; ++u) f[u] = preemphasised(lo + u) * window[u];
    } else {
      for (int u = 0; u < kFftSize; ++u) f[u] = preemphasised(source_index(lo + u)) * window[u];
    }
    stft.Execute(f, spectrum.get());
    const fftw_complex* s = spectrum.get();
    for (int k = 0; k < kBins; ++k) {
      magnitude[size_t(k)] =
          std::sqrt(s[k][0] * s[k][0] + s[k][1] * s[k][1]);  // no overflow in double
    }
    const auto& bands = stft.filterbank();
    for (int b = 0; b < kMelBands; ++b) {
      const MelBand& band = bands[size_t(b)];
      double sum = 0.0;
      for (size_t k = 0; k < band.weights.size(); ++k) {
        sum += band.weights[k] * magnitude[size_t(band.first_bin) + k];
      }
      const double db = 20.0 * std::log10(std::max(kMinAmplitude, sum)) - kRefLevelDb;
      const double normalised =
          2.0 * kMaxAbsValue * ((db - kMinLevelDb) / -kMinLevelDb) - kMaxAbsValue;
      out[size_t(b) * size_t(step_count) + size_t(c)] =
          float(std::clamp(normalised, -kMaxAbsValue, kMaxAbsValue));
    }
  }
  return out;
}

Expected<std::vector<float>> MelSpectrogram(const float* samples, size_t count, int* num_steps) {
  if (count == 0) return Status::InvalidArgument("empty signal: expected at least one sample");
  const int64_t steps = MelStepCount(int64_t(count));
  if (steps > std::numeric_limits<int>::max()) {
    return Status::InvalidArgument("signal of " + std::to_string(count) +
                                   " samples is too long for one mel spectrogram");
  }
  SignalSpan span{samples, count, 0, int64_t(count)};
  LIPSYNC_ASSIGN_OR_RETURN(auto mel, MelSteps(span, 0, int(steps)));
  if (num_steps) *num_steps = int(steps);
  return mel;
}

}  // namespace lipsync::audio
