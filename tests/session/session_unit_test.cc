// Pure parts of the session library: the silence gate, the WAV parser, the resampler
// wrapper, and espeak-ng run as a program (argument checks, timeout, real speech).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "config/config.h"
#include "session/espeak_tts.h"
#include "session/live_session.h"
#include "session/vad.h"

namespace lipsync::session {
namespace {

TEST(VadTest, FrameDbfs) {
  std::vector<int16_t> silence(640, 0);
  EXPECT_EQ(FrameDbfs(silence.data(), silence.size()), -200);
  std::vector<int16_t> square(640);
  for (size_t i = 0; i < square.size(); ++i) square[i] = (i % 2) ? 32767 : -32767;
  EXPECT_NEAR(FrameDbfs(square.data(), square.size()), 0, 0.01);
  std::vector<int16_t> quiet(640, 33);  // ~ -60 dBFS
  EXPECT_NEAR(FrameDbfs(quiet.data(), quiet.size()), -59.9, 0.2);
}

TEST(VadTest, GateBridgesShortGapsAndFadesAtEdges) {
  //                 0  1  2  3  4  5  6  7  8  9 10 11 12 13 14 15
  std::vector<bool> loud = {0, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0};
  GateOptions o;
  o.crossfade_frames = 3;
  o.bridge_frames = 2;
  const auto w = GateWeights(loud, 0, 16, o);
  EXPECT_FLOAT_EQ(w[7], 1.0f);  // one quiet frame inside speech is bridged
  EXPECT_FLOAT_EQ(w[5], 1.0f);
  EXPECT_FLOAT_EQ(w[9], 1.0f);
  EXPECT_FLOAT_EQ(w[4], 0.75f);
  EXPECT_FLOAT_EQ(w[3], 0.5f);
  EXPECT_FLOAT_EQ(w[2], 0.25f);
  EXPECT_FLOAT_EQ(w[1], 0.0f);
  EXPECT_FLOAT_EQ(w[10], 0.75f);
  EXPECT_FLOAT_EQ(w[13], 0.0f);
  // A window of a longer sequence; frames past the known audio count as quiet.
  const auto tail = GateWeights(loud, 8, 10, o);
  EXPECT_EQ(tail.size(), 10u);
  EXPECT_FLOAT_EQ(tail[0], 1.0f);
  EXPECT_FLOAT_EQ(tail[9], 0.0f);
  // No crossfade: hard edges.
  o.crossfade_frames = 0;
  const auto hard = GateWeights(loud, 0, 16, o);
  EXPECT_FLOAT_EQ(hard[4], 0.0f);
  EXPECT_FLOAT_EQ(hard[5], 1.0f);
}

std::string Wav(int rate, int channels, const std::vector<int16_t>& interleaved, bool streamed) {
  auto le32 = [](uint32_t v) {
    std::string s(4, '\0');
    for (int i = 0; i < 4; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xFF);
    return s;
  };
  auto le16 = [](uint16_t v) { return std::string{char(v & 0xFF), char(v >> 8)}; };
  const uint32_t data_bytes = uint32_t(interleaved.size() * 2);
  std::string w = "RIFF" + le32(streamed ? 0x7FFFFFFF : 36 + data_bytes) + "WAVE";
  w += "LIST" + le32(4) + "INFO";  // a chunk to skip
  w += "fmt " + le32(16) + le16(1) + le16(uint16_t(channels)) + le32(uint32_t(rate)) +
       le32(uint32_t(rate * channels * 2)) + le16(uint16_t(channels * 2)) + le16(16);
  w += "data" + le32(streamed ? 0x7FFFFFFF : data_bytes);
  w.append(reinterpret_cast<const char*>(interleaved.data()), data_bytes);
  return w;
}

TEST(WavTest, ParsesStreamedAndStereoWavs) {
  auto mono = ParseWavS16(Wav(22050, 1, {1, -2, 300}, /*streamed=*/true));
  ASSERT_TRUE(mono.ok()) << mono.status().ToString();
  EXPECT_EQ(mono->sample_rate, 22050);
  ASSERT_EQ(mono->pcm_s16le.size(), 6u);
  int16_t s[3];
  std::memcpy(s, mono->pcm_s16le.data(), 6);
  EXPECT_EQ(s[2], 300);
  auto stereo = ParseWavS16(Wav(8000, 2, {100, 300, -100, -301}, false));
  ASSERT_TRUE(stereo.ok());
  ASSERT_EQ(stereo->pcm_s16le.size(), 4u);
  std::memcpy(s, stereo->pcm_s16le.data(), 4);
  EXPECT_EQ(s[0], 200);
  EXPECT_EQ(s[1], -201);
  EXPECT_EQ(ParseWavS16("RIFF....WAVE").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseWavS16("garbage").status().code(), StatusCode::kInvalidArgument);
}

TEST(ResampleTest, KeepsDurationAndTone) {
  std::vector<int16_t> tone(22050);
  for (size_t i = 0; i < tone.size(); ++i) {
    tone[i] = int16_t(10000 * std::sin(2 * M_PI * 440 * double(i) / 22050));
  }
  std::string pcm(reinterpret_cast<const char*>(tone.data()), tone.size() * 2);
  for (int rate : {8000, 16000, 48000}) {
    auto out = ResampleS16(pcm, 22050, rate);
    ASSERT_TRUE(out.ok());
    EXPECT_EQ(out->size(), size_t(rate) * 2) << rate;
  }
  auto same = ResampleS16(pcm, 22050, 22050);
  ASSERT_TRUE(same.ok());
  EXPECT_EQ(*same, pcm);
}

TEST(EspeakTest, SpeaksAtTheRequestedRate) {
  auto r = SpeakText("Testing one two three.", "en-us", 16000);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->sample_rate, 16000);
  EXPECT_GT(r->seconds, 0.8);
  EXPECT_LT(r->seconds, 5.0);
  EXPECT_EQ(r->pcm_s16le.size() % 2, 0u);
  // Text that looks like options is only text (it goes through stdin).
  auto dash = SpeakText("--help -v xx", "", 48000);
  ASSERT_TRUE(dash.ok()) << dash.status().ToString();
  EXPECT_GT(dash->seconds, 0.3);
}

TEST(EspeakTest, RejectsBadInput) {
  EXPECT_EQ(SpeakText("", "", 16000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SpeakText(std::string(2001, 'a'), "", 16000).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE(
      SpeakText(std::string(2000, 'a'), "", 16000, {.timeout = std::chrono::milliseconds(1)})
          .status()
          .code() == StatusCode::kDeadlineExceeded);
  EXPECT_EQ(SpeakText("hi\x01", "", 16000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SpeakText("bad \xC3", "", 16000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SpeakText("hi", "-x", 16000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SpeakText("hi", "en us; rm", 16000).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(SpeakText("hi", "en-us", 11025).status().code(), StatusCode::kInvalidArgument);
  const auto unknown = SpeakText("hi", "nosuchvoice", 16000);
  EXPECT_EQ(unknown.status().code(), StatusCode::kInvalidArgument) << unknown.status().ToString();
  TtsOptions missing;
  missing.program = "/nonexistent/espeak-ng";
  EXPECT_EQ(SpeakText("hi", "", 16000, missing).status().code(), StatusCode::kNotFound);
  TtsOptions tiny;
  tiny.max_output_bytes = 1000;
  EXPECT_EQ(
      SpeakText("A longer sentence than a kilobyte of audio.", "", 16000, tiny).status().code(),
      StatusCode::kResourceExhausted);
}

TEST(SessionConfigTest, SessionSectionParsesAndMirrors) {
  const std::string yaml = R"(
session:
  max_sessions: 4
  max_buffered_seconds: 30
  max_chunk_seconds: 5
  max_ahead_frames: 2
  batch_frames: 6
  vad_threshold_dbfs: -50
  crossfade_frames: 4
  default_bitrate_kbps: 800
  vbv_buffer_ms: 500
  key_interval_frames: 25
  x264_preset: veryfast
  viewer_queue_frames: 20
)";
  auto c = config::ParseCompositingConfig(yaml, "c.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const SessionConfig s = FromConfig(*c);
  EXPECT_EQ(s.max_sessions, 4);
  EXPECT_EQ(s.max_buffered_seconds, 30);
  EXPECT_EQ(s.max_chunk_seconds, 5);
  EXPECT_EQ(s.max_ahead_frames, 2);
  EXPECT_EQ(s.batch_frames, 6);
  EXPECT_EQ(s.vad_threshold_dbfs, -50);
  EXPECT_EQ(s.crossfade_frames, 4);
  EXPECT_EQ(s.default_bitrate_kbps, 800);
  EXPECT_EQ(s.vbv_buffer_ms, 500);
  EXPECT_EQ(s.key_interval_frames, 25);
  EXPECT_EQ(s.x264_preset, "veryfast");
  EXPECT_EQ(s.viewer_queue_frames, 20);
  // Defaults without the section.
  auto d = config::ParseCompositingConfig("{}", "d.yaml");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(FromConfig(*d).max_sessions, 16);
  EXPECT_EQ(FromConfig(*d).batch_frames, 8);
  EXPECT_EQ(FromConfig(*d).vbv_buffer_ms, 250);
}

TEST(SessionConfigTest, OutOfRangeKeysNameThemselves) {
  for (const char* bad : {"session: {max_sessions: 0}", "session: {max_buffered_seconds: 0}",
                          "session: {max_buffered_seconds: 4000}", "session: {batch_frames: 65}",
                          "session: {vad_threshold_dbfs: 3}", "session: {x264_preset: slowest}",
                          "session: {crossfade_frames: -1}", "session: {vbv_buffer_ms: 5}", "session: {nonsense: 1}",
                          "server: {max_batch_size: 4}\nsession: {batch_frames: 8}"}) {
    auto c = config::ParseCompositingConfig(bad, "c.yaml");
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(c.status().message().find("session."), std::string::npos) << c.status().message();
  }
}

}  // namespace
}  // namespace lipsync::session
