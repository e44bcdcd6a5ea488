// Per-frame audio features ("ave" mode) from raw speech, computed batch by batch so that
// a long utterance streamed as consecutive batches gets, for every frame, exactly the
// features the whole utterance processed at once would give (docs/AUDIO.md: the contract).
//
// The audio encoder network is not run here: the inference server calls
// PrepareBatchAudio, runs the encoder once over all returned windows ([count,1,80,16] ->
// [count,512]) and hands the vectors to AssembleFrameFeatures.
//
// Free functions, no shared mutable state: safe from any thread. Results are owned by the
// caller; MelWindows is a plain value (copyable, no references into the input).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace lipsync::audio {

inline constexpr int kFramesPerSecond = 25;
inline constexpr int kMelStepsPerWindow = 16;   // one encoder input: [1, 80, 16]
inline constexpr int kEncoderVectorSize = 512;  // one encoder output
inline constexpr int kVectorsPerFrame = 16;     // frame i: padded vectors [i-8, i+8)
inline constexpr int kFrameFeatureSize = 8192;  // 16 x 512 = [32, 16, 16]
// Audio a batch carries around its frames: frames [s - 11, s + B + 13), clipped to the
// utterance. 10 left / 12 right are what the features reach; one more frame each side
// keeps the resampler's edge effects out of the samples that are used.
inline constexpr int kLeftContextFrames = 11;
inline constexpr int kRightContextFrames = 13;
// Shorter utterances are padded with silence to this many frames so a 16-step mel window
// exists (the padding changes nothing else: frames beyond the utterance are not produced).
inline constexpr int kMinUtteranceFramesForMel = 5;

struct BatchAudioSpec {
  int start_frame = 0;            // first frame of the batch in the utterance (start_frame_idx)
  int batch_size = 0;             // frames in the batch
  int utterance_frames = 0;       // frames in the whole utterance; 0 = unknown
  bool end_of_utterance = false;  // the batch's last frame is the utterance's last
  int sample_rate = 16000;        // of the raw audio; 0 means 16000
};

// The utterance frames [first, end) whose audio a batch carries.
struct AudioFrameRange {
  int64_t first_frame = 0;
  int64_t end_frame = 0;
};

// Validates a spec (batch_size >= 1, start_frame >= 0, supported rate, consistent end) and
// returns the frames its raw audio must cover. INVALID_ARGUMENT says what is inconsistent.
Expected<AudioFrameRange> BatchAudioFrames(const BatchAudioSpec& spec);
// Samples per 1/25 s frame at a supported rate (640 at 16 kHz); 0 for an unsupported one.
int SamplesPerFrame(int sample_rate);

struct MelWindows {
  std::vector<float> windows;  // [count, 1, 80, 16]: 80 mel bands x 16 steps each
  int count = 0;
  // Window w belongs to encoder vector first_vector + w (vector j = utterance frame j's
  // window, the 16 mel steps from floor(16 j / 5), moved back at the utterance's end).
  int first_vector = 0;
  // The batch these windows were prepared for, checked by AssembleFrameFeatures.
  int start_frame = 0;
  int batch_size = 0;
  int utterance_frames =
      0;  // resolved end (utterance_frames, or start+batch at the end); 0 = unknown
};

// Validates the batch's audio (INVALID_ARGUMENT for an empty or odd-length buffer, an
// unsupported rate, or a sample count other than the contract's, stating the expected
// count at the request's rate) and computes the mel windows this batch needs.
Expected<MelWindows> PrepareBatchAudio(std::string_view pcm_s16le, const BatchAudioSpec& spec);

// vectors = encoder output [windows.count, 512]; returns batch_size * 8192 floats,
// frame-major, each frame's 16 padded vectors concatenated (row-major [16, 512] read as
// [32, 16, 16]). INVALID_ARGUMENT if the sizes or the spec do not match the windows.
Expected<std::vector<float>> AssembleFrameFeatures(const MelWindows& windows,
                                                   const std::vector<float>& vectors,
                                                   const BatchAudioSpec& spec);

// Client side: the s16le samples (at spec.sample_rate) a batch must carry, cut from a whole
// utterance (which is zero-padded to whole frames). INVALID_ARGUMENT if the spec does not fit
// the utterance, e.g. utterance_frames disagrees with its length, or the utterance ends
// inside an open-ended batch's lookahead (then set utterance_frames).
Expected<std::string> SliceBatchAudio(std::string_view utterance_s16le, const BatchAudioSpec& spec);

// Encoder stand-in for the whole-clip path: maps n windows [n,1,80,16] to [n,512].
using EncodeWindowsFn = std::function<Expected<std::vector<float>>(const float* windows, int n)>;

// Whole clip at once (reference path for tests / offline): per-frame features for frames
// [0, n), n = ceil(samples / SamplesPerFrame(sample_rate)) stored in *num_frames.
Expected<std::vector<float>> WholeClipFeatures(std::string_view pcm_s16le, int sample_rate,
                                               const EncodeWindowsFn& encode, int* num_frames);

}  // namespace lipsync::audio
