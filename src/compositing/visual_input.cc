#include "compositing/visual_input.h"

#include <array>
#include <cstdio>
#include <cstring>
#include <string>

namespace lipsync::compositing {

namespace {

// Exactly numpy's uint8 -> float32 / 255.0 (a division, not a multiplication).
const std::array<float, 256>& UnitScale() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; ++i) t[i] = static_cast<float>(i) / 255.0f;
    return t;
  }();
  return table;
}

std::string RectText(const avatar::CropRect& r) {
  char text[96];
  std::snprintf(text, sizeof(text), "[%d, %d, %d, %d]", r.x1, r.y1, r.x2, r.y2);
  return text;
}

}  // namespace

Status VisualInputBuilder::Build(const avatar::BackgroundFrame& frame, const avatar::CropRect& rect,
                                 float* out) {
  if (!avatar::Covers(frame.pixels_rect, rect)) {
    return Status::InvalidArgument(
        "crop rect " + RectText(rect) + " is not inside the background pixels held (" +
        std::to_string(frame.pixels_rect.width) + "x" + std::to_string(frame.pixels_rect.height) +
        " at " + std::to_string(frame.pixels_rect.x) + "," + std::to_string(frame.pixels_rect.y) +
        ")");
  }
  avatar::CropRect local{rect.x1 - frame.pixels_rect.x, rect.y1 - frame.pixels_rect.y,
                         rect.x2 - frame.pixels_rect.x, rect.y2 - frame.pixels_rect.y};
  return Build(frame.pixels.pixels.data(), frame.pixels.width, frame.pixels.height,
               frame.pixels.stride(), local, out);
}

Status VisualInputBuilder::Build(const uint8_t* rgb, int width, int height, size_t stride,
                                 const avatar::CropRect& rect, float* out) {
  if (rect.x1 < 0 || rect.y1 < 0 || rect.x2 > width || rect.y2 > height || rect.x1 >= rect.x2 ||
      rect.y1 >= rect.y2) {
    return Status::InvalidArgument("crop rect " + RectText(rect) + " is empty or outside the " +
                                   std::to_string(width) + "x" + std::to_string(height) +
                                   " frame; expected x1 < x2 <= width, y1 < y2 <= height");
  }
  const uint8_t* crop = rgb + size_t(rect.y1) * stride + size_t(rect.x1) * 3;
  ResizeWindow(crop, rect.width(), rect.height(), stride, kCropSize, kCropSize,
               {kCropBorder, kCropBorder, kFaceSize, kFaceSize}, roi_.pixels.data(), roi_.stride(),
               3, Interpolation::kLinear, scratch_);

  const auto& unit = UnitScale();
  constexpr size_t plane = size_t(kFaceSize) * kFaceSize;
  for (int y = 0; y < kFaceSize; ++y) {
    const uint8_t* src = roi_.row(y);
    const size_t base = size_t(y) * kFaceSize;
    float* b = out + base;
    float* g = out + plane + base;
    float* r = out + 2 * plane + base;
    // Model channels are BGR; pixels are RGB.
    for (int x = 0; x < kFaceSize; ++x) {
      b[x] = unit[src[x * 3 + 2]];
      g[x] = unit[src[x * 3 + 1]];
      r[x] = unit[src[x * 3]];
    }
    // Channels 3-5: the same rows with the mask rectangle zeroed.
    const bool masked_row = y >= kMaskY1 && y <= kMaskY2;
    for (int c = 0; c < 3; ++c) {
      const float* from = out + c * plane + base;
      float* to = out + (3 + c) * plane + base;
      if (!masked_row) {
        std::memcpy(to, from, kFaceSize * sizeof(float));
        continue;
      }
      std::memcpy(to, from, kMaskX1 * sizeof(float));
      std::memset(to + kMaskX1, 0, (kMaskX2 - kMaskX1 + 1) * sizeof(float));
      std::memcpy(to + kMaskX2 + 1, from + kMaskX2 + 1, (kFaceSize - kMaskX2 - 1) * sizeof(float));
    }
  }
  return Status::Ok();
}

}  // namespace lipsync::compositing
