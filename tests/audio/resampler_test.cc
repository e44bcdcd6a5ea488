#include "audio/resampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "audio_test_util.h"

namespace lipsync::audio {
namespace {

using ::testing::HasSubstr;

// Amplitude of `hz` in x (16 kHz), by correlation with sine and cosine.
double AmplitudeAt(const std::vector<float>& x, double hz, size_t from, size_t to) {
  double s = 0, c = 0;
  for (size_t i = from; i < to; ++i) {
    s += x[i] * std::sin(2 * M_PI * hz * double(i) / 16000);
    c += x[i] * std::cos(2 * M_PI * hz * double(i) / 16000);
  }
  return 2.0 * std::hypot(s, c) / double(to - from);
}

TEST(ResamplerTest, EverySupportedRateKeepsATonesFrequencyAndLength) {
  for (int rate : kSupportedSampleRates) {
    const auto tone = testing::Tone(1000.0, 0.5, rate);
    auto out = ResampleTo16k(tone.data(), tone.size(), rate);
    ASSERT_TRUE(out.ok()) << rate << ": " << out.status().ToString();
    EXPECT_EQ(out->size(), 8000u) << rate;
    // Away from the edges the 1 kHz tone keeps its amplitude; 1.3 kHz is absent (0.4 s:
    // whole periods of both, so the correlation does not leak).
    EXPECT_NEAR(AmplitudeAt(*out, 1000.0, 800, 7200), 0.5, 1e-3) << rate;
    EXPECT_LT(AmplitudeAt(*out, 1300.0, 800, 7200), 1e-3) << rate;
  }
}

TEST(ResamplerTest, DownsamplingRemovesContentAboveEightKilohertz) {
  const auto tone = testing::Tone(11000.0, 0.5, 48000);
  auto out = ResampleTo16k(tone.data(), tone.size(), 48000);
  ASSERT_TRUE(out.ok());
  double energy = 0;
  for (size_t i = 1000; i < 7000; ++i) energy += double((*out)[i]) * (*out)[i];
  EXPECT_LT(std::sqrt(energy / 6000), 1e-4);
}

TEST(ResamplerTest, UnsupportedRateListsTheSupportedOnes) {
  const std::vector<float> x(100, 0.0f);
  auto out = ResampleTo16k(x.data(), x.size(), 11025);
  EXPECT_EQ(out.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(), HasSubstr("11025"));
  EXPECT_THAT(out.status().message(), HasSubstr("8000, 16000, 22050, 24000, 44100, 48000"));
}

}  // namespace
}  // namespace lipsync::audio
