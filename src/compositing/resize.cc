#include "compositing/resize.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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
// weights of destination positions [first, first + count), as cv::resize computes them.
// `horizontal` applies OpenCV's edge fix for INTER_LINEAR, which it only does along x.
void BuildTable(int src, int dst, int first, int count, Interpolation interp, bool horizontal,
                std::vector<int>& ofs, std::vector<int16_t>& coef) {
  const int k = interp == Interpolation::kLinear ? 2 : 4;
  ofs.resize(count);
  coef.resize(size_t(count) * k);
  double scale = 1.0 / (static_cast<double>(dst) / src);
  for (int i = 0; i < count; ++i) {
    const int d = first + i;
    float f = static_cast<float>((d + 0.5) * scale - 0.5);
    int s = static_cast<int>(std::floor(f));
    f -= static_cast<float>(s);
    float w[4];
    if (interp == Interpolation::kLinear) {
      if (horizontal && s < 0) s = 0, f = 0;
      if (horizontal && s >= src - 1) s = src - 1, f = 0;
      w[0] = 1.f - f;
      w[1] = f;
      ofs[i] = s;
    } else {
      CubicWeights(f, w);
      ofs[i] = s - 1;
    }
    for (int j = 0; j < k; ++j) coef[size_t(i) * k + j] = ToCoef(w[j]);
  }
}

uint8_t SaturateU8(int v) { return static_cast<uint8_t>(std::clamp(v, 0, 255)); }

int32_t PackPair(int16_t lo, int16_t hi) {
  return static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint16_t>(lo)) |
                              (static_cast<uint32_t>(static_cast<uint16_t>(hi)) << 16));
}

// One source row, 3 channels, into fixed-point sums for output columns [0, ow).
// Columns from `vector_end` on have a tap on the row's last pixel, where a 4-byte load
// would read past the row: they take the scalar path.
void HorizontalRgb(const uint8_t* in, int k, int ow, int vector_end, const ResizeScratch& s,
                   int* out) {
  int dx = 0;
#if defined(__SSE2__)
  const __m128i zero = _mm_setzero_si128();
  auto load = [](const uint8_t* p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return _mm_cvtsi32_si128(v);
  };
  // Interleave two pixels' bytes (R0 R1 G0 G1 B0 B1 ..) as 16-bit lanes, so one
  // multiply-add gives c0*w0 + c1*w1 per channel.
  auto pair = [&](const uint8_t* a, const uint8_t* b) {
    return _mm_unpacklo_epi8(_mm_unpacklo_epi8(load(a), load(b)), zero);
  };
  if (k == 2) {
    for (; dx < vector_end; ++dx) {
      const int* t = &s.taps[size_t(dx) * 2];
      __m128i v = _mm_madd_epi16(pair(in + t[0], in + t[1]), _mm_set1_epi32(s.x_pairs[dx]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + dx * 3), v);
    }
  } else {
    for (; dx < vector_end; ++dx) {
      const int* t = &s.taps[size_t(dx) * 4];
      __m128i v0 =
          _mm_madd_epi16(pair(in + t[0], in + t[1]), _mm_set1_epi32(s.x_pairs[size_t(dx) * 2]));
      __m128i v1 =
          _mm_madd_epi16(pair(in + t[2], in + t[3]), _mm_set1_epi32(s.x_pairs[size_t(dx) * 2 + 1]));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + dx * 3), _mm_add_epi32(v0, v1));
    }
  }
#else
  (void)vector_end;
#endif
  for (; dx < ow; ++dx) {
    const int16_t* w = &s.x_coeffs[size_t(dx) * k];
    const int* t = &s.taps[size_t(dx) * k];
    for (int c = 0; c < 3; ++c) {
      int acc = 0;
      for (int j = 0; j < k; ++j) acc += in[t[j] + c] * w[j];
      out[dx * 3 + c] = acc;
    }
  }
}

// OpenCV's linear vertical kernel: 16-bit high multiplies of (row >> 4) by the weights.
void VerticalLinear(const int* r0, const int* r1, int16_t b0, int16_t b1, int len, uint8_t* out) {
  int x = 0;
#if defined(__SSE2__)
  const __m128i w0 = _mm_set1_epi16(b0), w1 = _mm_set1_epi16(b1), two = _mm_set1_epi16(2);
  auto load16 = [](const int* r) {
    __m128i a = _mm_srai_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r)), 4);
    __m128i b = _mm_srai_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + 4)), 4);
    return _mm_packs_epi32(a, b);
  };
  for (; x + 16 <= len; x += 16) {
    __m128i lo =
        _mm_add_epi16(_mm_mulhi_epi16(load16(r0 + x), w0), _mm_mulhi_epi16(load16(r1 + x), w1));
    __m128i hi = _mm_add_epi16(_mm_mulhi_epi16(load16(r0 + x + 8), w0),
                               _mm_mulhi_epi16(load16(r1 + x + 8), w1));
    lo = _mm_srai_epi16(_mm_add_epi16(lo, two), 2);
    hi = _mm_srai_epi16(_mm_add_epi16(hi, two), 2);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x), _mm_packus_epi16(lo, hi));
  }
#endif
  for (; x < len; ++x) {
    int v = (((r0[x] >> 4) * b0) >> 16) + (((r1[x] >> 4) * b1) >> 16);
    out[x] = SaturateU8((v + 2) >> 2);
  }
}

