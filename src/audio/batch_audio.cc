#include "audio/batch_audio.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "audio/mel_spectrogram.h"
#include "audio/resampler.h"
#include "audio/wav_reader.h"

namespace lipsync::audio {
namespace {

constexpr int64_t kSamplesPerFrame16k = kModelSampleRate / kFramesPerSecond;  // 640
constexpr int64_t kUnknown = std::numeric_limits<int64_t>::max();

int ResolvedRate(int sample_rate) { return sample_rate == 0 ? kModelSampleRate : sample_rate; }

// The utterance's end as far as this batch knows it: frames, or 0 when open-ended.
int64_t ResolvedUtteranceFrames(const BatchAudioSpec& spec) {
  if (spec.utterance_frames > 0) return spec.utterance_frames;
  if (spec.end_of_utterance) return int64_t(spec.start_frame) + spec.batch_size;
  return 0;
}

// Mel window of encoder vector j: 16 steps from floor(80 j / 25), moved back to end at the
// last step when the utterance ends sooner (SyncTalk_2D's crop_audio_window).
int64_t WindowStart(int64_t vector, int64_t total_steps) {
  const int64_t start = 16 * vector / 5;
  return total_steps == kUnknown ? start : std::min(start, total_steps - kMelStepsPerWindow);
}

std::string SpecText(const BatchAudioSpec& spec) {
  return "batch frames [" + std::to_string(spec.start_frame) + ", " +
         std::to_string(int64_t(spec.start_frame) + spec.batch_size) +
         ") (utterance_frames=" + std::to_string(spec.utterance_frames) +
         ", end_of_utterance=" + (spec.end_of_utterance ? "true" : "false") + ")";
}

}  // namespace

int SamplesPerFrame(int sample_rate) {
  if (!CheckSupportedSampleRate(sample_rate).ok()) return 0;
  return sample_rate / kFramesPerSecond;
}

Expected<AudioFrameRange> BatchAudioFrames(const BatchAudioSpec& spec) {
  LIPSYNC_RETURN_IF_ERROR(CheckSupportedSampleRate(ResolvedRate(spec.sample_rate)));
  if (spec.batch_size < 1) {
    return Status::InvalidArgument("batch_size is " + std::to_string(spec.batch_size) +
                                   "; expected >= 1");
  }
  if (spec.start_frame < 0) {
    return Status::InvalidArgument("start_frame_idx is " + std::to_string(spec.start_frame) +
                                   "; expected >= 0 (the batch's first frame in the utterance)");
  }
  if (spec.utterance_frames < 0) {
    return Status::InvalidArgument("utterance_frames is " + std::to_string(spec.utterance_frames) +
                                   "; expected >= 0 (0 = unknown)");
  }
  const int64_t batch_end = int64_t(spec.start_frame) + spec.batch_size;
  if (batch_end + kRightContextFrames > std::numeric_limits<int>::max()) {
    return Status::InvalidArgument(SpecText(spec) +
                                   " lies beyond the largest frame index; expected "
                                   "start_frame_idx + batch_size + 13 < 2^31");
  }
  if (spec.utterance_frames > 0 && batch_end > spec.utterance_frames) {
    return Status::InvalidArgument(SpecText(spec) + " extends past the utterance's " +
                                   std::to_string(spec.utterance_frames) +
                                   " frames; expected start_frame_idx + batch_size <= "
                                   "utterance_frames");
  }
  if (spec.utterance_frames > 0 && spec.end_of_utterance && batch_end != spec.utterance_frames) {
    return Status::InvalidArgument(SpecText(spec) +
                                   " is marked end_of_utterance but does not end at frame " +
                                   std::to_string(spec.utterance_frames) +
                                   "; expected start_frame_idx + batch_size == utterance_frames");
  }
  const int64_t utterance = ResolvedUtteranceFrames(spec);
  AudioFrameRange range;
  range.first_frame = std::max<int64_t>(0, int64_t(spec.start_frame) - kLeftContextFrames);
  range.end_frame = batch_end + kRightContextFrames;
  if (utterance > 0) range.end_frame = std::min(range.end_frame, utterance);
  return range;
}

Expected<MelWindows> PrepareBatchAudio(std::string_view pcm_s16le, const BatchAudioSpec& spec) {
  LIPSYNC_ASSIGN_OR_RETURN(const AudioFrameRange range, BatchAudioFrames(spec));
  const int rate = ResolvedRate(spec.sample_rate);
  const int64_t frame_samples = SamplesPerFrame(rate);
  const int64_t expected = (range.end_frame - range.first_frame) * frame_samples;
  const std::string expectation =
      "expected exactly " + std::to_string(expected) + " samples (" + std::to_string(2 * expected) +
      " bytes of s16le at " + std::to_string(rate) + " Hz): utterance frames [" +
      std::to_string(range.first_frame) + ", " + std::to_string(range.end_frame) + ") for " +
      SpecText(spec) + ", " + std::to_string(frame_samples) +
      " samples per frame (see docs/AUDIO.md)";
  if (pcm_s16le.empty()) return Status::InvalidArgument("raw_audio is empty; " + expectation);
  if (pcm_s16le.size() % 2 != 0) {
    return Status::InvalidArgument("raw_audio has an odd byte count (" +
                                   std::to_string(pcm_s16le.size()) + "); " + expectation);
  }
  if (int64_t(pcm_s16le.size() / 2) != expected) {
    return Status::InvalidArgument("raw_audio has " + std::to_string(pcm_s16le.size() / 2) +
                                   " samples; " + expectation);
  }
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<float> input, S16leToFloat(pcm_s16le));
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<float> signal,
                           ResampleTo16k(input.data(), input.size(), rate));

  const int64_t utterance = ResolvedUtteranceFrames(spec);
  const bool reaches_end = utterance > 0 && range.end_frame == utterance;
  // At 16 kHz the span is exact; after resampling it is trimmed/padded to whole frames.
  int64_t span_frames = range.end_frame - range.first_frame;
  int64_t utterance_samples = -1;
  int64_t total_steps = kUnknown;
  if (utterance > 0) {
    utterance_samples =
        kSamplesPerFrame16k * std::max<int64_t>(utterance, kMinUtteranceFramesForMel);
    total_steps = MelStepCount(utterance_samples);
  }
  int64_t span_samples = span_frames * kSamplesPerFrame16k;
  if (reaches_end) span_samples = utterance_samples - range.first_frame * kSamplesPerFrame16k;
  signal.resize(size_t(span_samples), 0.0f);

  const int64_t batch_end = int64_t(spec.start_frame) + spec.batch_size;
  const int64_t first_vector = std::max<int64_t>(0, int64_t(spec.start_frame) - 9);
  int64_t last_vector = batch_end + 6;
  if (utterance > 0) last_vector = std::min(last_vector, utterance - 1);
  const int64_t count = last_vector - first_vector + 1;
  const int64_t first_step = WindowStart(first_vector, total_steps);
  const int64_t end_step = WindowStart(last_vector, total_steps) + kMelStepsPerWindow;
  const int steps = int(end_step - first_step);

  SignalSpan span{signal.data(), signal.size(), range.first_frame * kSamplesPerFrame16k,
                  utterance_samples};
  auto mel = MelSteps(span, first_step, steps);
  if (!mel.ok()) {
    return Status::Internal("batch audio window does not cover its mel steps (" +
                            mel.status().message() + ")");
  }
  MelWindows out;
  out.count = int(count);
  out.first_vector = int(first_vector);
  out.start_frame = spec.start_frame;
  out.batch_size = spec.batch_size;
  out.utterance_frames = int(utterance);
  const size_t window_size = size_t(kMelBands) * kMelStepsPerWindow;
  out.windows.resize(size_t(count) * window_size);
  for (int64_t w = 0; w < count; ++w) {
    const int64_t offset = WindowStart(first_vector + w, total_steps) - first_step;
    float* dst = out.windows.data() + size_t(w) * window_size;
    for (int b = 0; b < kMelBands; ++b) {
      const float* src = mel->data() + size_t(b) * size_t(steps) + size_t(offset);
      std::memcpy(dst + size_t(b) * kMelStepsPerWindow, src, sizeof(float) * kMelStepsPerWindow);
    }
  }
  return out;
}

