// Anti-aliased drawing of the few shapes the synthetic avatar is made of, straight into
// an RGB image::Image, plus a seeded value-noise source. Deterministic: the same calls
// give the same bytes on every machine (no std:: distributions, no platform RNG).
// Stateless free functions; safe to call from many threads on different images.
#pragma once

#include <cstdint>

#include "image/image.h"

namespace lipsync::demo {

struct Rgb {
  float r, g, b;
};

Rgb Mix(Rgb a, Rgb b, float t);
Rgb Scale(Rgb c, float factor);

// Blends `color` over the pixel with opacity alpha in [0,1]; out-of-image is a no-op.
void BlendPixel(image::Image& img, int x, int y, Rgb color, float alpha);

// Filled ellipse; `shade(nx, ny)` (nx, ny in [-1,1] across the ellipse) scales the colour
// so faces and bodies look lit rather than flat. Only rows y < clip_below_y are drawn.
void FillEllipse(image::Image& img, float cx, float cy, float rx, float ry, Rgb color,
                 float alpha = 1.f, float light = 0.f, float clip_below_y = 1e9f);
void FillRect(image::Image& img, float x0, float y0, float x1, float y1, Rgb color,
              float alpha = 1.f);
// A round-capped stroke along the quadratic Bezier p0 -> p2 bent towards p1.
void StrokeCurve(image::Image& img, float x0, float y0, float x1, float y1, float x2, float y2,
                 float thickness, Rgb color, float alpha = 1.f);

// Deterministic hash of integer coordinates -> [0,1).
float Hash01(uint64_t seed, int64_t x, int64_t y);
// Smooth value noise in [0,1) with lattice spacing `cell` pixels.
float ValueNoise(uint64_t seed, float x, float y, float cell);

}  // namespace lipsync::demo
