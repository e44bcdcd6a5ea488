// Speech fixtures for the end-to-end speech tests: a "talking" tenant (the demo avatar
// made by demo::MakeDemo, small: 320x240, 8 frames, with the demo lip-sync model and
// its audio encoder) added to e2e::ModelRoot(), real speech from espeak-ng, and the
// mouth measurement on returned frames.
// Not thread-safe (call from the test thread); returned values are owned by the caller.
#pragma once

#include <string>
#include <vector>

#include "avatar/crop_rects.h"
#include "image/image.h"

namespace lipsync::e2e {

// Tenant id of the talking avatar; created in ModelRoot() on first use.
const std::string& TalkingTenant();

// Writes `text` spoken by espeak-ng (SSML allowed: <break time="1s"/>) to `wav_path`
// (22050 Hz mono s16 WAV). Returns false (and says why on stderr) if espeak-ng failed.
bool Speak(const std::string& text, const std::string& wav_path);

// Mono s16le speech at its own rate, with `pad_seconds` of silence on each side.
struct Speech {
  std::string pcm_s16le;
  int sample_rate = 0;
  int frames = 0;  // 25 fps frames the speech covers (the last one zero-padded)
};
Speech LoadSpeech(const std::string& wav_path, double pad_seconds);

// RMS (on the [-1, 1) scale) of each frame's samples.
std::vector<double> FrameRms(const Speech& speech);

// How far the mouth is open in `frame` (packed RGB, same size as `background`): the
// number of pixels in the demo model's mouth box (modelgen::kMouth*, mapped from the
// 320x320 ROI through the crop rect: crop -> 328x328 -> [4:324]) whose luma is at least
// 40 below the background's. 0 for a closed mouth.
int MouthOpening(const image::Image& frame, const image::Image& background,
                 const avatar::CropRect& rect);

// Background frame `index` and its crop rect of a tenant in ModelRoot().
image::Image TenantBackground(const std::string& tenant, int index);
avatar::CropRect TenantRect(const std::string& tenant, int index);

double Pearson(const std::vector<double>& a, const std::vector<double>& b);

}  // namespace lipsync::e2e