Expected<std::vector<float>> AssembleFrameFeatures(const MelWindows& windows,
                                                   const std::vector<float>& vectors,
                                                   const BatchAudioSpec& spec) {
  if (spec.start_frame != windows.start_frame || spec.batch_size != windows.batch_size) {
    return Status::InvalidArgument(
        "windows were prepared for batch frames [" + std::to_string(windows.start_frame) + ", +" +
        std::to_string(windows.batch_size) + ") but assembly asks for " + SpecText(spec) +
        "; expected the same start_frame_idx and batch_size");
  }
  if (vectors.size() != size_t(windows.count) * kEncoderVectorSize) {
    return Status::InvalidArgument(
        "audio encoder output has " + std::to_string(vectors.size()) + " floats; expected " +
        std::to_string(windows.count) +
        " x 512 = " + std::to_string(size_t(windows.count) * kEncoderVectorSize));
  }
  const int64_t utterance = windows.utterance_frames;
  std::vector<float> out(size_t(spec.batch_size) * kFrameFeatureSize, 0.0f);
  for (int f = 0; f < spec.batch_size; ++f) {
    const int64_t frame = int64_t(spec.start_frame) + f;
    float* dst = out.data() + size_t(f) * kFrameFeatureSize;
    for (int k = 0; k < kVectorsPerFrame; ++k) {
      // Index into the clip's vectors padded with one copy of the first and the last
      // (SyncTalk_2D); outside the padded sequence the slot stays zero.
      const int64_t padded = frame - kVectorsPerFrame / 2 + k;
      if (padded < 0 || (utterance > 0 && padded > utterance + 1)) continue;
      int64_t vector = std::max<int64_t>(padded - 1, 0);
      if (utterance > 0) vector = std::min(vector, utterance - 1);
      const int64_t w = vector - windows.first_vector;
      if (w < 0 || w >= windows.count) {
        return Status::Internal("frame " + std::to_string(frame) + " needs encoder vector " +
                                std::to_string(vector) + " outside the prepared windows");
      }
      std::memcpy(dst + size_t(k) * kEncoderVectorSize,
                  vectors.data() + size_t(w) * kEncoderVectorSize,
                  sizeof(float) * kEncoderVectorSize);
    }
  }
  return out;
}

