// A synthetic, seeded avatar in the deployment guide's layout: frames/frame_NNNN.png
// (a textured room with a face-like subject whose head drifts slightly) and
// crop_rects.json (one [x1,y1,x2,y2] square per frame following the lower face).
// The crop is placed so the drawn, closed mouth lands where the demo lip-sync model
// draws its mouth in the 320x320 ROI (modelgen::kMouthCenterX/Y): crop -> resize to
// 328x328 -> [4:324, 4:324].
// Deterministic: the same spec gives byte-identical files. Thread-safe (no shared
// state); returned images are owned by the caller.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "image/image.h"

namespace lipsync::demo {

struct AvatarSpec {
  int width = 1280;
  int height = 720;
  int frames = 120;
  uint64_t seed = 1;
  // Burns each frame's index into its top 16 rows (the page test's A/V offset): 16
  // equal cells across the width, cell 0 white, cell 1 black, cells 2..15 the index's
  // low 14 bits, most significant first (white = 1).
  bool burn_index = false;
};

// Draws the index stripe of `burn_index` into `img` (RGB).
void BurnFrameIndex(image::Image& img, int frame);

// [x1, y1, x2, y2) in frame pixels, as in crop_rects.json; a square.
struct CropRect {
  int x1 = 0, y1 = 0, x2 = 0, y2 = 0;
  int size() const { return x2 - x1; }
};

// Where the subject is in one frame (frame pixels), for tests and tools.
struct FacePose {
  float head_cx = 0, head_cy = 0;  // centre of the head ellipse
  float head_ry = 0;               // half-height of the head; everything scales with it
  float mouth_cx = 0, mouth_cy = 0;
  float mouth_half_width = 0;
};

// Called as work completes: stage ("frames"), items done, items in total. May be
// called from worker threads, but never concurrently and with `done` increasing.
using ProgressFn = std::function<void(const std::string& stage, int done, int total)>;

// INVALID_ARGUMENT unless frames >= 1 and the frame is at least 64x64 and at most 8192
// wide/high.
Status ValidateAvatarSpec(const AvatarSpec& spec);

FacePose AvatarPose(const AvatarSpec& spec, int frame);
// Inside the frame, x1 < x2, y1 < y2; about 2.1 head half-heights wide.
CropRect AvatarCropRect(const AvatarSpec& spec, int frame);
// Renders one RGB frame. `frame` may be any index in [0, spec.frames).
image::Image RenderAvatarFrame(const AvatarSpec& spec, int frame);

// "[[x1,y1,x2,y2],...]" for all frames.
std::string CropRectsJson(const AvatarSpec& spec);

// Writes dir/frames/frame_0000.png ... and dir/crop_rects.json, rendering frames in
// parallel (`threads` 0: one per core). Each file is written to a temporary name and
// renamed, so readers never see half a PNG. frame_NNNN.png files beyond spec.frames
// (from an earlier, longer run) are removed.
Status GenerateAvatarFrames(const AvatarSpec& spec, const std::string& dir,
                            const ProgressFn& progress = nullptr, int threads = 0);

// Gives to_dir/frames the same frame_0000.png ... frame_<frames-1>.png as from_dir/frames
// by hard-linking (copying where links are impossible), so tenants share one encoding.
// Up-to-date links are kept; extra frames in to_dir are removed.
Status LinkAvatarFrames(const std::string& from_dir, const std::string& to_dir, int frames);

}  // namespace lipsync::demo
