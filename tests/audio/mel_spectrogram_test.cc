#include "audio/mel_spectrogram.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>

#include "audio/resampler.h"
#include "audio_test_util.h"

namespace lipsync::audio {
namespace {

using ::testing::HasSubstr;

const std::string kReferenceScript =
    std::string(LIPSYNC_SOURCE_DIR) + "/tests/audio/mel_reference.py";

// Runs tests/audio/mel_reference.py on `signal` and compares with MelSpectrogram.
void ExpectMatchesNumpy(const std::vector<float>& signal) {
  testing::TempDir dir;
  const std::string in = dir.File("signal.f32"), out = dir.File("mel.f32");
  testing::WriteFloats(in, signal);
  const std::string command = "/usr/bin/python3 " + kReferenceScript + " " + in + " " + out;
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const std::vector<float> reference = testing::ReadFloats(out);

  int steps = 0;
  auto mel = MelSpectrogram(signal.data(), signal.size(), &steps);
  ASSERT_TRUE(mel.ok()) << mel.status().ToString();
  EXPECT_EQ(steps, int(1 + signal.size() / 200));
  ASSERT_EQ(reference.size(), mel->size());
  float worst = 0.0f;
  size_t worst_at = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const float diff = std::abs(reference[i] - (*mel)[i]);
    if (diff > worst) worst = diff, worst_at = i;
  }
  std::cout << "max |C++ - numpy| = " << worst << "\n";
  EXPECT_LE(worst, 1e-4f) << "band " << worst_at / size_t(steps) << " step "
                          << worst_at % size_t(steps);
  // The signal is not trivially clipped: many values lie inside (-4, 4).
  const auto inside =
      std::count_if(mel->begin(), mel->end(), [](float v) { return v > -3.9f && v < 3.9f; });
  EXPECT_GT(inside, std::ptrdiff_t(mel->size() / 8));
}

TEST(MelSpectrogramTest, ChirpMatchesNumpyReference) {
  if (!testing::PythonHasNumpy()) GTEST_SKIP() << "/usr/bin/python3 has no numpy";
  std::vector<float> chirp(20800);  // 1.3 s
  for (size_t i = 0; i < chirp.size(); ++i) {
    const double t = double(i) / 16000;
    chirp[i] = float(0.5 * std::sin(2 * M_PI * (100.0 * t + 0.5 * 5000.0 * t * t)));
  }
  ExpectMatchesNumpy(chirp);
}

TEST(MelSpectrogramTest, EspeakSpeechMatchesNumpyReference) {
  if (!testing::PythonHasNumpy()) GTEST_SKIP() << "/usr/bin/python3 has no numpy";
  testing::TempDir dir;
  const std::string wav = dir.File("speech.wav");
  const std::string command =
      "espeak-ng -w " + wav + " \"The quick brown fox jumps over the lazy dog.\" 2>/dev/null";
  ASSERT_EQ(std::system(command.c_str()), 0) << "espeak-ng is needed for this test";
  auto speech = ReadAudioFile(wav);
  ASSERT_TRUE(speech.ok()) << speech.status().ToString();
  auto at16k = ResampleTo16k(speech->samples.data(), speech->samples.size(), speech->sample_rate);
  ASSERT_TRUE(at16k.ok()) << at16k.status().ToString();
  ASSERT_GT(at16k->size(), 16000u);
  ExpectMatchesNumpy(*at16k);
}

// Any stretch of steps computed from a span that holds their samples equals the same steps
// of the whole signal, bit for bit (the base of seam-free batches).
TEST(MelSpectrogramTest, StepsFromASpanEqualTheWholeSignal) {
  const auto x = testing::SpeechLike(1.0, 16000);
  int steps = 0;
  auto whole = MelSpectrogram(x.data(), x.size(), &steps);
  ASSERT_TRUE(whole.ok());
  struct Case {
    int64_t first_step, count;
    bool utterance_end_known;
  };
  for (const Case& c : {Case{0, 5, false}, Case{10, 7, false}, Case{steps - 9, 9, true}}) {
    const int64_t lo = std::max<int64_t>(0, c.first_step * 200 - 401);
    int64_t hi = (c.first_step + c.count - 1) * 200 + 400;
    if (c.utterance_end_known) hi = int64_t(x.size());
    SignalSpan span{x.data() + lo, size_t(hi - lo), lo,
                    c.utterance_end_known ? int64_t(x.size()) : -1};
    auto part = MelSteps(span, c.first_step, int(c.count));
    ASSERT_TRUE(part.ok()) << part.status().ToString();
    for (int b = 0; b < kMelBands; ++b) {
      for (int64_t t = 0; t < c.count; ++t) {
        ASSERT_EQ((*part)[size_t(b * c.count + t)], (*whole)[size_t(b * steps + c.first_step + t)])
            << "band " << b << " step " << c.first_step + t;
      }
    }
  }
}

TEST(MelSpectrogramTest, SpanMissingSamplesIsAnError) {
  const auto x = testing::SpeechLike(0.5, 16000);
  SignalSpan span{x.data() + 1000, 2000, 1000, -1};  // holds [1000, 3000)
  auto part = MelSteps(span, 10, 1);                 // needs [1599, 2400): fine
  EXPECT_TRUE(part.ok()) << part.status().ToString();
  part = MelSteps(span, 12, 1);  // needs up to 2800: fine
  EXPECT_TRUE(part.ok());
  part = MelSteps(span, 14, 1);  // needs [2399, 3200)
  EXPECT_EQ(part.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(part.status().message(), HasSubstr("[2399, 3200)"));
  EXPECT_THAT(part.status().message(), HasSubstr("[1000, 3000)"));
  EXPECT_FALSE(MelSpectrogram(x.data(), 0, nullptr).ok());
}

TEST(MelSpectrogramTest, VeryShortSignalsDoNotCrash) {
  for (size_t n : {1u, 2u, 3u, 399u, 401u}) {
    const auto x = testing::SpeechLike(1.0, 16000);
    int steps = 0;
    auto mel = MelSpectrogram(x.data(), n, &steps);
    ASSERT_TRUE(mel.ok()) << n << ": " << mel.status().ToString();
    EXPECT_EQ(mel->size(), size_t(80 * steps));
  }
}

}  // namespace
}  // namespace lipsync::audio
