// Fuzz target: the inference server's raw-audio path (src/audio/batch_audio.h): s16le
// PCM at a sample rate -> resample to 16 kHz -> mel windows -> per-frame features, with
// the batch's placement in the utterance (start frame, batch size, utterance length,
// end flag) taken from the input as a client would send it.
//
// Input layout: [flags][rate][start_frame u32][batch_size u32][utterance_frames u32]
// then PCM bytes. flags bit 0: stretch/cut the PCM to the exact length the spec needs
// (otherwise the raw bytes are used, exercising the length checks); bit 1:
// end_of_utterance; bit 2: "wild" spec fields (any 32-bit values; otherwise bounded to
// small batches so the mel path runs often); bit 3: also run SliceBatchAudio and
// WholeClipFeatures on the PCM.
//
// Checks: every error is INVALID_ARGUMENT with a bounded message (INTERNAL would mean
// the batch window missed its mel steps); windows and features have the documented
// sizes and finite values in [-4, 4]; a slice cut by SliceBatchAudio is accepted by
// PrepareBatchAudio for the same spec.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "audio/batch_audio.h"
#include "audio/mel_spectrogram.h"
#include "audio/resampler.h"
#include "fuzz/fuzz_util.h"

namespace {

using lipsync::Expected;
using lipsync::Status;
using lipsync::StatusCode;
namespace audio = lipsync::audio;

// Most PCM bytes one exec turns into mel windows (keeps an exec well under 100 ms).
constexpr size_t kMaxPcmBytes = 192 * 1024;

void CheckError(const Status& status, const char* what) {
  FUZZ_CHECK(status.code() == StatusCode::kInvalidArgument,
             std::string(what) + " failed with " + status.ToString().substr(0, 300));
  FUZZ_CHECK_MESSAGE(status);
}

// Stand-in for the audio encoder: [n,1,80,16] -> [n,512], deterministic.
Expected<std::vector<float>> FakeEncoder(const float* windows, int n) {
  std::vector<float> out(size_t(n) * audio::kEncoderVectorSize);
  const size_t window = size_t(audio::kMelBands) * audio::kMelStepsPerWindow;
  for (size_t w = 0; w < size_t(n); ++w) {
    for (size_t k = 0; k < audio::kEncoderVectorSize; ++k) {
      out[w * audio::kEncoderVectorSize + k] = windows[w * window + k % window];
    }
  }
  return out;
}

void CheckFeatures(const std::vector<float>& features, int frames) {
  FUZZ_CHECK(features.size() == size_t(frames) * audio::kFrameFeatureSize,
             "features hold " + std::to_string(features.size()) + " floats for " +
                 std::to_string(frames) + " frames");
  for (float v : features) {
    FUZZ_CHECK(std::isfinite(v) && v >= -4.0f && v <= 4.0f,
               "feature value " + std::to_string(v) + " outside [-4, 4]");
  }
}

// PrepareBatchAudio + AssembleFrameFeatures; returns whether the audio was accepted.
bool RunBatch(std::string_view pcm, const audio::BatchAudioSpec& spec) {
  auto windows = audio::PrepareBatchAudio(pcm, spec);
  lipsync::fuzz::Note(windows.ok()
                          ? "PrepareBatchAudio: " + std::to_string(windows->count) + " windows"
                          : windows.status().ToString());
  if (!windows.ok()) {
    CheckError(windows.status(), "PrepareBatchAudio");
    return false;
  }
  const size_t window = size_t(audio::kMelBands) * audio::kMelStepsPerWindow;
  FUZZ_CHECK(windows->count > 0 && windows->windows.size() == size_t(windows->count) * window,
             "PrepareBatchAudio returned " + std::to_string(windows->count) + " windows in " +
                 std::to_string(windows->windows.size()) + " floats");
  for (float v : windows->windows) {
    FUZZ_CHECK(std::isfinite(v) && v >= -4.0f && v <= 4.0f,
               "mel value " + std::to_string(v) + " outside [-4, 4]");
  }
  auto vectors = FakeEncoder(windows->windows.data(), windows->count);
  auto features = audio::AssembleFrameFeatures(*windows, *vectors, spec);
  FUZZ_CHECK(features.ok(),
             "AssembleFrameFeatures failed: " + features.status().ToString().substr(0, 300));
  CheckFeatures(*features, spec.batch_size);
  // A wrong-sized encoder output is refused.
  std::vector<float> short_vectors(vectors->begin(), vectors->end() - 1);
  auto refused = audio::AssembleFrameFeatures(*windows, short_vectors, spec);
  FUZZ_CHECK(!refused.ok(), "AssembleFrameFeatures accepted a short encoder output");
  CheckError(refused.status(), "AssembleFrameFeatures");
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kMaxPcmBytes + 16) return -1;
  lipsync::fuzz::Reader in(data, size);
  const uint8_t flags = in.U8();
  const uint8_t rate_byte = in.U8();
  const uint32_t start_raw = in.U32();
  const uint32_t batch_raw = in.U32();
  const uint32_t utterance_raw = in.U32();
  const std::string_view pcm = in.Rest();

