#include "compositing/visual_input.h"

#include <array>
#include <cstdio>
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
  Resize(crop, rect.width(), rect.height(), stride, face_.pixels.data(), kCropSize, kCropSize,
         face_.stride(), 3, Interpolation::kLinear, scratch_);

  const auto& unit = UnitScale();
  constexpr size_t plane = size_t(kFaceSize) * kFaceSize;
  for (int y = 0; y < kFaceSize; ++y) {
    const uint8_t* src = face_.row(y + kCropBorder) + kCropBorder * 3;
    bool masked_row = y >= kMaskY1 && y <= kMaskY2;
    size_t base = size_t(y) * kFaceSize;
    for (int x = 0; x < kFaceSize; ++x) {
      const uint8_t* px = src + x * 3;
      // Model channels are BGR; pixels are RGB.
      float b = unit[px[2]], g = unit[px[1]], r = unit[px[0]];
      size_t i = base + x;
      out[i] = b;
      out[plane + i] = g;
      out[2 * plane + i] = r;
      bool masked = masked_row && x >= kMaskX1 && x <= kMaskX2;
      out[3 * plane + i] = masked ? 0.f : b;
      out[4 * plane + i] = masked ? 0.f : g;
      out[5 * plane + i] = masked ? 0.f : r;
    }
  }
  return Status::Ok();
}

}  // namespace lipsync::compositing
