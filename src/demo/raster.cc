#include "demo/raster.h"

#include <algorithm>
#include <cmath>

namespace lipsync::demo {
namespace {

uint8_t ToByte(float v) { return static_cast<uint8_t>(std::clamp(v, 0.f, 255.f) + 0.5f); }

uint64_t SplitMix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

float Smooth(float t) { return t * t * (3.f - 2.f * t); }

}  // namespace

Rgb Mix(Rgb a, Rgb b, float t) {
  return {a.r + (b.r - a.r) * t, a.g + (b.g - a.g) * t, a.b + (b.b - a.b) * t};
}

Rgb Scale(Rgb c, float factor) { return {c.r * factor, c.g * factor, c.b * factor}; }

void BlendPixel(image::Image& img, int x, int y, Rgb color, float alpha) {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height || alpha <= 0.f) return;
  alpha = std::min(alpha, 1.f);
  uint8_t* p = img.row(y) + size_t(x) * 3;
  p[0] = ToByte(p[0] + (color.r - p[0]) * alpha);
  p[1] = ToByte(p[1] + (color.g - p[1]) * alpha);
  p[2] = ToByte(p[2] + (color.b - p[2]) * alpha);
}

void FillEllipse(image::Image& img, float cx, float cy, float rx, float ry, Rgb color, float alpha,
                 float light, float clip_below_y) {
  if (rx <= 0 || ry <= 0) return;
  const int x0 = std::max(0, int(std::floor(cx - rx - 1)));
  const int x1 = std::min(img.width - 1, int(std::ceil(cx + rx + 1)));
  const int y0 = std::max(0, int(std::floor(cy - ry - 1)));
  const int y1 = std::min({img.height - 1, int(std::ceil(cy + ry + 1)), int(clip_below_y) - 1});
  const float edge_px = std::min(rx, ry);
  for (int y = y0; y <= y1; ++y) {
    const float ny = (y + 0.5f - cy) / ry;
    for (int x = x0; x <= x1; ++x) {
      const float nx = (x + 0.5f - cx) / rx;
      const float d = std::sqrt(nx * nx + ny * ny);
      const float coverage = std::clamp((1.f - d) * edge_px + 0.5f, 0.f, 1.f);
      if (coverage <= 0.f) continue;
      // Key light from the upper left; `light` sets how strong the modelling is.
      const float shade = 1.f + light * (-0.35f * nx - 0.25f * ny - 0.3f * d * d + 0.1f);
      BlendPixel(img, x, y, Scale(color, shade), alpha * coverage);
    }
  }
}

void FillRect(image::Image& img, float x0, float y0, float x1, float y1, Rgb color, float alpha) {
  const int ix0 = std::max(0, int(std::floor(x0)));
  const int ix1 = std::min(img.width - 1, int(std::ceil(x1)));
  const int iy0 = std::max(0, int(std::floor(y0)));
  const int iy1 = std::min(img.height - 1, int(std::ceil(y1)));
  for (int y = iy0; y <= iy1; ++y) {
    const float cy = std::clamp(std::min(y + 1.f, y1) - std::max(float(y), y0), 0.f, 1.f);
    for (int x = ix0; x <= ix1; ++x) {
      const float cx = std::clamp(std::min(x + 1.f, x1) - std::max(float(x), x0), 0.f, 1.f);
      BlendPixel(img, x, y, color, alpha * cx * cy);
    }
  }
}

void StrokeCurve(image::Image& img, float x0, float y0, float x1, float y1, float x2, float y2,
                 float thickness, Rgb color, float alpha) {
  // Flatten to short segments, then measure each pixel's distance to the polyline.
  constexpr int kSegments = 24;
  float px[kSegments + 1], py[kSegments + 1];
  for (int i = 0; i <= kSegments; ++i) {
    const float t = float(i) / kSegments, u = 1.f - t;
    px[i] = u * u * x0 + 2 * u * t * x1 + t * t * x2;
    py[i] = u * u * y0 + 2 * u * t * y1 + t * t * y2;
  }
  const float half = thickness / 2.f;
  const int bx0 = std::max(0, int(std::floor(std::min({x0, x1, x2}) - half - 1)));
  const int bx1 = std::min(img.width - 1, int(std::ceil(std::max({x0, x1, x2}) + half + 1)));
  const int by0 = std::max(0, int(std::floor(std::min({y0, y1, y2}) - half - 1)));
  const int by1 = std::min(img.height - 1, int(std::ceil(std::max({y0, y1, y2}) + half + 1)));
  for (int y = by0; y <= by1; ++y) {
    for (int x = bx0; x <= bx1; ++x) {
      const float qx = x + 0.5f, qy = y + 0.5f;
      float best = 1e30f;
      for (int i = 0; i < kSegments; ++i) {
        const float dx = px[i + 1] - px[i], dy = py[i + 1] - py[i];
        const float len2 = dx * dx + dy * dy;
        float t = len2 > 0 ? ((qx - px[i]) * dx + (qy - py[i]) * dy) / len2 : 0.f;
        t = std::clamp(t, 0.f, 1.f);
        const float ex = px[i] + t * dx - qx, ey = py[i] + t * dy - qy;
        best = std::min(best, ex * ex + ey * ey);
      }
      const float coverage = std::clamp(half - std::sqrt(best) + 0.5f, 0.f, 1.f);
      BlendPixel(img, x, y, color, alpha * coverage);
    }
  }
}

float Hash01(uint64_t seed, int64_t x, int64_t y) {
  const uint64_t h =
      SplitMix(seed ^ SplitMix(uint64_t(x) * 0x632BE59BD9B4E019ull ^ SplitMix(uint64_t(y))));
  return float(h >> 40) / float(1ull << 24);
}

float ValueNoise(uint64_t seed, float x, float y, float cell) {
  const float gx = x / cell, gy = y / cell;
  const float fx = std::floor(gx), fy = std::floor(gy);
  const int64_t ix = int64_t(fx), iy = int64_t(fy);
  const float tx = Smooth(gx - fx), ty = Smooth(gy - fy);
  const float a = Hash01(seed, ix, iy), b = Hash01(seed, ix + 1, iy);
  const float c = Hash01(seed, ix, iy + 1), d = Hash01(seed, ix + 1, iy + 1);
  return (a + (b - a) * tx) + ((c + (d - c) * tx) - (a + (b - a) * tx)) * ty;
}

}  // namespace lipsync::demo
