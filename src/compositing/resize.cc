#include "compositing/resize.h"

#include <algorithm>
#include <cmath>

namespace lipsync::compositing {

namespace {

constexpr int kCoefBits = 11;  // OpenCV INTER_RESIZE_COEF_BITS
constexpr float kCoefScale = 1 << kCoefBits;

int16_t ToCoef(float c) {
  // cv::saturate_cast<short>(float): round half to even.
  long v = std::lrint(c * kCoefScale);
  return static_cast<int16_t>(std::clamp<long>(v, -32768, 32767));
}

void CubicWeights(float x, float w[4]) {
  constexpr float A = -0.75f;
  w[0] = ((A * (x + 1) - 5 * A) * (x + 1) + 8 * A) * (x + 1) - 4 * A;
  w[1] = ((A + 2) * x - (A + 3)) * x * x + 1;
  w[2] = ((A + 2) * (1 - x) - (A + 3)) * (1 - x) * (1 - x) + 1;
  w[3] = 1.f - w[0] - w[1] - w[2];
}

// Source tap positions (first tap, clamped per tap by the caller) and fixed-point
// weights, as cv::resize computes them. `horizontal` applies OpenCV's edge fix for
// INTER_LINEAR, which it only does along x.
void BuildTable(int src, int dst, Interpolation interp, bool horizontal, std::vector<int>& ofs,
                std::vector<int16_t>& coef) {
  const int k = interp == Interpolation::kLinear ? 2 : 4;
  ofs.resize(dst);
  coef.resize(size_t(dst) * k);
  double scale = 1.0 / (static_cast<double>(dst) / src);
  for (int d = 0; d < dst; ++d) {
    float f = static_cast<float>((d + 0.5) * scale - 0.5);
    int s = static_cast<int>(std::floor(f));
    f -= static_cast<float>(s);
    float w[4];
    if (interp == Interpolation::kLinear) {
      if (horizontal && s < 0) s = 0, f = 0;
      if (horizontal && s >= src - 1) s = src - 1, f = 0;
      w[0] = 1.f - f;
      w[1] = f;
      ofs[d] = s;
    } else {
      CubicWeights(f, w);
      ofs[d] = s - 1;
    }
    for (int j = 0; j < k; ++j) coef[size_t(d) * k + j] = ToCoef(w[j]);
  }
}

uint8_t SaturateU8(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }

}  // namespace

void Resize(const uint8_t* src, int sw, int sh, size_t src_stride, uint8_t* dst, int dw, int dh,
            size_t dst_stride, int channels, Interpolation interpolation, ResizeScratch& s) {
  const int k = interpolation == Interpolation::kLinear ? 2 : 4;
  const int cn = channels;
  const int row_len = dw * cn;
  BuildTable(sw, dw, interpolation, /*horizontal=*/true, s.x_offsets, s.x_coeffs);
  BuildTable(sh, dh, interpolation, /*horizontal=*/false, s.y_offsets, s.y_coeffs);

  // Horizontal pass over every source row the vertical pass reads. Tap byte offsets
  // are clamped once here (OpenCV replicates the border pixel).
  int first_row = sh, last_row = -1;
  for (int d = 0; d < dh; ++d) {
    first_row = std::min(first_row, std::clamp(s.y_offsets[d], 0, sh - 1));
    last_row = std::max(last_row, std::clamp(s.y_offsets[d] + k - 1, 0, sh - 1));
  }
  s.taps.resize(size_t(dw) * k);
  for (int dx = 0; dx < dw; ++dx) {
    for (int j = 0; j < k; ++j)
      s.taps[size_t(dx) * k + j] = std::clamp(s.x_offsets[dx] + j, 0, sw - 1) * cn;
  }
  const int rows = last_row - first_row + 1;
  s.rows.resize(size_t(rows) * row_len);
  for (int r = 0; r < rows; ++r) {
    const uint8_t* in = src + size_t(first_row + r) * src_stride;
    int* out = s.rows.data() + size_t(r) * row_len;
    if (k == 2 && cn == 3) {
      for (int dx = 0; dx < dw; ++dx) {
        const int16_t* w = &s.x_coeffs[size_t(dx) * 2];
        const uint8_t* p0 = in + s.taps[size_t(dx) * 2];
        const uint8_t* p1 = in + s.taps[size_t(dx) * 2 + 1];
        out[dx * 3 + 0] = p0[0] * w[0] + p1[0] * w[1];
        out[dx * 3 + 1] = p0[1] * w[0] + p1[1] * w[1];
        out[dx * 3 + 2] = p0[2] * w[0] + p1[2] * w[1];
      }
    } else if (k == 4 && cn == 3) {
      for (int dx = 0; dx < dw; ++dx) {
        const int16_t* w = &s.x_coeffs[size_t(dx) * 4];
        const int* t = &s.taps[size_t(dx) * 4];
        const uint8_t *p0 = in + t[0], *p1 = in + t[1], *p2 = in + t[2], *p3 = in + t[3];
        for (int c = 0; c < 3; ++c) {
          out[dx * 3 + c] = p0[c] * w[0] + p1[c] * w[1] + p2[c] * w[2] + p3[c] * w[3];
        }
      }
    } else {
      for (int dx = 0; dx < dw; ++dx) {
        const int16_t* w = &s.x_coeffs[size_t(dx) * k];
        for (int c = 0; c < cn; ++c) {
          int acc = 0;
          for (int j = 0; j < k; ++j) acc += in[s.taps[size_t(dx) * k + j] + c] * w[j];
          out[dx * cn + c] = acc;
        }
      }
    }
  }

  // Vertical pass, with the arithmetic of OpenCV's SIMD kernels (which compute most
  // pixels): linear = 16-bit high multiplies, cubic = float with rounding.
  const float cubic_scale = 1.f / (kCoefScale * kCoefScale);
  for (int dy = 0; dy < dh; ++dy) {
    const int16_t* b = &s.y_coeffs[size_t(dy) * k];
    const int* r[4];
    for (int j = 0; j < k; ++j) {
      int sy = std::clamp(s.y_offsets[dy] + j, 0, sh - 1);
      r[j] = s.rows.data() + size_t(sy - first_row) * row_len;
    }
    uint8_t* out = dst + size_t(dy) * dst_stride;
    if (interpolation == Interpolation::kLinear) {
      for (int x = 0; x < row_len; ++x) {
        int v = (((r[0][x] >> 4) * b[0]) >> 16) + (((r[1][x] >> 4) * b[1]) >> 16);
        out[x] = SaturateU8((v + 2) >> 2);
      }
    } else {
      const float b0 = b[0] * cubic_scale, b1 = b[1] * cubic_scale, b2 = b[2] * cubic_scale,
                  b3 = b[3] * cubic_scale;
      for (int x = 0; x < row_len; ++x) {
        // OpenCV evaluates r0*b0 + (r1*b1 + (r2*b2 + r3*b3)) with fused multiply-adds;
        // plain float here (std::fma is a libm call without -mfma) differs in rare ties.
        float v = static_cast<float>(r[0][x]) * b0 +
                  (static_cast<float>(r[1][x]) * b1 +
                   (static_cast<float>(r[2][x]) * b2 + static_cast<float>(r[3][x]) * b3));
        out[x] = SaturateU8(static_cast<int>(std::nearbyint(v)));
      }
    }
  }
}

}  // namespace lipsync::compositing
