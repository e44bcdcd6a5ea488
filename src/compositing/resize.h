// Image resampling that reproduces OpenCV's cv2.resize for 8-bit images
// (INTER_LINEAR and INTER_CUBIC, fixed-point, 11-bit coefficients), so the visual
// input and the paste-back match the model's training pipeline (SyncTalk_2D).
// The vertical pass uses the arithmetic of OpenCV's SIMD kernels; against Debian's
// python3-opencv 4.6 the tests measure bit-exact output (tolerance kept at 1 level for
// other builds). Not reproduced: cv2's switch to INTER_AREA for exact 2x downscales
// with INTER_LINEAR.
//
// libyuv's bilinear (RGBScale kFilterBilinear) differs from cv2.resize(INTER_LINEAR)
// by up to 18 levels on upscales (about 60% of samples off by more than 1); measured
// in tests/compositing/resize_test.cc.
//
// Pure functions; thread-safe. Buffers are caller-owned, interleaved, any stride.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lipsync::compositing {

enum class Interpolation { kLinear, kCubic };

// Per-call scratch (reuse across calls to avoid allocation).
struct ResizeScratch {
  std::vector<int> x_offsets;
  std::vector<int16_t> x_coeffs;
  std::vector<int> taps;  // clamped byte offsets of each output column's taps
  std::vector<int> y_offsets;
  std::vector<int16_t> y_coeffs;
  std::vector<int> rows;  // horizontally resampled rows (fixed point)
};

// Resizes src (sw x sh, `channels` interleaved) to dst (dw x dh). All sizes >= 1.
void Resize(const uint8_t* src, int sw, int sh, size_t src_stride, uint8_t* dst, int dw, int dh,
            size_t dst_stride, int channels, Interpolation interpolation, ResizeScratch& scratch);

}  // namespace lipsync::compositing
