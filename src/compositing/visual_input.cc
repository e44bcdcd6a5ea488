#include "compositing/visual_input.h"

#include <cstdio>
#include <cstring>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace lipsync::compositing {

namespace {

// One row of one channel: numpy's uint8 -> float32 / 255.0 (a division, exactly, not a
// multiplication) into `visible`, and into `masked` the same with columns
// kMaskX1..kMaskX2 zeroed when `masked_row`.
void ToUnitFloats(const uint8_t* in, bool masked_row, float* visible, float* masked) {
  int x = 0;
#if defined(__SSE2__)
  const __m128 divisor = _mm_set1_ps(255.f);
  const __m128i zero = _mm_setzero_si128();
  for (; x + 16 <= kFaceSize; x += 16) {
    const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + x));
    const __m128i lo = _mm_unpacklo_epi8(bytes, zero), hi = _mm_unpackhi_epi8(bytes, zero);
    const __m128i words[4] = {_mm_unpacklo_epi16(lo, zero), _mm_unpackhi_epi16(lo, zero),
                              _mm_unpacklo_epi16(hi, zero), _mm_unpackhi_epi16(hi, zero)};
    for (int q = 0; q < 4; ++q) {
      const int at = x + 4 * q;
      const __m128 v = _mm_div_ps(_mm_cvtepi32_ps(words[q]), divisor);
      _mm_storeu_ps(visible + at, v);
      if (!masked_row || at + 3 < kMaskX1 || at > kMaskX2) {
        _mm_storeu_ps(masked + at, v);
      } else if (at >= kMaskX1 && at + 3 <= kMaskX2) {
        _mm_storeu_ps(masked + at, _mm_setzero_ps());
      } else {
        for (int i = 0; i < 4; ++i) {
          masked[at + i] = (at + i >= kMaskX1 && at + i <= kMaskX2) ? 0.f : visible[at + i];
        }
      }
    }
  }
#endif
  for (; x < kFaceSize; ++x) {
    const float v = static_cast<float>(in[x]) / 255.0f;
    visible[x] = v;
    masked[x] = (masked_row && x >= kMaskX1 && x <= kMaskX2) ? 0.f : v;
  }
}

std::string RectText(const avatar::CropRect& r) {
  char text[96];
  std::snprintf(text, sizeof(text), "[%d, %d, %d, %d]", r.x1, r.y1, r.x2, r.y2);
  return text;
}

}  // namespace

Status VisualInputBuilder::ResizeRoi(const avatar::BackgroundFrame& frame,
                                     const avatar::CropRect& rect) {
  if (!avatar::Covers(frame.pixels_rect, rect)) {
    return Status::InvalidArgument(
        "crop rect " + RectText(rect) + " is not inside the background pixels held (" +
        std::to_string(frame.pixels_rect.width) + "x" + std::to_string(frame.pixels_rect.height) +
        " at " + std::to_string(frame.pixels_rect.x) + "," + std::to_string(frame.pixels_rect.y) +
        ")");
  }
  avatar::CropRect local{rect.x1 - frame.pixels_rect.x, rect.y1 - frame.pixels_rect.y,
                         rect.x2 - frame.pixels_rect.x, rect.y2 - frame.pixels_rect.y};
  return ResizeRoi(frame.pixels.pixels.data(), frame.pixels.width, frame.pixels.height,
                   frame.pixels.stride(), local);
}

Status VisualInputBuilder::ResizeRoi(const uint8_t* rgb, int width, int height, size_t stride,
                                     const avatar::CropRect& rect) {
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
  return Status::Ok();
}

Status VisualInputBuilder::Build(const avatar::BackgroundFrame& frame, const avatar::CropRect& rect,
                                 float* out) {
  LIPSYNC_RETURN_IF_ERROR(ResizeRoi(frame, rect));
  WriteFloats(out);
  return Status::Ok();
}

Status VisualInputBuilder::Build(const uint8_t* rgb, int width, int height, size_t stride,
                                 const avatar::CropRect& rect, float* out) {
  LIPSYNC_RETURN_IF_ERROR(ResizeRoi(rgb, width, height, stride, rect));
  WriteFloats(out);
  return Status::Ok();
}

Status VisualInputBuilder::BuildU8(const avatar::BackgroundFrame& frame,
                                   const avatar::CropRect& rect, uint8_t* out) {
  LIPSYNC_RETURN_IF_ERROR(ResizeRoi(frame, rect));
  constexpr size_t plane = size_t(kFaceSize) * kFaceSize;
  for (int y = 0; y < kFaceSize; ++y) {
    const uint8_t* src = roi_.row(y);
    const size_t base = size_t(y) * kFaceSize;
    uint8_t* b = out + base;
    uint8_t* g = out + plane + base;
    uint8_t* r = out + 2 * plane + base;
    for (int x = 0; x < kFaceSize; ++x) {  // model channels are BGR; pixels are RGB
      b[x] = src[x * 3 + 2];
      g[x] = src[x * 3 + 1];
      r[x] = src[x * 3];
    }
    const bool masked_row = y >= kMaskY1 && y <= kMaskY2;
    for (int c = 0; c < 3; ++c) {
      const uint8_t* from = out + c * plane + base;
      uint8_t* to = out + (3 + c) * plane + base;
      std::memcpy(to, from, kFaceSize);
      if (masked_row) std::memset(to + kMaskX1, 0, kMaskX2 - kMaskX1 + 1);
    }
  }
  return Status::Ok();
}

void VisualInputBuilder::WriteFloats(float* out) const {
  constexpr size_t plane = size_t(kFaceSize) * kFaceSize;
  alignas(16) uint8_t channel[3][kFaceSize];  // one row deinterleaved, BGR
  for (int y = 0; y < kFaceSize; ++y) {
    const uint8_t* src = roi_.row(y);
    for (int x = 0; x < kFaceSize; ++x) {  // model channels are BGR; pixels are RGB
      channel[0][x] = src[x * 3 + 2];
      channel[1][x] = src[x * 3 + 1];
      channel[2][x] = src[x * 3];
    }
    const size_t base = size_t(y) * kFaceSize;
    const bool masked_row = y >= kMaskY1 && y <= kMaskY2;
    for (int c = 0; c < 3; ++c) {
      ToUnitFloats(channel[c], masked_row, out + c * plane + base, out + (3 + c) * plane + base);
    }
  }
}

}  // namespace lipsync::compositing
