#include "audio/wav_reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sndfile.h>

#include <fstream>

#include "audio_test_util.h"

namespace lipsync::audio {
namespace {

using ::testing::HasSubstr;

TEST(WavReaderTest, StereoFileIsAveragedToMono) {
  testing::TempDir dir;
  const std::string path = dir.File("stereo.wav");
  SF_INFO info{};
  info.samplerate = 22050;
  info.channels = 2;
  info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(file, nullptr);
  std::vector<short> frames;
  for (int i = 0; i < 100; ++i) {
    frames.push_back(short(i * 100));  // left
    frames.push_back(short(-i * 50));  // right
  }
  ASSERT_EQ(sf_writef_short(file, frames.data(), 100), 100);
  sf_close(file);

  auto audio = ReadAudioFile(path);
  ASSERT_TRUE(audio.ok()) << audio.status().ToString();
  EXPECT_EQ(audio->sample_rate, 22050);
  ASSERT_EQ(audio->samples.size(), 100u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_FLOAT_EQ(audio->samples[size_t(i)], (i * 100 - i * 50) / 2 / 32768.0f) << i;
  }
}

TEST(WavReaderTest, MissingAndGarbageFilesAreErrors) {
  testing::TempDir dir;
  EXPECT_EQ(ReadAudioFile(dir.File("none.wav")).status().code(), StatusCode::kNotFound);
  const std::string garbage = dir.File("garbage.wav");
  std::ofstream(garbage) << "this is not audio at all";
  auto result = ReadAudioFile(garbage);
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("garbage.wav"));
}

TEST(PcmTest, S16leRoundTripAndClipping) {
  const std::vector<float> values = {0.0f, 0.5f, -0.5f, 1.5f, -1.5f, 32767.0f / 32768.0f, -1.0f};
  const std::string bytes = FloatToS16le(values);
  ASSERT_EQ(bytes.size(), values.size() * 2);
  EXPECT_EQ(uint8_t(bytes[2]), 0x00);  // 0.5 -> 16384 = 0x4000, little-endian
  EXPECT_EQ(uint8_t(bytes[3]), 0x40);
  auto back = S16leToFloat(bytes);
  ASSERT_TRUE(back.ok());
  const std::vector<float> expected = {
      0.0f, 0.5f, -0.5f, 32767.0f / 32768.0f, -1.0f, 32767.0f / 32768.0f, -1.0f};
  EXPECT_EQ(*back, expected);
}

TEST(PcmTest, OddByteCountIsInvalid) {
  auto result = S16leToFloat(std::string("abc"));
  EXPECT_EQ(result.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("odd"));
}

}  // namespace
}  // namespace lipsync::audio
