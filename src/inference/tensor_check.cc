#include "inference/tensor_check.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

namespace lipsync::inference {
namespace {

constexpr uint32_t kExponent = 0x7f800000u;
constexpr uint32_t kMantissa = 0x007fffffu;

// Bit 31 of the result is set when any of the `n` values has an all-ones exponent
// (NaN or infinity): (w & exponent) + 2^23 carries into bit 31 exactly then.
uint32_t NonFiniteBits(const char* data, size_t n) {
  uint32_t acc = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t w;
    std::memcpy(&w, data + i * sizeof w, sizeof w);
    acc |= (w & kExponent) + 0x00800000u;
  }
  return acc & 0x80000000u;
}

}  // namespace

std::optional<NonFinite> FindNonFinite(std::string_view bytes, size_t floats_per_frame) {
  const size_t values = bytes.size() / sizeof(float);
  if (floats_per_frame == 0) floats_per_frame = std::max<size_t>(values, 1);
  for (size_t start = 0, frame = 0; start < values; start += floats_per_frame, ++frame) {
    const size_t n = std::min(floats_per_frame, values - start);
    const char* data = bytes.data() + start * sizeof(float);
    if (NonFiniteBits(data, n) == 0) continue;
    for (size_t i = 0; i < n; ++i) {  // the slow path: only for a frame that has one
      uint32_t w;
      std::memcpy(&w, data + i * sizeof w, sizeof w);
      if ((w & kExponent) == kExponent) return NonFinite{frame, i, (w & kMantissa) != 0};
    }
  }
  return std::nullopt;
}

Status CheckFinite(std::string_view bytes, size_t floats_per_frame, const char* tensor,
                   bool shared_tensor) {
  const std::optional<NonFinite> bad = FindNonFinite(bytes, floats_per_frame);
  if (!bad) return Status::Ok();
  const std::string what = bad->nan ? "a NaN" : "an infinity";
  const std::string where = shared_tensor ? "(the one tensor used for every frame, frame 0)"
                                          : "frame " + std::to_string(bad->frame);
  return Status::InvalidArgument(std::string(tensor) + " " + where + " holds " + what + " (value " +
                                 std::to_string(bad->value) +
                                 " of the frame); expected finite float32 values");
}

}  // namespace lipsync::inference
