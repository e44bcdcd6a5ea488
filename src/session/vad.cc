#include "session/vad.h"

#include <algorithm>
#include <cmath>

namespace lipsync::session {

double FrameDbfs(const int16_t* samples, size_t count) {
  if (count == 0) return -200;
  double sum = 0;
  for (size_t i = 0; i < count; ++i) {
    const double x = samples[i] / 32768.0;
    sum += x * x;
  }
  const double rms = std::sqrt(sum / double(count));
  if (rms <= 1e-10) return -200;
  return 20 * std::log10(rms);
}

namespace {

bool Loud(const std::vector<bool>& loud, int64_t i) {
  return i >= 0 && i < int64_t(loud.size()) && loud[size_t(i)];
}

// Speech: loud, or a short gap with loud frames on both sides within `bridge`.
bool Speech(const std::vector<bool>& loud, int64_t i, int bridge) {
  if (Loud(loud, i)) return true;
  bool before = false, after = false;
  for (int d = 1; d <= bridge; ++d) {
    before = before || Loud(loud, i - d);
    after = after || Loud(loud, i + d);
  }
  return before && after;
}

}  // namespace

std::vector<float> GateWeights(const std::vector<bool>& loud, int64_t first, int count,
                               const GateOptions& options) {
  std::vector<float> weights(size_t(std::max(0, count)), 0.0f);
  const int fade = std::max(0, options.crossfade_frames);
  const int bridge = std::max(0, options.bridge_frames);
  for (int k = 0; k < count; ++k) {
    const int64_t i = first + k;
    if (Speech(loud, i, bridge)) {
      weights[size_t(k)] = 1.0f;
      continue;
    }
    for (int d = 1; d <= fade; ++d) {
      if (Speech(loud, i - d, bridge) || Speech(loud, i + d, bridge)) {
        weights[size_t(k)] = 1.0f - float(d) / float(fade + 1);
        break;
      }
    }
  }
  return weights;
}

}  // namespace lipsync::session