  const bool fit = flags & 1;
  const bool wild = flags & 4;
  audio::BatchAudioSpec spec;
  constexpr int kRates[] = {16000, 8000, 22050, 24000, 44100, 48000, 0};
  spec.sample_rate = rate_byte < 7 ? kRates[rate_byte] : int(int32_t(start_raw ^ batch_raw));
  spec.end_of_utterance = flags & 2;
  if (wild) {
    spec.start_frame = int32_t(start_raw);
    spec.batch_size = int32_t(batch_raw);
    spec.utterance_frames = int32_t(utterance_raw);
  } else {
    spec.start_frame = int(start_raw % 4096);
    spec.batch_size = 1 + int(batch_raw % 24);
    // 0 = unknown; otherwise around the batch's end (sometimes inconsistent on purpose).
    spec.utterance_frames = utterance_raw % 3 == 0
                                ? 0
                                : spec.start_frame + spec.batch_size + int(utterance_raw % 41) - 2;
  }

  auto range = audio::BatchAudioFrames(spec);
  if (!range.ok()) {
    CheckError(range.status(), "BatchAudioFrames");
    // The same spec must fail PrepareBatchAudio too.
    auto windows = audio::PrepareBatchAudio(pcm, spec);
    FUZZ_CHECK(!windows.ok(), "PrepareBatchAudio accepted a spec BatchAudioFrames rejected");
    CheckError(windows.status(), "PrepareBatchAudio");
    return 0;
  }
  FUZZ_CHECK(range->first_frame >= 0 && range->first_frame < range->end_frame,
             "BatchAudioFrames returned frames [" + std::to_string(range->first_frame) + ", " +
                 std::to_string(range->end_frame) + ")");
  const int rate = spec.sample_rate == 0 ? 16000 : spec.sample_rate;
  const int64_t expected_bytes =
      2 * (range->end_frame - range->first_frame) * audio::SamplesPerFrame(rate);

  if (fit) {
    if (expected_bytes > int64_t(kMaxPcmBytes)) return 0;
    std::string exact(size_t(expected_bytes), '\0');
    if (!pcm.empty()) {
      for (size_t i = 0; i < exact.size(); ++i) exact[i] = pcm[i % pcm.size()];
    }
    const bool accepted = RunBatch(exact, spec);
    FUZZ_CHECK(accepted, "PrepareBatchAudio refused audio of exactly the expected length");
  } else {
    const bool accepted = RunBatch(pcm, spec);
    FUZZ_CHECK(accepted == (int64_t(pcm.size()) == expected_bytes),
               "PrepareBatchAudio " + std::string(accepted ? "accepted" : "refused") + " " +
                   std::to_string(pcm.size()) + " bytes; the spec needs " +
                   std::to_string(expected_bytes));
  }

  if (flags & 8) {
    // Client side: cut this batch from the PCM as a whole utterance.
    auto slice = audio::SliceBatchAudio(pcm, spec);
    if (!slice.ok()) {
      CheckError(slice.status(), "SliceBatchAudio");
    } else {
      FUZZ_CHECK(int64_t(slice->size()) == expected_bytes,
                 "SliceBatchAudio returned " + std::to_string(slice->size()) +
                     " bytes; the spec needs " + std::to_string(expected_bytes));
      if (slice->size() <= kMaxPcmBytes) {
        FUZZ_CHECK(RunBatch(*slice, spec), "PrepareBatchAudio refused SliceBatchAudio's slice");
      }
    }
    // The whole PCM as one clip (offline path).
    if (pcm.size() <= kMaxPcmBytes / 2) {
      int frames = 0;
      auto whole = audio::WholeClipFeatures(pcm, spec.sample_rate, FakeEncoder, &frames);
      if (!whole.ok()) {
        CheckError(whole.status(), "WholeClipFeatures");
      } else {
        CheckFeatures(*whole, frames);
      }
    }
  }
  return 0;
}
