// The model's visual input for one frame (SyncTalk_2D "unet_328"), built from a
// background frame and its crop rect:
//   crop = frame[y1:y2, x1:x2]; face = cv2.resize(crop, (328, 328))  (INTER_LINEAR)
//   roi = face[4:324, 4:324]                        -> channels 0-2, BGR, / 255
//   roi with cv2.rectangle((5,5), (310,305), 0, -1)  -> channels 3-5 (x 5..310 and
//                                                       y 5..305 inclusive zeroed)
// Output layout: float32 [6][320][320] planar.
//
// Only the 320x320 centre of the 328 resize is computed (ResizeWindow); the synctalk328
// paste-back computes the 4-px border it needs itself, so per frame the crop is resized
// to 328 once in total, split between the two.
//
// VisualInputBuilder holds scratch buffers: one per thread (not thread-safe);
// writes only into caller memory, no allocation per frame after the first.
#pragma once

#include <cstdint>

#include "avatar/avatar.h"
#include "common/status.h"
#include "compositing/resize.h"
#include "image/image.h"

namespace lipsync::compositing {

inline constexpr int kFaceSize = 320;  // model input/output side
inline constexpr int kCropSize = 328;  // crop is resized to this, then centre-cut
inline constexpr int kCropBorder = 4;  // (328 - 320) / 2
inline constexpr int kMaskX1 = 5, kMaskY1 = 5, kMaskX2 = 310, kMaskY2 = 305;  // inclusive
inline constexpr size_t kVisualInputFloats = size_t(6) * kFaceSize * kFaceSize;

class VisualInputBuilder {
 public:
  // `frame` must hold the rect's pixels (full frame, or a compact region covering it).
  // INVALID_ARGUMENT if the rect is empty or not inside the frame's pixels.
  Status Build(const avatar::BackgroundFrame& frame, const avatar::CropRect& rect, float* out);
  // Same from raw RGB pixels (rect in those pixels' coordinates).
  Status Build(const uint8_t* rgb, int width, int height, size_t stride,
               const avatar::CropRect& rect, float* out);
  // The same input as bytes, uint8 [6][320][320] planar (the inference link's
  // VISUAL_UINT8 form, 4x fewer bytes): byte / 255.0f is exactly Build's float.
  Status BuildU8(const avatar::BackgroundFrame& frame, const avatar::CropRect& rect, uint8_t* out);
  // The RGB face ROI of the last Build: [4:324, 4:324] of the crop resized to 328x328.
  const image::Image& roi() const { return roi_; }

 private:
  image::Image roi_{kFaceSize, kFaceSize, 3};
  // roi_ as float32 planes with the mask.
  void WriteFloats(float* out) const;
  // Resizes the crop into roi_; INVALID_ARGUMENT as Build.
  Status ResizeRoi(const avatar::BackgroundFrame& frame, const avatar::CropRect& rect);
  Status ResizeRoi(const uint8_t* rgb, int width, int height, size_t stride,
                   const avatar::CropRect& rect);

  ResizeScratch scratch_;
};

}  // namespace lipsync::compositing
