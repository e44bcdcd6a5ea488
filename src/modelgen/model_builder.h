// Generators for the ONNX models the servers and tests run: a visible lip-sync demo
// network, a per-avatar audio encoder, a full-size SyncTalk_2D "unet_328" stand-in for
// benchmarks, and an identity model. Each function builds the graph with the ONNX
// protobuf classes, validates it with onnx::checker and writes it to `path` (atomically:
// a reader never sees a half-written file). Every model has a symbolic batch dimension
// "B" and works for any batch size.
//
// Lip-sync models (demo, bench, identity), exactly the SyncTalk_2D unet_328 contract:
//   inputs  `input` float32 [B,6,320,320] (BGR in [0,1]; channels 0-2 the face ROI,
//                                         3-5 the masked ROI)
//           `audio` float32 [B,32,16,16] (16 audio-encoder 512-vectors of one frame)
//   output  `output` float32 [B,3,320,320] (BGR in [0,1])
//
// Thread-safe (no shared state); the functions allocate only while they run.
// Errors: INTERNAL if a generated graph fails the checker (a bug here),
// FAILED_PRECONDITION naming the path if the file cannot be written.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace lipsync::modelgen {

// output = the face (input channels 0-2) with a dark mouth drawn at the geometry
// below whose vertical opening grows with the energy (mean square) of `audio`;
// all-zero audio leaves the face untouched (mouth closed). A few elementwise ops.
Status WriteDemoLipSyncModel(const std::string& path);

// `mel` float32 [B,1,80,16] (Wav2Lip-normalised log-mel in [-4,4], silence = -4)
// -> `features` float32 [B,512]: relu of a positive projection of (mel+4)/8, so
// silence gives 0 and every feature is non-decreasing in every mel value.
Status WriteAudioEncoderModel(const std::string& path);

// unet_328-sized network (12.15 M parameters, 4.89 GMAC per frame) with He-scaled
// random weights drawn from `seed` (same seed -> byte-identical file). Output is
// meaningless but finite and in [0,1]; for measuring inference cost.
Status WriteBenchModel(const std::string& path, uint64_t seed);

// output = input[:, 0:3] exactly; `audio` is declared but unused.
Status WriteIdentityModel(const std::string& path);

// Geometry of the demo model's mouth inside the 320x320 ROI (the avatar generator draws
// the face so its mouth sits here): centre (160, 228), half-width 44, max half-height 30.
inline constexpr int kMouthCenterX = 160, kMouthCenterY = 228, kMouthHalfWidth = 44,
                     kMouthMaxHalfHeight = 30;

// Size of the lip-sync tensors, for callers that allocate them.
inline constexpr int kFrameSize = 320;
inline constexpr int kVisualChannels = 6;
inline constexpr int kAudioChannels = 32, kAudioHeight = 16, kAudioWidth = 16;
inline constexpr int kMelBands = 80, kMelSteps = 16, kAudioFeatureSize = 512;

}  // namespace lipsync::modelgen
