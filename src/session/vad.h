// Per-frame silence gating for live sessions: which frames of an utterance get the
// generated mouth, which the avatar's own frame, and how much of each at the edges.
//
// A frame is loud when the RMS of the samples it owns is at least `threshold_dbfs`
// (dB relative to full scale, a full-scale square wave being 0 dBFS). Short quiet gaps
// inside speech (at most 2 * bridge_frames frames with loud frames on both sides within
// bridge_frames) count as speech, so stop consonants do not flicker to the idle frame.
// Around each speech stretch the blend weight ramps over `crossfade_frames` frames
// (alpha = 1 - d / (crossfade_frames + 1) at distance d from the nearest speech frame),
// so the mouth neither snaps open nor hangs open. Frames beyond the known audio count as
// quiet.
//
// Free functions, no state: any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lipsync::session {

// RMS of s16 samples in dBFS (-200 for silence or no samples).
double FrameDbfs(const int16_t* samples, size_t count);

struct GateOptions {
  double threshold_dbfs = -45;
  int crossfade_frames = 3;
  int bridge_frames = 2;
};

// loud[i] for frames of one utterance: the blend weight (0: the avatar's own frame,
// 1: the generated frame) of frames [first, first + count).
std::vector<float> GateWeights(const std::vector<bool>& loud, int64_t first, int count,
                               const GateOptions& options);

}  // namespace lipsync::session
