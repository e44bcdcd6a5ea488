#include "compositing/paste_back.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

namespace lipsync::compositing {

void ModelOutputToRgb(const void* planar_bgr, OutputType type, uint8_t* rgb_out) {
  constexpr size_t plane = size_t(320) * 320;
  if (type == OutputType::kUint8) {
    const uint8_t* in = static_cast<const uint8_t*>(planar_bgr);
    for (size_t i = 0; i < plane; ++i) {
      rgb_out[i * 3 + 0] = in[2 * plane + i];
      rgb_out[i * 3 + 1] = in[plane + i];
      rgb_out[i * 3 + 2] = in[i];
    }
    return;
  }
  const float* in = static_cast<const float*>(planar_bgr);
  auto to_u8 = [](float v) -> uint8_t {
    float s = v * 255.f + 0.5f;
    if (!(s > 0.f)) return 0;  // also NaN
    if (s >= 255.f) return 255;
    return static_cast<uint8_t>(s);
  };
  for (size_t i = 0; i < plane; ++i) {
    rgb_out[i * 3 + 0] = to_u8(in[2 * plane + i]);
    rgb_out[i * 3 + 1] = to_u8(in[plane + i]);
    rgb_out[i * 3 + 2] = to_u8(in[i]);
  }
}

Status PasteBack::Paste(const uint8_t* face_rgb, config::PasteMode mode, int feather_px,
                        const avatar::CropRect& rect, uint8_t* frame, int width, int height,
                        size_t stride) {
  if (rect.x1 < 0 || rect.y1 < 0 || rect.x2 > width || rect.y2 > height || rect.x1 >= rect.x2 ||
      rect.y1 >= rect.y2) {
    char text[160];
    std::snprintf(text, sizeof(text),
                  "paste rect [%d, %d, %d, %d] is empty or outside the %dx%d frame", rect.x1,
                  rect.y1, rect.x2, rect.y2, width, height);
    return Status::InvalidArgument(text);
  }
  const int w = rect.width(), h = rect.height();
  if (patch_.width != w || patch_.height != h) patch_ = image::Image(w, h, 3);
  uint8_t* roi = frame + size_t(rect.y1) * stride + size_t(rect.x1) * 3;
  if (mode == config::PasteMode::kSynctalk328) {
    Resize(roi, w, h, stride, face328_.pixels.data(), 328, 328, face328_.stride(), 3,
           Interpolation::kLinear, scratch_);
    for (int y = 0; y < 320; ++y) {
      std::memcpy(face328_.row(y + 4) + 4 * 3, face_rgb + size_t(y) * 320 * 3, 320 * 3);
    }
    Resize(face328_.pixels.data(), 328, 328, face328_.stride(), patch_.pixels.data(), w, h,
           patch_.stride(), 3, Interpolation::kCubic, scratch_);
  } else {
    Resize(face_rgb, 320, 320, 320 * 3, patch_.pixels.data(), w, h, patch_.stride(), 3,
           Interpolation::kLinear, scratch_);
  }

  const int feather = std::max(0, std::min(feather_px, std::min(w, h) / 2));
  auto blend = [feather](uint8_t* dst, const uint8_t* src, int d) {
    // alpha = (d + 0.5) / feather, in 1/256 steps.
    int a = ((2 * d + 1) * 256 + feather) / (2 * feather);
    for (int c = 0; c < 3; ++c)
      dst[c] = static_cast<uint8_t>((src[c] * a + dst[c] * (256 - a) + 128) >> 8);
  };
  for (int y = 0; y < h; ++y) {
    uint8_t* dst = roi + size_t(y) * stride;
    const uint8_t* src = patch_.row(y);
    if (feather == 0) {
      std::memcpy(dst, src, size_t(w) * 3);
      continue;
    }
    int dy = std::min(y, h - 1 - y);
    if (dy < feather) {
      for (int x = 0; x < w; ++x) blend(dst + x * 3, src + x * 3, std::min({x, w - 1 - x, dy}));
      continue;
    }
    for (int x = 0; x < feather; ++x) {
      blend(dst + x * 3, src + x * 3, x);
      blend(dst + (w - 1 - x) * 3, src + (w - 1 - x) * 3, x);
    }
    std::memcpy(dst + feather * 3, src + feather * 3, size_t(w - 2 * feather) * 3);
  }
  return Status::Ok();
}

}  // namespace lipsync::compositing
