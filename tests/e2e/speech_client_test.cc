// `lipsync client --audio X --save DIR` (the real binary, LIPSYNC_BINARY_DIR/lipsync)
// against both real servers started here: it streams the whole utterance and writes
// DIR/<model>.mp4 with one video frame per utterance frame and the speech as an audio
// stream (checked with ffprobe), for espeak-ng's 22.05 kHz mono WAV and for the same
// speech as 44.1 kHz stereo (converted with ffmpeg).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "audio/wav_reader.h"
#include "e2e/e2e_cluster.h"
#include "e2e/speech_fixture.h"

namespace lipsync::e2e {
namespace {

// Runs `command`, returns its exit status and (in *output) what it printed.
int RunShell(const std::string& command, std::string* output) {
  output->clear();
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return -1;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output->append(buffer, n);
  const int status = ::pclose(pipe);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct Probe {
  int video_frames = -1;
  int audio_streams = 0;
  double audio_seconds = 0;
  int width = 0, height = 0;
};

// ffprobe, counting decoded video frames rather than trusting the container header.
Probe ProbeVideo(const std::string& path) {
  Probe probe;
  std::string out;
  const int rc = RunShell(
      "ffprobe -v error -count_frames -show_entries "
      "stream=codec_type,nb_read_frames,duration,width,height -of compact=p=0 '" +
          path + "'",
      &out);
  EXPECT_EQ(rc, 0) << out;
  std::istringstream lines(out);
  std::string line;
  while (std::getline(lines, line)) {
    auto field = [&](const std::string& key) -> std::string {
      const size_t at = line.find(key + "=");
      if (at == std::string::npos) return "";
      const size_t begin = at + key.size() + 1;
      return line.substr(begin, line.find('|', begin) - begin);
    };
    if (field("codec_type") == "video") {
      probe.video_frames = std::atoi(field("nb_read_frames").c_str());
      probe.width = std::atoi(field("width").c_str());
      probe.height = std::atoi(field("height").c_str());
    } else if (field("codec_type") == "audio") {
      ++probe.audio_streams;
      probe.audio_seconds = std::atof(field("duration").c_str());
    }
  }
  return probe;
}

class SpeechClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(ModelRoot() / "speech_client");
    fs::create_directories(*dir_);
    spoken_ = Speak(
        "<speak>Hello there. <break time=\"400ms\"/> This is the lip sync "
        "client, speaking.</speak>",
        (*dir_ / "speech.wav").string());
  }
  static void TearDownTestSuite() { delete dir_; }

  // Streams `wav` with the binary and checks the saved MP4 against the WAV itself.
  void StreamAndCheck(const fs::path& wav, const std::string& name) {
    auto decoded = audio::ReadAudioFile(wav.string());
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    const double seconds = double(decoded->samples.size()) / decoded->sample_rate;
    const int per_frame = decoded->sample_rate / 25;
    const int expected_frames = int((decoded->samples.size() + per_frame - 1) / per_frame);

    Cluster cluster(Mode::kSplit);
    ASSERT_TRUE(cluster.ok());
    const fs::path save = *dir_ / name;
    const std::string command =
        std::string(LIPSYNC_BINARY_DIR) +
        "/lipsync client --server 127.0.0.1:" + std::to_string(cluster.compositing_port()) +
        " --model " + TalkingTenant() + " --audio '" + wav.string() +
        "' --batch-size 12 --quiet --save '" + save.string() + "'";
    std::string output;
    const int rc = RunShell(command, &output);
    ASSERT_EQ(rc, 0) << command << "\n" << output;
    EXPECT_NE(output.find("-> " + std::to_string(expected_frames) + " frames"), std::string::npos)
        << output;

    const fs::path mp4 = save / (TalkingTenant() + ".mp4");
    ASSERT_TRUE(fs::exists(mp4)) << output;
    const Probe probe = ProbeVideo(mp4.string());
    EXPECT_EQ(probe.video_frames, expected_frames) << "one video frame per utterance frame";
    EXPECT_EQ(probe.width, kWidth);
    EXPECT_EQ(probe.height, kHeight);
    EXPECT_EQ(probe.audio_streams, 1) << "the speech must be muxed in";
    EXPECT_NEAR(probe.audio_seconds, seconds, 0.1);
  }

  static fs::path* dir_;
  static bool spoken_;
};
fs::path* SpeechClientTest::dir_ = nullptr;
bool SpeechClientTest::spoken_ = false;

TEST_F(SpeechClientTest, SavesMp4WithSpeechAndOneFramePerUtteranceFrame) {
  ASSERT_TRUE(spoken_);
  StreamAndCheck(*dir_ / "speech.wav", "mono22k");
}

TEST_F(SpeechClientTest, StereoAt44100HzWorks) {
  ASSERT_TRUE(spoken_);
  const fs::path stereo = *dir_ / "speech_44k_stereo.wav";
  std::string out;
  ASSERT_EQ(RunShell("ffmpeg -v error -y -i '" + (*dir_ / "speech.wav").string() +
                         "' -ar 44100 -ac 2 -c:a pcm_s16le '" + stereo.string() + "'",
                     &out),
            0)
      << out;
  ASSERT_EQ(RunShell("ffprobe -v error -show_entries stream=sample_rate,channels -of csv=p=0 '" +
                         stereo.string() + "'",
                     &out),
            0);
  ASSERT_NE(out.find("44100,2"), std::string::npos) << out;
  StreamAndCheck(stereo, "stereo44k");
}

}  // namespace
}  // namespace lipsync::e2e