// OpenCV's cubic vertical kernel: float, r0*b0 + (r1*b1 + (r2*b2 + r3*b3)), rounded to
// nearest even.
void VerticalCubic(const int* const r[4], const int16_t* b, int len, uint8_t* out) {
  const float scale = 1.f / (kCoefScale * kCoefScale);
  const float b0 = b[0] * scale, b1 = b[1] * scale, b2 = b[2] * scale, b3 = b[3] * scale;
  int x = 0;
#if defined(__SSE2__)
  const __m128 w0 = _mm_set1_ps(b0), w1 = _mm_set1_ps(b1), w2 = _mm_set1_ps(b2),
               w3 = _mm_set1_ps(b3);
  auto sum4 = [&](int i) {
    auto f = [&](int j) {
      return _mm_cvtepi32_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r[j] + i)));
    };
    __m128 t = _mm_add_ps(_mm_mul_ps(f(2), w2), _mm_mul_ps(f(3), w3));
    t = _mm_add_ps(_mm_mul_ps(f(1), w1), t);
    return _mm_cvtps_epi32(_mm_add_ps(_mm_mul_ps(f(0), w0), t));
  };
  for (; x + 16 <= len; x += 16) {
    __m128i lo = _mm_packs_epi32(sum4(x), sum4(x + 4));
    __m128i hi = _mm_packs_epi32(sum4(x + 8), sum4(x + 12));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + x), _mm_packus_epi16(lo, hi));
  }
#endif
  for (; x < len; ++x) {
    float v = static_cast<float>(r[0][x]) * b0 +
              (static_cast<float>(r[1][x]) * b1 +
               (static_cast<float>(r[2][x]) * b2 + static_cast<float>(r[3][x]) * b3));
    out[x] = SaturateU8(static_cast<int>(std::nearbyint(v)));
  }
}

}  // namespace

void Resize(const uint8_t* src, int sw, int sh, size_t src_stride, uint8_t* dst, int dw, int dh,
            size_t dst_stride, int channels, Interpolation interpolation, ResizeScratch& s) {
  ResizeWindow(src, sw, sh, src_stride, dw, dh, {0, 0, dw, dh}, dst, dst_stride, channels,
               interpolation, s);
}

void ResizeWindow(const uint8_t* src, int sw, int sh, size_t src_stride, int dw, int dh,
                  const OutputWindow& win, uint8_t* dst, size_t dst_stride, int channels,
                  Interpolation interpolation, ResizeScratch& s) {
  const int k = interpolation == Interpolation::kLinear ? 2 : 4;
  const int cn = channels;
  const int ow = win.width, oh = win.height;
  if (ow <= 0 || oh <= 0) return;
  const int row_len = ow * cn;
  BuildTable(sw, dw, win.x, ow, interpolation, /*horizontal=*/true, s.x_offsets, s.x_coeffs);
  BuildTable(sh, dh, win.y, oh, interpolation, /*horizontal=*/false, s.y_offsets, s.y_coeffs);

  // Tap byte offsets are clamped once here (OpenCV replicates the border pixel).
  s.taps.resize(size_t(ow) * k);
  s.x_pairs.resize(size_t(ow) * k / 2);
  int vector_end = ow;
  for (int dx = 0; dx < ow; ++dx) {
    for (int j = 0; j < k; ++j) {
      const int px = std::clamp(s.x_offsets[dx] + j, 0, sw - 1);
      s.taps[size_t(dx) * k + j] = px * cn;
      if (px == sw - 1) vector_end = std::min(vector_end, dx);
    }
    for (int j = 0; j < k; j += 2) {
      s.x_pairs[(size_t(dx) * k + j) / 2] =
          PackPair(s.x_coeffs[size_t(dx) * k + j], s.x_coeffs[size_t(dx) * k + j + 1]);
    }
  }
  // The horizontally resampled rows live in a ring of k slots (slot = source row mod k),
  // filled as the vertical pass first needs them: the rows of one output row are k
  // consecutive (clamped) source rows, so they never share a slot, and output rows
  // need non-decreasing source rows, so each source row is resampled once. The ring
  // stays in L1 instead of a whole resampled image going through memory.
  // +1 sample per slot: the SIMD path stores 4 lanes for a 3-channel pixel, and that
  // spare lane must not land on the next slot's row.
  const size_t slot_len = size_t(row_len) + 1;
  s.rows.resize(size_t(k) * slot_len);
  int slot_row[4] = {-1, -1, -1, -1};
  auto resampled = [&](int sy) -> const int* {
    const int slot = sy % k;
    int* out = s.rows.data() + size_t(slot) * slot_len;
    if (slot_row[slot] == sy) return out;
    slot_row[slot] = sy;
    const uint8_t* in = src + size_t(sy) * src_stride;
    if (cn == 3) {
      HorizontalRgb(in, k, ow, vector_end, s, out);
      return out;
    }
    for (int dx = 0; dx < ow; ++dx) {
      const int16_t* w = &s.x_coeffs[size_t(dx) * k];
      for (int c = 0; c < cn; ++c) {
        int acc = 0;
        for (int j = 0; j < k; ++j) acc += in[s.taps[size_t(dx) * k + j] + c] * w[j];
        out[dx * cn + c] = acc;
      }
    }
    return out;
  };

  for (int dy = 0; dy < oh; ++dy) {
    const int16_t* b = &s.y_coeffs[size_t(dy) * k];
    const int* r[4];
    for (int j = 0; j < k; ++j) r[j] = resampled(std::clamp(s.y_offsets[dy] + j, 0, sh - 1));
    uint8_t* out = dst + size_t(dy) * dst_stride;
    if (interpolation == Interpolation::kLinear) {
      VerticalLinear(r[0], r[1], b[0], b[1], row_len, out);
    } else {
      VerticalCubic(r, b, row_len, out);
    }
  }
}

}  // namespace lipsync::compositing
