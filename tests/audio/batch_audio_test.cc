#include "audio/batch_audio.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>

#include "audio/mel_spectrogram.h"
#include "audio/resampler.h"
#include "audio_test_util.h"

namespace lipsync::audio {
namespace {

using ::testing::HasSubstr;

EncodeWindowsFn StandIn() {
  static const testing::StandInEncoder encoder;
  return [](const float* windows, int n) { return encoder(windows, n); };
}

// How the client learns the utterance's end while streaming.
enum class EndKnowledge {
  kTotalKnown,      // every batch carries utterance_frames
  kEndOfUtterance,  // open-ended batches; utterance_frames only once the end is near
};

struct StreamStats {
  int open_ended = 0, with_total = 0, with_end_flag = 0;
};

// Streams `pcm` as consecutive batches of `batch` frames through SliceBatchAudio ->
// PrepareBatchAudio -> encoder -> AssembleFrameFeatures; returns all frames' features.
std::vector<float> StreamedFeatures(const std::string& pcm, int rate, int frames, int batch,
                                    EndKnowledge knowledge, StreamStats* stats) {
  std::vector<float> all;
  for (int start = 0; start < frames; start += batch) {
    BatchAudioSpec spec;
    spec.start_frame = start;
    spec.batch_size = std::min(batch, frames - start);
    spec.sample_rate = rate;
    const int end = start + spec.batch_size;
    if (knowledge == EndKnowledge::kTotalKnown) {
      spec.utterance_frames = frames;
      ++stats->with_total;
    } else if (end == frames) {
      spec.end_of_utterance = true;
      ++stats->with_end_flag;
    } else if (end + kRightContextFrames > frames) {
      spec.utterance_frames = frames;  // the lookahead reaches the end: the client knows it
      ++stats->with_total;
    } else {
      ++stats->open_ended;
    }
    auto slice = SliceBatchAudio(pcm, spec);
    EXPECT_TRUE(slice.ok()) << slice.status().ToString();
    if (!slice.ok()) return {};
    auto windows = PrepareBatchAudio(*slice, spec);
    EXPECT_TRUE(windows.ok()) << windows.status().ToString();
    if (!windows.ok()) return {};
    auto vectors = StandIn()(windows->windows.data(), windows->count);
    auto features = AssembleFrameFeatures(*windows, *vectors, spec);
    EXPECT_TRUE(features.ok()) << features.status().ToString();
    if (!features.ok()) return {};
    EXPECT_EQ(features->size(), size_t(spec.batch_size) * kFrameFeatureSize);
    all.insert(all.end(), features->begin(), features->end());
  }
  return all;
}

float MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  float worst = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst;
}

float MaxAbs(const std::vector<float>& a) {
  float worst = 0.0f;
  for (float v : a) worst = std::max(worst, std::abs(v));
  return worst;
}

// 53 frames minus a partial frame: not a multiple of 1, 7 or 24 batches beyond the first,
// and the last frame is padded with silence.
std::string Utterance(int rate, int* frames) {
  const int frame_samples = rate / 25;
  const auto speech = testing::SpeechLike(53.0 / 25 - 0.01, rate);
  *frames = int((speech.size() + size_t(frame_samples) - 1) / size_t(frame_samples));
  return FloatToS16le(speech);
}

TEST(BatchAudioTest, BatchesEqualTheWholeClipBitForBitAt16kHz) {
  int frames = 0;
  const std::string pcm = Utterance(16000, &frames);
  ASSERT_EQ(frames, 53);
  int whole_frames = 0;
  auto whole = WholeClipFeatures(pcm, 16000, StandIn(), &whole_frames);
  ASSERT_TRUE(whole.ok()) << whole.status().ToString();
  ASSERT_EQ(whole_frames, frames);
  ASSERT_GT(MaxAbs(*whole), 0.1f);
  for (int batch : {1, 7, 24}) {
    for (auto knowledge : {EndKnowledge::kTotalKnown, EndKnowledge::kEndOfUtterance}) {
      StreamStats stats;
      const auto streamed = StreamedFeatures(pcm, 16000, frames, batch, knowledge, &stats);
      ASSERT_EQ(streamed.size(), whole->size()) << "batch " << batch;
      for (size_t i = 0; i < streamed.size(); ++i) {
        ASSERT_EQ(streamed[i], (*whole)[i])
            << "batch " << batch << " frame " << i / kFrameFeatureSize << " slot "
            << (i % kFrameFeatureSize) / kEncoderVectorSize;
      }
      if (knowledge == EndKnowledge::kEndOfUtterance) {
        EXPECT_EQ(stats.with_end_flag, 1);
        EXPECT_GT(stats.open_ended, 0) << "batch " << batch;
      }
    }
  }
}

// Resampled input: each batch resamples only its own window, so the match is within the
// resampler's precision rather than bit-exact (tolerance stated in docs/AUDIO.md).
TEST(BatchAudioTest, BatchesEqualTheWholeClipAtOtherRates) {
  for (int rate : {8000, 22050, 44100, 48000}) {
    int frames = 0;
    const std::string pcm = Utterance(rate, &frames);
    auto whole = WholeClipFeatures(pcm, rate, StandIn(), nullptr);
    ASSERT_TRUE(whole.ok()) << whole.status().ToString();
    for (int batch : {7, 24}) {
      StreamStats stats;
      const auto streamed =
          StreamedFeatures(pcm, rate, frames, batch, EndKnowledge::kEndOfUtterance, &stats);
      ASSERT_EQ(streamed.size(), whole->size());
      // Features are sums of 24 window values (<= 4) with weights <= 1; measured <= 3e-5.
      EXPECT_LE(MaxAbsDiff(streamed, *whole), 1e-4f) << rate << " Hz, batch " << batch;
    }
  }
}

// The same assembly written straight from SyncTalk_2D's description: all windows from the
// full mel, vectors padded with one copy of the first and last, frame i = padded[i-8, i+8).
TEST(BatchAudioTest, WholeClipMatchesAStraightforwardSyncTalkAssembly) {
  int frames = 0;
  const std::string pcm = Utterance(16000, &frames);
  auto whole = WholeClipFeatures(pcm, 16000, StandIn(), nullptr);
  ASSERT_TRUE(whole.ok());

  auto samples = S16leToFloat(pcm);
  samples->resize(size_t(frames) * 640, 0.0f);
  int steps = 0;
  auto mel = MelSpectrogram(samples->data(), samples->size(), &steps);
  ASSERT_TRUE(mel.ok());
  std::vector<std::vector<float>> padded;
  for (int j = 0; j < frames; ++j) {
    int start = int(80.0 * (j / 25.0));
    if (start + 16 > steps) start = steps - 16;
    std::vector<float> window(80 * 16);
    for (int b = 0; b < 80; ++b) {
      for (int k = 0; k < 16; ++k)
        window[size_t(b * 16 + k)] = (*mel)[size_t(b * steps + start + k)];
    }
    padded.push_back(*StandIn()(window.data(), 1));
  }
  padded.insert(padded.begin(), padded.front());
  padded.push_back(padded.back());
  for (int i = 0; i < frames; ++i) {
    for (int k = 0; k < 16; ++k) {
      const int p = i - 8 + k;
      for (int o = 0; o < 512; ++o) {
        const float expected =
            (p < 0 || p >= int(padded.size())) ? 0.0f : padded[size_t(p)][size_t(o)];
        ASSERT_EQ((*whole)[size_t(i) * 8192 + size_t(k) * 512 + size_t(o)], expected)
            << "frame " << i << " slot " << k;
      }
    }
  }
}

// The mel windows of a 1 kHz tone sent at 48 kHz match those of the tone at 16 kHz.
TEST(BatchAudioTest, ToneAt48kHzGivesTheFeaturesOfTheToneAt16kHz) {
  auto windows_at = [](int rate) {
    // 20 ms fades: an abrupt onset is a broadband click whose 7.3..7.6 kHz part the
    // resampler's anti-alias filter (passband to 91.3% of 8 kHz) rightly removes.
    auto tone = testing::Tone(1000.0, 1.0, rate);
    const size_t fade = size_t(rate / 50);
    for (size_t i = 0; i < fade; ++i) {
      const float gain = float(0.5 - 0.5 * std::cos(M_PI * double(i) / double(fade)));
      tone[i] *= gain;
      tone[tone.size() - 1 - i] *= gain;
    }
    BatchAudioSpec spec;
    spec.batch_size = 25;
    spec.utterance_frames = 25;
    spec.sample_rate = rate;
    auto windows = PrepareBatchAudio(FloatToS16le(tone), spec);
    EXPECT_TRUE(windows.ok()) << windows.status().ToString();
    return windows.ok() ? windows->windows : std::vector<float>{};
  };
  const auto at16 = windows_at(16000);
  const auto at48 = windows_at(48000);
  ASSERT_EQ(at16.size(), at48.size());
  ASSERT_FALSE(at16.empty());
  // Tolerance by level, since both inputs carry their own s16 rounding noise (its floor is
  // near -3.7 on the [-4, 4] scale): values above 0 (the tone's bands) agree to 0.005
  // (0.06 dB), values above -2 to 0.05, and all values, noise floor included, to 0.15.
  float worst_strong = 0.0f, worst_medium = 0.0f, worst_all = 0.0f;
  size_t strong = 0;
  for (size_t i = 0; i < at16.size(); ++i) {
    const float diff = std::abs(at16[i] - at48[i]);
    worst_all = std::max(worst_all, diff);
    if (at16[i] > -2.0f) worst_medium = std::max(worst_medium, diff);
    if (at16[i] > 0.0f) worst_strong = std::max(worst_strong, diff), ++strong;
  }
  EXPECT_GT(strong, at16.size() / 40);  // the tone is there (a few bands of each step)
  EXPECT_LE(worst_strong, 0.005f);
  EXPECT_LE(worst_medium, 0.05f);
  EXPECT_LE(worst_all, 0.15f);
}

TEST(BatchAudioTest, ShortUtterancesWork) {
  for (int frames : {1, 2, 4, 5, 6}) {
    const auto x = testing::SpeechLike(frames / 25.0, 16000);
    const std::string pcm = FloatToS16le(x);
    auto whole = WholeClipFeatures(pcm, 16000, StandIn(), nullptr);
    ASSERT_TRUE(whole.ok()) << frames << ": " << whole.status().ToString();
    ASSERT_EQ(whole->size(), size_t(frames) * kFrameFeatureSize);
    StreamStats stats;
    const auto streamed =
        StreamedFeatures(pcm, 16000, frames, 1, EndKnowledge::kTotalKnown, &stats);
    EXPECT_EQ(streamed, *whole) << frames;
  }
}

TEST(BatchAudioTest, InvalidInputsAreRejectedWithTheExpectedCount) {
  BatchAudioSpec spec;
  spec.start_frame = 30;
  spec.batch_size = 10;
  // Open-ended: frames [30 - 11, 40 + 13) = 34 frames = 21760 samples at 16 kHz.
  auto expect_invalid = [](const Expected<MelWindows>& r, const std::string& text) {
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().ToString();
    EXPECT_THAT(r.status().message(), HasSubstr(text));
  };
  expect_invalid(PrepareBatchAudio("", spec), "21760");
  expect_invalid(PrepareBatchAudio(std::string(21761, '\0'), spec), "odd");
  expect_invalid(PrepareBatchAudio(std::string(2 * 21759, '\0'), spec), "expected exactly 21760");
  expect_invalid(PrepareBatchAudio(std::string(2 * 21761, '\0'), spec), "expected exactly 21760");
  EXPECT_TRUE(PrepareBatchAudio(std::string(2 * 21760, '\0'), spec).ok());

  spec.sample_rate = 48000;  // 34 frames x 1920
  expect_invalid(PrepareBatchAudio(std::string(2 * 21760, '\0'), spec), "65280");
  spec.sample_rate = 44100;  // 34 x 1764
  expect_invalid(PrepareBatchAudio(std::string(2 * 21760, '\0'), spec), "59976");
  spec.sample_rate = 11025;
  expect_invalid(PrepareBatchAudio(std::string(2 * 21760, '\0'), spec), "11025");

  spec.sample_rate = 0;        // means 16000
  spec.utterance_frames = 45;  // frames [19, 45) = 26 x 640
  expect_invalid(PrepareBatchAudio(std::string(2 * 21760, '\0'), spec), "16640");
  spec.end_of_utterance = true;  // but the batch ends at 40, not 45
  expect_invalid(PrepareBatchAudio(std::string(2 * 16640, '\0'), spec), "end_of_utterance");
  spec.utterance_frames = 0;  // end at 40: frames [19, 40) = 21 x 640
  expect_invalid(PrepareBatchAudio(std::string(2 * 16640, '\0'), spec), "13440");
  EXPECT_TRUE(PrepareBatchAudio(std::string(2 * 13440, '\0'), spec).ok());

  spec = BatchAudioSpec{};
  expect_invalid(PrepareBatchAudio(std::string(2 * 640, '\0'), spec), "batch_size");
  spec.batch_size = 5;
  spec.start_frame = -1;
  expect_invalid(PrepareBatchAudio(std::string(2 * 640, '\0'), spec), "start_frame_idx");
  spec.start_frame = std::numeric_limits<int>::max() - 1;
  spec.batch_size = 1;
  spec.end_of_utterance = true;  // would put the utterance's end past the int range
  expect_invalid(PrepareBatchAudio(std::string(2 * 12 * 640, '\0'), spec), "largest frame index");
  spec.end_of_utterance = false;
  spec.batch_size = 5;
  spec.start_frame = 10;
  spec.utterance_frames = 12;
  expect_invalid(PrepareBatchAudio(std::string(2 * 640, '\0'), spec), "past the utterance");
}

TEST(BatchAudioTest, AssemblyChecksTheEncoderOutput) {
  BatchAudioSpec spec;
  spec.batch_size = 3;
  spec.utterance_frames = 3;
  auto windows = PrepareBatchAudio(std::string(2 * 3 * 640, '\0'), spec);
  ASSERT_TRUE(windows.ok());
  EXPECT_EQ(windows->count, 3);
  std::vector<float> vectors(size_t(windows->count) * 512 - 1);
  EXPECT_EQ(AssembleFrameFeatures(*windows, vectors, spec).status().code(),
            StatusCode::kInvalidArgument);
  vectors.resize(size_t(windows->count) * 512);
  BatchAudioSpec other = spec;
  other.start_frame = 1;
  EXPECT_EQ(AssembleFrameFeatures(*windows, vectors, other).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(AssembleFrameFeatures(*windows, vectors, spec).ok());
}

TEST(BatchAudioTest, SliceRefusesAnOpenEndedBatchWhoseLookaheadPassesTheEnd) {
  int frames = 0;
  const std::string pcm = Utterance(16000, &frames);
  BatchAudioSpec spec;
  spec.start_frame = 40;
  spec.batch_size = 5;  // 45 + 13 > 53
  auto slice = SliceBatchAudio(pcm, spec);
  EXPECT_EQ(slice.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(slice.status().message(), HasSubstr("utterance_frames=53"));
  spec.utterance_frames = 53;
  EXPECT_TRUE(SliceBatchAudio(pcm, spec).ok());
  spec.utterance_frames = 52;
  EXPECT_FALSE(SliceBatchAudio(pcm, spec).ok());
}

// Arbitrary specs and lengths never crash; they either work or say why not.
TEST(BatchAudioTest, RandomRequestsNeverCrash) {
  std::mt19937 rng(99);
  std::uniform_int_distribution<int> small(-3, 60);
  const int rates[] = {0, 8000, 16000, 44100, 12345};
  for (int i = 0; i < 300; ++i) {
    BatchAudioSpec spec;
    spec.start_frame = small(rng);
    spec.batch_size = small(rng);
    spec.utterance_frames = small(rng) % 3 == 0 ? 0 : small(rng);
    spec.end_of_utterance = rng() % 2;
    spec.sample_rate = rates[rng() % 5];
    const int64_t samples = std::uniform_int_distribution<int64_t>(0, 80000)(rng);
    auto windows = PrepareBatchAudio(std::string(size_t(samples) * 2, '\x01'), spec);
    if (windows.ok()) {
      std::vector<float> vectors(size_t(windows->count) * 512, 1.0f);
      EXPECT_TRUE(AssembleFrameFeatures(*windows, vectors, spec).ok());
    } else {
      EXPECT_EQ(windows.status().code(), StatusCode::kInvalidArgument);
    }
  }
}

}  // namespace
}  // namespace lipsync::audio
