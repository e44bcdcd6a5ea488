#include "compositing/paste_back.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace lipsync::compositing {

namespace {

constexpr size_t kPlane = size_t(320) * 320;

void InterleaveBgrPlanes(const uint8_t* b, const uint8_t* g, const uint8_t* r, size_t n,
                         uint8_t* rgb_out) {
  for (size_t i = 0; i < n; ++i) {
    rgb_out[i * 3 + 0] = r[i];
    rgb_out[i * 3 + 1] = g[i];
    rgb_out[i * 3 + 2] = b[i];
  }
}

// x * 255 + 0.5 truncated, clamped to 0..255, NaN -> 0, over n samples.
void FloatPlaneToU8(const float* in, size_t n, uint8_t* out) {
  size_t i = 0;
#if defined(__SSE2__)
  const __m128 scale = _mm_set1_ps(255.f), half = _mm_set1_ps(0.5f), zero = _mm_setzero_ps(),
               top = _mm_set1_ps(255.f);
  auto conv = [&](size_t at) {
    __m128 s = _mm_add_ps(_mm_mul_ps(_mm_loadu_ps(in + at), scale), half);
    // max(s, 0) returns 0 for NaN (second operand), like !(s > 0) below.
    return _mm_cvttps_epi32(_mm_min_ps(_mm_max_ps(s, zero), top));
  };
  for (; i + 16 <= n; i += 16) {
    __m128i lo = _mm_packs_epi32(conv(i), conv(i + 4));
    __m128i hi = _mm_packs_epi32(conv(i + 8), conv(i + 12));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi16(lo, hi));
  }
#endif
  for (; i < n; ++i) {
    float s = in[i] * 255.f + 0.5f;
    out[i] = !(s > 0.f) ? 0 : s >= 255.f ? 255 : static_cast<uint8_t>(s);
  }
}

}  // namespace

void ModelOutputToRgb(const void* planar_bgr, OutputType type, uint8_t* rgb_out) {
  if (type == OutputType::kUint8) {
    const uint8_t* in = static_cast<const uint8_t*>(planar_bgr);
    InterleaveBgrPlanes(in, in + kPlane, in + 2 * kPlane, kPlane, rgb_out);
    return;
  }
  // In blocks that stay in L1: planes -> uint8 planes -> interleaved.
  const float* in = static_cast<const float*>(planar_bgr);
  constexpr size_t kBlock = 1024;
  alignas(16) uint8_t planes[3][kBlock];
  for (size_t at = 0; at < kPlane; at += kBlock) {
    const size_t n = std::min(kBlock, kPlane - at);
    for (int c = 0; c < 3; ++c) FloatPlaneToU8(in + c * kPlane + at, n, planes[c]);
    InterleaveBgrPlanes(planes[0], planes[1], planes[2], n, rgb_out + at * 3);
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
    // Only the 4-px border of the crop's 328 resize survives: the prediction covers the
    // centre, so the centre is never computed.
    constexpr int kIn = 4, kOut = 324, kSide = 328;
    const OutputWindow border[] = {{0, 0, kSide, kIn},
                                   {0, kOut, kSide, kSide - kOut},
                                   {0, kIn, kIn, kOut - kIn},
                                   {kOut, kIn, kSide - kOut, kOut - kIn}};
    for (const OutputWindow& win : border) {
      ResizeWindow(roi, w, h, stride, kSide, kSide, win, face328_.row(win.y) + size_t(win.x) * 3,
                   face328_.stride(), 3, Interpolation::kLinear, scratch_);
    }
    for (int y = 0; y < 320; ++y) {
      std::memcpy(face328_.row(y + kIn) + kIn * 3, face_rgb + size_t(y) * 320 * 3, 320 * 3);
    }
    Resize(face328_.pixels.data(), kSide, kSide, face328_.stride(), patch_.pixels.data(), w, h,
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
