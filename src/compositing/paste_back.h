// Turning the model's output for one frame into pixels on its background.
//
// Model output: BGR planar [3][320][320], float32 in [0,1] (or uint8 0..255);
// converted to RGB with rounding (x * 255, round half away, clamped).
//
// Modes (REFERENCE.md "Paste-back"):
//  kSynctalk328: crop of the ORIGINAL frame resized to 328x328 (INTER_LINEAR), the
//    320 prediction written into [4:324, 4:324], the 328 image resized back to the
//    rect's (w, h) with INTER_CUBIC, pasted.
//  kResize: the 320 prediction resized straight to (w, h) (INTER_LINEAR), pasted.
// feather_px > 0 blends the patch's outer feather_px pixels with an alpha ramp
// (alpha = (d + 0.5) / feather_px at distance d from the patch edge) so no hard box
// edge is visible; 0 is a hard paste.
//
// PasteBack holds scratch buffers: one per thread (not thread-safe).
#pragma once

#include <cstdint>

#include "avatar/crop_rects.h"
#include "common/status.h"
#include "compositing/resize.h"
#include "config/config.h"
#include "image/image.h"

namespace lipsync::compositing {

enum class OutputType { kFloat32, kUint8 };

// Model output BGR planar 3x320x320 (float32 or uint8) -> packed RGB 320x320.
void ModelOutputToRgb(const void* planar_bgr, OutputType type, uint8_t* rgb_out);

class PasteBack {
 public:
  // Pastes `face_rgb` (packed RGB 320x320) into `frame` (RGB, width x height, stride)
  // at `rect`, given in the frame buffer's coordinates. For kSynctalk328, the rect's
  // pixels of `frame` must still be the original background.
  // INVALID_ARGUMENT if the rect is empty or outside the buffer.
  Status Paste(const uint8_t* face_rgb, config::PasteMode mode, int feather_px,
               const avatar::CropRect& rect, uint8_t* frame, int width, int height, size_t stride);

 private:
  image::Image face328_{328, 328, 3};
  image::Image patch_;
  ResizeScratch scratch_;
};

}  // namespace lipsync::compositing