Expected<std::string> SliceBatchAudio(std::string_view utterance_s16le,
                                      const BatchAudioSpec& spec) {
  LIPSYNC_ASSIGN_OR_RETURN(const AudioFrameRange range, BatchAudioFrames(spec));
  if (utterance_s16le.empty() || utterance_s16le.size() % 2 != 0) {
    return Status::InvalidArgument("utterance audio has " + std::to_string(utterance_s16le.size()) +
                                   " bytes; expected a non-empty, even number (s16le)");
  }
  const int64_t frame_samples = SamplesPerFrame(ResolvedRate(spec.sample_rate));
  const int64_t samples = int64_t(utterance_s16le.size() / 2);
  const int64_t frames = (samples + frame_samples - 1) / frame_samples;
  const int64_t batch_end = int64_t(spec.start_frame) + spec.batch_size;
  const std::string length_text = "the utterance has " + std::to_string(samples) +
                                  " samples = " + std::to_string(frames) + " frames";
  if (spec.utterance_frames > 0 && spec.utterance_frames != frames) {
    return Status::InvalidArgument(length_text + " but utterance_frames is " +
                                   std::to_string(spec.utterance_frames) + "; expected " +
                                   std::to_string(frames) + " or 0");
  }
  if (spec.end_of_utterance && batch_end != frames) {
    return Status::InvalidArgument(length_text + " but " + SpecText(spec) +
                                   " is marked end_of_utterance; expected it to end at frame " +
                                   std::to_string(frames));
  }
  if (batch_end > frames) {
    return Status::InvalidArgument(length_text + "; " + SpecText(spec) + " runs past it");
  }
  if (range.end_frame > frames) {
    return Status::InvalidArgument(length_text + ", which ends inside the " +
                                   std::to_string(kRightContextFrames) +
                                   "-frame lookahead of open-ended " + SpecText(spec) +
                                   "; expected utterance_frames=" + std::to_string(frames) +
                                   " (or end_of_utterance on a batch ending there)");
  }
  std::string out(size_t((range.end_frame - range.first_frame) * frame_samples) * 2, '\0');
  const int64_t begin = range.first_frame * frame_samples;
  const int64_t available = std::min(samples, range.end_frame * frame_samples) - begin;
  if (available > 0) {
    std::memcpy(out.data(), utterance_s16le.data() + size_t(begin) * 2, size_t(available) * 2);
  }
  return out;
}

Expected<std::vector<float>> WholeClipFeatures(std::string_view pcm_s16le, int sample_rate,
                                               const EncodeWindowsFn& encode, int* num_frames) {
  const int rate = ResolvedRate(sample_rate);
  LIPSYNC_RETURN_IF_ERROR(CheckSupportedSampleRate(rate));
  if (pcm_s16le.empty() || pcm_s16le.size() % 2 != 0) {
    return Status::InvalidArgument("clip audio has " + std::to_string(pcm_s16le.size()) +
                                   " bytes; expected a non-empty, even number (s16le)");
  }
  const int64_t frame_samples = SamplesPerFrame(rate);
  const int64_t samples = int64_t(pcm_s16le.size() / 2);
  const int64_t frames = (samples + frame_samples - 1) / frame_samples;
  if (frames > std::numeric_limits<int>::max() - kRightContextFrames) {
    return Status::InvalidArgument("clip of " + std::to_string(samples) +
                                   " samples is too long; expected under 2^31 frames");
  }
  std::string padded(size_t(frames * frame_samples) * 2, '\0');
  std::memcpy(padded.data(), pcm_s16le.data(), pcm_s16le.size());
  BatchAudioSpec spec;
  spec.start_frame = 0;
  spec.batch_size = int(frames);
  spec.utterance_frames = int(frames);
  spec.end_of_utterance = true;
  spec.sample_rate = rate;
  LIPSYNC_ASSIGN_OR_RETURN(MelWindows windows, PrepareBatchAudio(padded, spec));
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<float> vectors,
                           encode(windows.windows.data(), windows.count));
  LIPSYNC_ASSIGN_OR_RETURN(std::vector<float> features,
                           AssembleFrameFeatures(windows, vectors, spec));
  if (num_frames) *num_frames = int(frames);
  return features;
}

}  // namespace lipsync::audio
