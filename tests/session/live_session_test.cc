// Live sessions against a real CompositingServer calling an in-process InferenceServer
// (the e2e fixtures' "talking" demo tenant: 320x240, 8 frames, the demo lip-sync model
// with its audio encoder). A recording sink stands for the transport. Bounds on timing
// are loose (a loaded 2-core box): the assertions are on indices, timestamps, sample
// counts, events and counters.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "audio/resampler.h"
#include "e2e/e2e_cluster.h"
#include "e2e/speech_fixture.h"
#include "image/image.h"
#include "media/h264_test_util.h"
#include "session/espeak_tts.h"
#include "session/idle_loop_cache.h"
#include "session/live_session.h"

namespace lipsync::session {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct RecordedFrame {
  int64_t index = 0;
  int64_t pts_us = 0;
  bool key = false;
  bool speaking = false;
  std::string audio;
  std::string video;
  size_t video_bytes = 0;
  int background = 0;
  int64_t generation = 0;
};

class RecordingSink : public SessionSink {
 public:
  explicit RecordingSink(bool keep_video = false) : keep_video_(keep_video) {}

  bool OnFrame(OutputFrame frame) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (refuse_) {
      ++refused_;
      cv_.notify_all();
      return false;
    }
    RecordedFrame r;
    r.index = frame.index;
    r.pts_us = frame.pts_us;
    r.key = frame.key_frame;
    r.speaking = frame.speaking;
    r.audio = std::move(frame.audio);
    r.video_bytes = frame.video.size();
    if (keep_video_) r.video = std::move(frame.video);
    r.background = frame.background_index;
    r.generation = frame.generation;
    frames_.push_back(std::move(r));
    cv_.notify_all();
    return true;
  }
  void OnEvent(const SessionEvent& event) override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(event);
    cv_.notify_all();
  }

  void set_refuse(bool refuse) {
    std::lock_guard<std::mutex> lock(mu_);
    refuse_ = refuse;
  }
  bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 120s) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, pred);
  }
  bool WaitFrames(size_t n, std::chrono::milliseconds timeout = 60s) {
    return WaitFor([&] { return frames_.size() + size_t(refused_) >= n; }, timeout);
  }
  bool WaitEvent(EventKind kind, std::chrono::milliseconds timeout = 120s) {
    return WaitFor([&] { return CountLocked(kind) > 0; }, timeout);
  }
  std::vector<RecordedFrame> frames() const {
    std::lock_guard<std::mutex> lock(mu_);
    return frames_;
  }
  std::vector<SessionEvent> events() const {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  int64_t refused() const {
    std::lock_guard<std::mutex> lock(mu_);
    return refused_;
  }
  size_t frame_count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return frames_.size();
  }

 private:
  int CountLocked(EventKind kind) const {
    int n = 0;
    for (const auto& e : events_) n += e.kind == kind;
    return n;
  }
  const bool keep_video_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<RecordedFrame> frames_;
  std::vector<SessionEvent> events_;
  bool refuse_ = false;
  int64_t refused_ = 0;
};

// One in-process cluster for the whole binary (the servers are thread-safe), destroyed
// after the last test: its registries' background loads (a session's model prefetch)
// are joined before the process exits and ONNX Runtime's globals go.
e2e::Cluster*& ClusterSlot() {
  static e2e::Cluster* cluster = nullptr;
  return cluster;
}

class ClusterEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    delete ClusterSlot();
    ClusterSlot() = nullptr;
  }
};
[[maybe_unused]] const ::testing::Environment* const kClusterEnvironment =
    ::testing::AddGlobalTestEnvironment(new ClusterEnvironment);

e2e::Cluster& TheCluster() {
  e2e::Cluster*& cluster = ClusterSlot();
  if (cluster == nullptr) {
    e2e::TalkingTenant();
    cluster = new e2e::Cluster(e2e::Mode::kSingleProcess);
  }
  return *cluster;
}

SessionParams Params(int rate = 16000, int channels = 1,
                     media::Codec codec = media::Codec::kMjpeg) {
  SessionParams p;
  p.model_id = e2e::TalkingTenant();
  p.sample_rate = rate;
  p.channels = channels;
  p.codec = codec;
  return p;
}

// "Speech": a 150 Hz buzz with harmonics, syllable-like 4 Hz envelope, at `rate`, mono
// s16 samples; `lead`/`tail` seconds of silence around `seconds` of sound.
std::vector<int16_t> Buzz(int rate, double seconds, double lead = 0.2, double tail = 0.2) {
  const size_t n_lead = size_t(lead * rate), n = size_t(seconds * rate),
               n_tail = size_t(tail * rate);
  std::vector<int16_t> out(n_lead + n + n_tail, 0);
  for (size_t i = 0; i < n; ++i) {
    const double t = double(i) / rate;
    const double env = 0.55 + 0.45 * std::sin(2 * M_PI * 4 * t);
    double v = 0;
    for (int h = 1; h <= 5; ++h) v += std::sin(2 * M_PI * 150 * h * t) / h;
    out[n_lead + i] = int16_t(std::lround(6000 * env * v));
  }
  // Never an exact zero inside the sound, so that the continuity check can find it.
  for (size_t i = 0; i < n; ++i) {
    if (out[n_lead + i] == 0) out[n_lead + i] = 1;
  }
  return out;
}

std::string ToPcm(const std::vector<int16_t>& mono, int channels = 1) {
  std::string out;
  out.reserve(mono.size() * 2 * size_t(channels));
  for (int16_t s : mono) {
    for (int c = 0; c < channels; ++c) {
      out.push_back(char(uint16_t(s) & 0xFF));
      out.push_back(char(uint16_t(s) >> 8));
    }
  }
  return out;
}

std::vector<int16_t> FromPcm(const std::string& pcm) {
  std::vector<int16_t> out(pcm.size() / 2);
  std::memcpy(out.data(), pcm.data(), out.size() * 2);
  return out;
}

// All frames' audio in order.
std::vector<int16_t> AudioOut(const std::vector<RecordedFrame>& frames) {
  std::vector<int16_t> out;
  for (const auto& f : frames) {
    auto a = FromPcm(f.audio);
    out.insert(out.end(), a.begin(), a.end());
  }
  return out;
}

// The output audio is silence, then exactly `input` (from its first non-zero sample),
// then silence: nothing lost, repeated or shifted inside the speech.
void ExpectAudioCarried(const std::vector<int16_t>& input, const std::vector<int16_t>& output) {
  size_t in0 = 0;
  while (in0 < input.size() && input[in0] == 0) ++in0;
  size_t in1 = input.size();
  while (in1 > in0 && input[in1 - 1] == 0) --in1;
  size_t out0 = 0;
  while (out0 < output.size() && output[out0] == 0) ++out0;
  ASSERT_LT(in0, in1);
  ASSERT_LE(out0 + (in1 - in0), output.size()) << "the speech was not played out entirely";
  size_t mismatches = 0, first = 0;
  for (size_t i = 0; i < in1 - in0; ++i) {
    if (output[out0 + i] != input[in0 + i]) {
      if (mismatches++ == 0) first = i;
    }
  }
  EXPECT_EQ(mismatches, 0u) << "first mismatch at speech sample " << first;
  size_t nonzero_after = 0;
  for (size_t i = out0 + (in1 - in0); i < output.size(); ++i) nonzero_after += output[i] != 0;
  EXPECT_EQ(nonzero_after, 0u);
}

void ExpectContiguous(const std::vector<RecordedFrame>& frames, int rate, int fps = 25) {
  for (size_t i = 0; i < frames.size(); ++i) {
    ASSERT_EQ(frames[i].index, int64_t(i));
    ASSERT_EQ(frames[i].pts_us, int64_t(i) * 1000000 / fps);
    ASSERT_EQ(frames[i].audio.size(), size_t(rate / fps) * 2) << "frame " << i;
    ASSERT_GT(frames[i].video_bytes, 0u) << "frame " << i;
  }
}

int CountEvents(const std::vector<SessionEvent>& events, EventKind kind) {
  int n = 0;
  for (const auto& e : events) n += e.kind == kind;
  return n;
}

// ---------------------------------------------------------------------------

TEST(LiveSessionTest, IdleFramesFlowAtFpsWithSilenceAndNoInference) {
  for (media::Codec codec : {media::Codec::kMjpeg, media::Codec::kH264}) {
    SCOPED_TRACE(media::CodecName(codec));
    RecordingSink sink;
    const auto t0 = std::chrono::steady_clock::now();
    auto session =
        LiveSession::Start(Params(16000, 1, codec), SessionConfig{}, TheCluster().server(), &sink);
    ASSERT_TRUE(session.ok()) << session.status().ToString();
    EXPECT_EQ((*session)->info().width, e2e::kWidth);
    EXPECT_EQ((*session)->info().height, e2e::kHeight);
    EXPECT_EQ((*session)->info().lookahead_frames, 13);
    ASSERT_TRUE(sink.WaitFrames(30));
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    // ~25 fps: never more than the clock allows (+ the frames sent ahead).
    EXPECT_LE(30.0, elapsed * 25 + SessionConfig{}.max_ahead_frames + 2);
    const SessionStats stats = (*session)->stats();
    (*session)->Cancel();
    const auto frames = sink.frames();
    ExpectContiguous(frames, 16000);
    EXPECT_TRUE(frames[0].key);
    for (const auto& f : frames) {
      EXPECT_FALSE(f.speaking);
      for (char c : f.audio) ASSERT_EQ(c, 0) << "idle audio is silence";
      // Ping-pong over the avatar's 8 frames: 0..7, 6..0, ...
      const int64_t p = f.index % 14;
      EXPECT_EQ(f.background, p < 8 ? p : 14 - p);
    }
    EXPECT_EQ(stats.inference_batches, 0);
    EXPECT_EQ(stats.speaking_frames, 0);
    EXPECT_EQ(stats.audio_samples_out, stats.frames_sent * 16000 / 25);
    EXPECT_TRUE(sink.events().empty());
  }
}

TEST(LiveSessionTest, SilentAudioRunsNoInference) {
  RecordingSink sink;
  auto session = LiveSession::Start(Params(), SessionConfig{}, TheCluster().server(), &sink);
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  // A microphone in a quiet room: 2 s of near silence (-70 dBFS noise).
  std::vector<int16_t> quiet(32000);
  for (size_t i = 0; i < quiet.size(); ++i) quiet[i] = int16_t((i * 7919) % 21) - 10;
  ASSERT_TRUE((*session)->PushAudio(ToPcm(quiet)).ok());
  (*session)->Close();
  ASSERT_TRUE(sink.WaitEvent(EventKind::kClosed));
  EXPECT_EQ((*session)->stats().inference_batches, 0);
  EXPECT_EQ((*session)->stats().speaking_frames, 0);
  ExpectAudioCarried(quiet, AudioOut(sink.frames()));
}

TEST(LiveSessionTest, SpeechMakesSpeakingFramesEventsAndCarriesItsAudioExactly) {
  RecordingSink sink(/*keep_video=*/true);
  auto session = LiveSession::Start(Params(16000, 1, media::Codec::kMjpeg), SessionConfig{},
                                    TheCluster().server(), &sink);
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  ASSERT_TRUE(sink.WaitFrames(5));
  auto tts = SpeakText("The quick brown fox jumps over the lazy dog.", "en-us", 16000);
  ASSERT_TRUE(tts.ok()) << tts.status().ToString();
  const auto speech = FromPcm(tts->pcm_s16le);
  ASSERT_TRUE((*session)->PushAudio(ToPcm(speech)).ok());
  (*session)->EndOfSpeech();
  ASSERT_TRUE(sink.WaitEvent(EventKind::kSpeechEnded));
  ASSERT_TRUE(sink.WaitFrames(sink.frame_count() + 5));
  const SessionStats stats = (*session)->stats();
  (*session)->Cancel();
  const auto frames = sink.frames();
  ExpectContiguous(frames, 16000);
  ExpectAudioCarried(speech, AudioOut(frames));
  EXPECT_GT(stats.inference_batches, 0);
  EXPECT_GE(stats.speaking_frames, int64_t(tts->seconds * 25 * 0.6));
  const auto events = sink.events();
  ASSERT_GE(CountEvents(events, EventKind::kSpeechStarted), 1);
  ASSERT_GE(CountEvents(events, EventKind::kSpeechEnded), 1);
  int64_t started = -1, ended = -1;
  for (const auto& e : events) {
    if (e.kind == EventKind::kSpeechStarted && started < 0) started = e.frame_index;
    if (e.kind == EventKind::kSpeechEnded) ended = e.frame_index;
  }
  ASSERT_GE(started, 0);
  ASSERT_GT(ended, started);
  EXPECT_TRUE(frames[size_t(started)].speaking);
  EXPECT_FALSE(frames[size_t(started) - 1].speaking);
  EXPECT_FALSE(frames[size_t(ended)].speaking);
  // Speaking frames carry the speech: the sound starts at most crossfade frames after
  // the first speaking frame.
  size_t first_sound = 0;
  while (first_sound < frames.size() &&
         std::all_of(frames[first_sound].audio.begin(), frames[first_sound].audio.end(),
                     [](char c) { return c == 0; })) {
    ++first_sound;
  }
  EXPECT_LE(size_t(started), first_sound);
  EXPECT_LE(first_sound, size_t(started) + 3 + 1);
  // The mouth moves on speaking frames and is closed on idle ones.
  int open_speaking = 0, open_idle = 0;
  for (const auto& f : frames) {
    auto rgb = image::DecodeJpeg(f.video);
    ASSERT_TRUE(rgb.ok());
    const image::Image bg = e2e::TenantBackground(e2e::TalkingTenant(), f.background);
    const int opening =
        e2e::MouthOpening(*rgb, bg, e2e::TenantRect(e2e::TalkingTenant(), f.background));
    if (f.speaking) open_speaking += opening > 0;
    if (!f.speaking) open_idle += opening > 0;
  }
  EXPECT_GT(open_speaking, 10) << "repeated " << stats.repeated_frames << " speaking "
                               << stats.speaking_frames << " batches " << stats.inference_batches;
  EXPECT_EQ(open_idle, 0);
}

TEST(LiveSessionTest, EveryRateAndStereoKeepTheSampleClock) {
  struct Run {
    int rate;
    int channels;
    std::unique_ptr<RecordingSink> sink;
    std::unique_ptr<LiveSession> session;
    std::vector<int16_t> speech;
  };
  // Mono and stereo of one rate side by side (two sessions share the inference server).
  for (int rate : audio::kSupportedSampleRates) {
    std::vector<Run> runs;
    for (int channels : {1, 2}) {
      Run run{rate, channels, std::make_unique<RecordingSink>(), nullptr, Buzz(rate, 0.8)};
      auto session = LiveSession::Start(Params(rate, channels), SessionConfig{},
                                        TheCluster().server(), run.sink.get());
      ASSERT_TRUE(session.ok()) << rate << " Hz: " << session.status().ToString();
      EXPECT_EQ((*session)->info().audio_sample_rate, rate);
      run.session = std::move(*session);
      runs.push_back(std::move(run));
    }
    for (auto& run : runs) {
      std::string pcm = ToPcm(run.speech, run.channels);
      if (run.channels == 2) {
        // Different channels: the session averages them.
        for (size_t s = 0; s < run.speech.size(); ++s) {
          const int16_t l = int16_t(run.speech[s] + 2), r = int16_t(run.speech[s] - 2);
          std::memcpy(&pcm[4 * s], &l, 2);
          std::memcpy(&pcm[4 * s + 2], &r, 2);
        }
      }
      ASSERT_TRUE(run.session->PushAudio(pcm).ok());
      run.session->Close();
    }
    for (auto& run : runs) {
      SCOPED_TRACE(std::to_string(run.rate) + " Hz x" + std::to_string(run.channels));
      ASSERT_TRUE(run.sink->WaitEvent(EventKind::kClosed));
      const auto frames = run.sink->frames();
      ExpectContiguous(frames, run.rate);
      ExpectAudioCarried(run.speech, AudioOut(frames));
      const SessionStats stats = run.session->stats();
      EXPECT_EQ(stats.audio_samples_out, stats.frames_sent * run.rate / 25);
      EXPECT_GT(stats.inference_batches, 0);
      EXPECT_GT(stats.speaking_frames + stats.repeated_frames, 0);
      EXPECT_EQ(run.session->buffered_seconds(), 0);
    }
  }
}

TEST(LiveSessionTest, ChunkSizesFrom10msTo10sAndRealTimePace) {
  const int rate = 24000;
  const auto speech = Buzz(rate, 1.0);
  struct Case {
    const char* name;
    size_t chunk;
    bool real_time;
  };
  for (const Case c : {Case{"10 ms, fast", size_t(rate / 100), false},
                       Case{"333 ms, fast", size_t(rate / 3), false},
                       Case{"40 ms, real time", size_t(rate / 25), true}}) {
    SCOPED_TRACE(c.name);
    RecordingSink sink;
    auto session = LiveSession::Start(Params(rate), SessionConfig{}, TheCluster().server(), &sink);
    ASSERT_TRUE(session.ok());
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t off = 0; off < speech.size(); off += c.chunk) {
      std::vector<int16_t> part(speech.begin() + long(off),
                                speech.begin() + long(std::min(speech.size(), off + c.chunk)));
      ASSERT_TRUE((*session)->PushAudio(ToPcm(part)).ok());
      if (c.real_time) {
        std::this_thread::sleep_until(
            t0 + std::chrono::microseconds(int64_t((off + c.chunk) * 1e6 / rate)));
      }
    }
    (*session)->Close();
    ASSERT_TRUE(sink.WaitEvent(EventKind::kClosed));
    const auto frames = sink.frames();
    ExpectContiguous(frames, rate);
    if (c.real_time) {
      // Real-time input may pause the speech while waiting for the speaker (held
      // frames); the audio is still carried in order with nothing lost.
      auto out = AudioOut(frames);
      std::vector<int16_t> compact;
      for (int16_t s : out) {
        if (s != 0) compact.push_back(s);
      }
      std::vector<int16_t> expected;
      for (int16_t s : speech) {
        if (s != 0) expected.push_back(s);
      }
      EXPECT_EQ(compact, expected);
    } else {
      ExpectAudioCarried(speech, AudioOut(frames));
      EXPECT_EQ((*session)->stats().held_frames, 0);
    }
    EXPECT_GT((*session)->stats().speaking_frames, 0);
  }
  // One 10 s chunk is accepted (session.max_chunk_seconds).
  RecordingSink sink;
  auto session = LiveSession::Start(Params(8000), SessionConfig{}, TheCluster().server(), &sink);
  ASSERT_TRUE(session.ok());
  EXPECT_TRUE((*session)->PushAudio(std::string(size_t(8000 * 10 * 2), '\0')).ok());
  EXPECT_NEAR((*session)->buffered_seconds(), 10.0, 0.2);
}

TEST(LiveSessionTest, InterruptMidBatchGoesIdleAtOnceWithAKeyFrame) {
  std::mutex mu;
  std::condition_variable cv;
  bool in_batch = false, release = false;
  SessionHooks hooks;
  hooks.before_infer = [&](int64_t, int64_t, int) {
    std::unique_lock<std::mutex> lock(mu);
    in_batch = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
  };
  RecordingSink sink;
  auto session = LiveSession::Start(Params(16000, 1, media::Codec::kH264), SessionConfig{},
                                    TheCluster().server(), &sink, hooks);
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  ASSERT_TRUE((*session)->PushAudio(ToPcm(Buzz(16000, 4.0, 0, 0))).ok());
  {
    std::unique_lock<std::mutex> lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 60s, [&] { return in_batch; }));
  }
  EXPECT_GT((*session)->buffered_seconds(), 3.0);
  (*session)->Interrupt();
  EXPECT_EQ((*session)->buffered_seconds(), 0);
  ASSERT_TRUE(sink.WaitEvent(EventKind::kInterrupted));
  {
    std::lock_guard<std::mutex> lock(mu);
    release = true;
    cv.notify_all();
  }
  const size_t seen = sink.frame_count();
  ASSERT_TRUE(sink.WaitFrames(seen + 15));
  (*session)->Cancel();
  const auto frames = sink.frames();
  ExpectContiguous(frames, 16000);
  int64_t interrupted = -1;
  for (const auto& e : sink.events()) {
    if (e.kind == EventKind::kInterrupted) interrupted = e.frame_index;
  }
  ASSERT_GE(interrupted, 0);
  ASSERT_LT(size_t(interrupted), frames.size());
  const auto& first_idle = frames[size_t(interrupted)];
  EXPECT_TRUE(first_idle.key) << "the first frame after an interrupt is a key frame";
  EXPECT_EQ(first_idle.generation, 1);
  for (size_t k = size_t(interrupted); k < frames.size(); ++k) {
    EXPECT_FALSE(frames[k].speaking) << "frame " << k << ": the late batch must be dropped";
    for (char c : frames[k].audio) ASSERT_EQ(c, 0) << "frame " << k << " after the interrupt";
  }
  EXPECT_EQ((*session)->stats().generation, 1);
  // The session takes new speech afterwards.
}

TEST(LiveSessionTest, SpeechAfterInterruptPlaysAgain) {
  RecordingSink sink;
  auto session = LiveSession::Start(Params(), SessionConfig{}, TheCluster().server(), &sink);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->PushAudio(ToPcm(Buzz(16000, 3.0))).ok());
  ASSERT_TRUE(sink.WaitEvent(EventKind::kSpeechStarted));
  (*session)->Interrupt();
  ASSERT_TRUE(sink.WaitEvent(EventKind::kInterrupted));
  const auto speech = Buzz(16000, 0.8);
  ASSERT_TRUE((*session)->PushAudio(ToPcm(speech)).ok());
  (*session)->Close();
  ASSERT_TRUE(sink.WaitEvent(EventKind::kClosed));
  auto frames = sink.frames();
  int64_t interrupted = -1;
  for (const auto& e : sink.events()) {
    if (e.kind == EventKind::kInterrupted) interrupted = e.frame_index;
  }
  ASSERT_GE(interrupted, 0);
  std::vector<RecordedFrame> after(frames.begin() + interrupted, frames.end());
  ExpectAudioCarried(speech, AudioOut(after));
  int speaking_after = 0;
  for (const auto& f : after) speaking_after += f.speaking;
  EXPECT_GT(speaking_after, 10);
}

TEST(LiveSessionTest, BufferLimitAnswersResourceExhaustedAndTakesNothing) {
  SessionConfig config;
  config.max_buffered_seconds = 2;
  RecordingSink sink;
  auto session = LiveSession::Start(Params(), config, TheCluster().server(), &sink);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->PushAudio(std::string(size_t(16000 * 3 / 2 * 2), '\1')).ok());
  const double before = (*session)->buffered_seconds();
  const Status full = (*session)->PushAudio(std::string(size_t(16000 * 2), '\1'));
  EXPECT_EQ(full.code(), StatusCode::kResourceExhausted) << full.ToString();
  EXPECT_NE(full.message().find("max_buffered_seconds"), std::string::npos) << full.message();
  EXPECT_LE((*session)->buffered_seconds(), before);
}

TEST(LiveSessionTest, BadChunksAreInvalidArgument) {
  RecordingSink sink;
  auto mono = LiveSession::Start(Params(), SessionConfig{}, TheCluster().server(), &sink);
  ASSERT_TRUE(mono.ok());
  EXPECT_EQ((*mono)->PushAudio(std::string(3, '\0')).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*mono)->PushAudio(std::string(size_t(16000 * 11 * 2), '\0')).code(),
            StatusCode::kInvalidArgument);
  EXPECT_TRUE((*mono)->PushAudio(std::string()).ok());
  (*mono)->Close();
  EXPECT_EQ((*mono)->PushAudio(std::string(640, '\0')).code(), StatusCode::kInvalidArgument);

  RecordingSink sink2;
  auto stereo =
      LiveSession::Start(Params(16000, 2), SessionConfig{}, TheCluster().server(), &sink2);
  ASSERT_TRUE(stereo.ok());
  const Status half = (*stereo)->PushAudio(std::string(6, '\0'));
  EXPECT_EQ(half.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(half.message().find("multiple of 4"), std::string::npos) << half.message();
  EXPECT_TRUE((*stereo)->PushAudio(std::string(8, '\0')).ok());
}

TEST(LiveSessionTest, StartValidatesParamsAndModel) {
  RecordingSink sink;
  auto& server = TheCluster().server();
  auto unknown = Params();
  unknown.model_id = "no_such_avatar";
  auto r = LiveSession::Start(unknown, SessionConfig{}, server, &sink);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound) << r.status().ToString();

  auto bad = [&](std::function<void(SessionParams&)> edit, const char* needle) {
    SessionParams p = Params();
    edit(p);
    auto s = LiveSession::Start(p, SessionConfig{}, server, &sink);
    ASSERT_FALSE(s.ok()) << needle;
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << s.status().ToString();
    EXPECT_NE(s.status().message().find(needle), std::string::npos) << s.status().message();
  };
  bad([](SessionParams& p) { p.sample_rate = 11025; }, "11025");
  bad([](SessionParams& p) { p.channels = 3; }, "channels");
  bad([](SessionParams& p) { p.fps = 30; }, "fps");
  bad([](SessionParams& p) { p.lookahead_frames = 14; }, "lookahead_frames");
  bad([](SessionParams& p) { p.jpeg_quality = 101; }, "jpeg_quality");
  bad([](SessionParams& p) { p.model_id = ""; }, "model_id");
  EXPECT_TRUE(sink.frames().empty());
}

TEST(LiveSessionTest, CloseFinishesQueuedSpeechThenEnds) {
  RecordingSink sink;
  auto session = LiveSession::Start(Params(22050), SessionConfig{}, TheCluster().server(), &sink);
  ASSERT_TRUE(session.ok());
  const auto speech = Buzz(22050, 1.2);
  ASSERT_TRUE((*session)->PushAudio(ToPcm(speech)).ok());
  (*session)->Close();
  (*session)->Wait();
  EXPECT_TRUE((*session)->done());
  const auto events = sink.events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().kind, EventKind::kClosed);
  ExpectAudioCarried(speech, AudioOut(sink.frames()));
}

TEST(LiveSessionTest, CancelStopsAtOnce) {
  RecordingSink sink;
  auto session = LiveSession::Start(Params(), SessionConfig{}, TheCluster().server(), &sink);
  ASSERT_TRUE(session.ok());
  ASSERT_TRUE((*session)->PushAudio(ToPcm(Buzz(16000, 8.0))).ok());
  ASSERT_TRUE(sink.WaitFrames(10));
  (*session)->Cancel();
  EXPECT_TRUE((*session)->done());
  EXPECT_EQ((*session)->buffered_seconds(), 0);
  const size_t after_cancel = sink.frame_count();
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(sink.frame_count(), after_cancel) << "no frame after Cancel returned";
  EXPECT_EQ((*session)->PushAudio(std::string(640, '\0')).code(), StatusCode::kFailedPrecondition);
}

TEST(LiveSessionTest, StalledViewerDropsItsFramesOnlyAndRestartsWithAKeyFrame) {
  RecordingSink stalled, healthy;
  stalled.set_refuse(true);
  auto a = LiveSession::Start(Params(16000, 1, media::Codec::kH264), SessionConfig{},
                              TheCluster().server(), &stalled);
  auto b = LiveSession::Start(Params(16000, 1, media::Codec::kH264), SessionConfig{},
                              TheCluster().server(), &healthy);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE((*a)->PushAudio(ToPcm(Buzz(16000, 1.0))).ok());
  ASSERT_TRUE((*b)->PushAudio(ToPcm(Buzz(16000, 1.0))).ok());
  ASSERT_TRUE(healthy.WaitFrames(40));
  const SessionStats sa = (*a)->stats();
  EXPECT_GT(sa.dropped_frames, 20);
  EXPECT_EQ(sa.dropped_frames, sa.frames_sent);
  EXPECT_EQ((*b)->stats().dropped_frames, 0);
  ExpectContiguous(healthy.frames(), 16000);
  // The viewer recovers: its next frame is a key frame.
  stalled.set_refuse(false);
  ASSERT_TRUE(stalled.WaitFrames(size_t(stalled.refused()) + 3));
  const auto got = stalled.frames();
  ASSERT_FALSE(got.empty());
  EXPECT_TRUE(got.front().key);
}

TEST(LiveSessionTest, SessionLimiterCountsSlots) {
  SessionLimiter limiter(2);
  auto one = limiter.Acquire();
  auto two = limiter.Acquire();
  ASSERT_TRUE(one.ok() && two.ok());
  auto three = limiter.Acquire();
  ASSERT_FALSE(three.ok());
  EXPECT_EQ(three.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(three.status().message().find("max_sessions = 2"), std::string::npos);
  EXPECT_EQ(limiter.active(), 2);
  one->reset();
  EXPECT_EQ(limiter.active(), 1);
  EXPECT_TRUE(limiter.Acquire().ok());
}

TEST(LiveSessionTest, SpokenTextThroughEspeak) {
  RecordingSink sink;
  auto session = LiveSession::Start(Params(24000), SessionConfig{}, TheCluster().server(), &sink);
  ASSERT_TRUE(session.ok());
  auto tts = SpeakText("Hello there, this is a live session.", "en-us", 24000);
  ASSERT_TRUE(tts.ok()) << tts.status().ToString();
  EXPECT_EQ(tts->sample_rate, 24000);
  EXPECT_GT(tts->seconds, 1.0);
  ASSERT_TRUE((*session)->PushAudio(tts->pcm_s16le).ok());
  (*session)->Close();
  ASSERT_TRUE(sink.WaitEvent(EventKind::kClosed));
  ExpectAudioCarried(FromPcm(tts->pcm_s16le), AudioOut(sink.frames()));
  EXPECT_GT((*session)->stats().speaking_frames, 20);
  EXPECT_GE(CountEvents(sink.events(), EventKind::kSpeechStarted), 1);
}

}  // namespace
}  // namespace lipsync::session

namespace lipsync::session {
namespace {

// The production defaults: region JPEG with compact backgrounds (the avatar keeps each
// frame's JPEG and only the crop region's pixels). MJPEG idle frames are then the
// avatar's cached JPEG as is; H.264 idle frames are built from it.
TEST(LiveSessionCompactTest, IdleFramesFromCachedJpegsAndSpeechInH264) {
  config::CompositingConfig c = e2e::CompositingTestConfig();
  c.output.region_jpeg = true;
  c.output.compact_backgrounds = true;
  e2e::TalkingTenant();
  e2e::Cluster cluster(e2e::Mode::kSingleProcess, c);
  ASSERT_TRUE(cluster.ok());
  RecordingSink mjpeg_sink(/*keep_video=*/true);
  auto mjpeg = LiveSession::Start(Params(), SessionConfig{}, cluster.server(), &mjpeg_sink);
  ASSERT_TRUE(mjpeg.ok()) << mjpeg.status().ToString();
  RecordingSink h264_sink;
  auto h264 = LiveSession::Start(Params(16000, 1, media::Codec::kH264), SessionConfig{},
                                 cluster.server(), &h264_sink);
  ASSERT_TRUE(h264.ok()) << h264.status().ToString();
  ASSERT_TRUE(mjpeg_sink.WaitFrames(16));
  auto avatar = cluster.server().avatars().Acquire(e2e::TalkingTenant());
  ASSERT_TRUE(avatar.ok());
  for (const auto& f : mjpeg_sink.frames()) {
    auto bg = (*avatar)->Frame(f.background);
    ASSERT_TRUE(bg.ok());
    ASSERT_TRUE((*bg)->jpeg != nullptr);
    EXPECT_EQ(f.video, (*bg)->jpeg->background_jpeg()) << "frame " << f.index;
  }
  auto tts = SpeakText("One two three four five.", "en-us", 16000);
  ASSERT_TRUE(tts.ok());
  ASSERT_TRUE((*h264)->PushAudio(tts->pcm_s16le).ok());
  (*h264)->Close();
  ASSERT_TRUE(h264_sink.WaitEvent(EventKind::kClosed));
  ExpectContiguous(h264_sink.frames(), 16000);
  ExpectAudioCarried(FromPcm(tts->pcm_s16le), AudioOut(h264_sink.frames()));
  EXPECT_GT((*h264)->stats().speaking_frames, 10);
  EXPECT_EQ((*mjpeg)->stats().inference_batches, 0);
}

// Idle H.264 from the shared idle loop cache: the session replays the cached loop once
// it is built (entered at a cached key frame, in order), leaves it for speech with a
// live key frame (never right after a cached key frame), comes back to it after the
// speech, and the whole stream decodes with ffmpeg to one picture per frame.
TEST(LiveSessionIdleLoopTest, CachedIdleLoopDecodesAndSpeechStartsWithAKeyFrame) {
  IdleLoopCache cache(size_t(64) << 20);
  SessionHooks hooks;
  hooks.idle_loop_cache = &cache;
  SessionConfig config;
  config.key_interval_frames = 5;  // the demo loop is 14 frames: key frames at 0, 5, 10
  RecordingSink sink(/*keep_video=*/true);
  auto session = LiveSession::Start(Params(16000, 1, media::Codec::kH264), config,
                                    TheCluster().server(), &sink, hooks);
  ASSERT_TRUE(session.ok()) << session.status().ToString();
  ASSERT_TRUE(sink.WaitFor([&] { return (*session)->stats().cached_idle_frames >= 30; }));
  EXPECT_EQ(cache.loops(), 1);
  ASSERT_TRUE((*session)->PushAudio(ToPcm(Buzz(16000, 1.5))).ok());
  (*session)->EndOfSpeech();
  ASSERT_TRUE(sink.WaitEvent(EventKind::kSpeechEnded));
  const int64_t cached_before = (*session)->stats().cached_idle_frames;
  ASSERT_TRUE(
      sink.WaitFor([&] { return (*session)->stats().cached_idle_frames >= cached_before + 20; }));
  (*session)->Cancel();
  const auto frames = sink.frames();
  ExpectContiguous(frames, 16000);

  // Which frames were replayed from the loop: equal to the cached access unit.
  auto avatar = TheCluster().server().avatars().Acquire(e2e::TalkingTenant());
  ASSERT_TRUE(avatar.ok());
  media::EncoderOptions eo;
  eo.width = (*session)->info().width;
  eo.height = (*session)->info().height;
  eo.bitrate_kbps = config.default_bitrate_kbps;
  eo.key_interval_frames = config.key_interval_frames;
  eo.preset = config.x264_preset;
  eo.threads = 1;
  eo.jpeg_quality = TheCluster().server().config().output.jpeg_quality;
  IdleLoopCache::State state;
  auto loop = cache.Get(*avatar, eo, &state);
  ASSERT_TRUE(loop != nullptr);
  ASSERT_EQ(loop->frames.size(), size_t(PingPongPeriod((*avatar)->num_frames())));
  std::vector<bool> cached(frames.size());
  for (size_t i = 0; i < frames.size(); ++i) {
    cached[i] = frames[i].video == loop->frames[i % loop->frames.size()].data;
  }
  int entries = 0, exits = 0, first_speaking = -1;
  for (size_t i = 1; i < frames.size(); ++i) {
    if (cached[i] && !cached[i - 1]) {
      ++entries;
      EXPECT_TRUE(frames[i].key) << "entered the loop at frame " << i << " (not a key frame)";
    }
    if (!cached[i] && cached[i - 1]) {
      ++exits;
      EXPECT_TRUE(frames[i].key) << "left the loop at frame " << i << " without a key frame";
      EXPECT_FALSE(frames[i - 1].key) << "left the loop right after a cached key frame " << i;
      bool idr = false;
      for (auto nal : media::SplitAnnexB(frames[i].video)) idr |= media::NalUnitType(nal) == 5;
      EXPECT_TRUE(idr) << "frame " << i;
    }
    if (frames[i].speaking && first_speaking < 0) first_speaking = int(i);
  }
  // After the speech at least (the first frames, encoded live by a fresh encoder of
  // the same options, can equal the cached ones byte for byte).
  EXPECT_GE(entries, 1);
  EXPECT_GE(exits, 1);
  ASSERT_GT(first_speaking, 0);
  EXPECT_FALSE(cached[size_t(first_speaking)]);
  for (size_t i = 0; i < frames.size(); ++i) {
    if (frames[i].speaking) {
      EXPECT_FALSE(cached[i]) << "frame " << i;
    }
  }
  // A live stretch (speech) starts with a key frame: the last key frame at or before the
  // first speaking frame is not a cached one.
  int64_t last_key = -1;
  for (int i = first_speaking; i >= 0; --i) {
    if (frames[size_t(i)].key) {
      last_key = i;
      break;
    }
  }
  ASSERT_GE(last_key, 0);
  EXPECT_FALSE(cached[size_t(last_key)]);

  std::string stream;
  for (const auto& f : frames) stream += f.video;
  std::vector<uint8_t> rgb;
  std::string error;
  ASSERT_TRUE(media::testing::DecodeWithFfmpeg(stream, eo.width, eo.height, &rgb, &error)) << error;
  EXPECT_EQ(rgb.size() / (size_t(eo.width) * eo.height * 3), frames.size());
}

// PSNR of a rect of two RGB images.
double RectPsnr(const image::Image& a, const image::Image& b, const avatar::CropRect& r) {
  double se = 0;
  int64_t n = 0;
  for (int y = r.y1; y < r.y2; ++y) {
    for (int x = r.x1 * 3; x < r.x2 * 3; ++x) {
      const double d = double(a.row(y)[x]) - double(b.row(y)[x]);
      se += d * d;
      ++n;
    }
  }
  if (se == 0) return 99;
  return 10 * std::log10(255.0 * 255.0 / (se / double(n)));
}

// The quality cost of a shorter audio lookahead (lower latency for real-time input):
// the same speech, sent at once without END_OF_SPEECH, with lookahead 13 (the
// reference: features equal to the whole utterance's) and fewer frames; PSNR of the
// crop region of each speaking frame against the reference, on an avatar whose frames
// are all the same picture (so that only the mouth differs). Printed for the docs;
// asserted only loosely.
TEST(LiveSessionLookaheadTest, MouthRegionPsnrAgainstFullLookahead) {
  e2e::TalkingTenant();
  const fs::path still = e2e::ModelRoot() / "talking_still";
  if (!fs::exists(still)) {
    fs::copy(e2e::ModelRoot() / "talking", still, fs::copy_options::recursive);
    fs::path first;
    for (const auto& e : fs::directory_iterator(still / "frames")) {
      if (e.path().filename().string().rfind("frame_0000", 0) == 0) first = e.path();
    }
    ASSERT_FALSE(first.empty());
    for (const auto& e : fs::directory_iterator(still / "frames")) {
      if (e.path() != first) fs::copy_file(first, e.path(), fs::copy_options::overwrite_existing);
    }
  }
  auto tts = SpeakText("The quick brown fox jumps over the lazy dog. Hello there.", "en-us", 16000);
  ASSERT_TRUE(tts.ok());
  const auto speech = FromPcm(tts->pcm_s16le);
  // The lower half of the face crop: the mouth and chin.
  avatar::CropRect rect = e2e::TenantRect("talking_still", 0);
  rect.y1 = (rect.y1 + rect.y2) / 2;
  // Frames of the utterance, decoded, by utterance frame index.
  auto run = [&](int lookahead) {
    RecordingSink sink(/*keep_video=*/true);
    SessionParams p = Params();
    p.model_id = "talking_still";
    p.lookahead_frames = lookahead;
    p.jpeg_quality = 95;
    auto session = LiveSession::Start(p, SessionConfig{}, TheCluster().server(), &sink);
    EXPECT_TRUE(session.ok()) << session.status().ToString();
    std::vector<std::pair<bool, image::Image>> frames;
    if (!session.ok()) return frames;
    EXPECT_TRUE((*session)->PushAudio(tts->pcm_s16le).ok());
    // No END_OF_SPEECH: batches are cut as audio with `lookahead` frames after them
    // exists; the tail ends after the silence gap. Then close.
    EXPECT_TRUE(sink.WaitFor([&] { return (*session)->buffered_seconds() == 0; }));
    (*session)->Close();
    EXPECT_TRUE(sink.WaitEvent(EventKind::kClosed));
    const auto out = sink.frames();
    const auto audio = AudioOut(out);
    size_t in0 = 0, out0 = 0;
    while (in0 < speech.size() && speech[in0] == 0) ++in0;
    while (out0 < audio.size() && audio[out0] == 0) ++out0;
    const size_t start_frame = (out0 - in0) / 640;
    EXPECT_EQ((out0 - in0) % 640, 0u);
    for (size_t k = start_frame; k < out.size(); ++k) {
      auto rgb = image::DecodeJpeg(out[k].video);
      EXPECT_TRUE(rgb.ok());
      if (rgb.ok()) frames.emplace_back(out[k].speaking, std::move(*rgb));
    }
    // A late batch (a loaded box) repeats a frame; it only lowers that frame's PSNR.
    if ((*session)->stats().repeated_frames > 0) {
      std::printf("lookahead %d: %lld frame(s) repeated\n", lookahead,
                  static_cast<long long>((*session)->stats().repeated_frames));
    }
    return frames;
  };
  run(13);  // warm-up: the model's first runs are slower
  const auto reference = run(13);
  ASSERT_GT(reference.size(), 50u);
  std::printf("lookahead  latency_saved_ms  mouth_psnr_db(mean)  min_db  frames\n");
  for (int lookahead : {8, 4, 2}) {
    const auto frames = run(lookahead);
    double sum = 0, worst = 99;
    int n = 0;
    for (size_t j = 0; j < std::min(frames.size(), reference.size()); ++j) {
      if (!frames[j].first && !reference[j].first) continue;
      const double psnr = RectPsnr(frames[j].second, reference[j].second, rect);
      sum += psnr;
      worst = std::min(worst, psnr);
      ++n;
    }
    ASSERT_GT(n, 30);
    std::printf("%9d  %16d  %19.1f  %6.1f  %6d\n", lookahead, (13 - lookahead) * 40, sum / n, worst,
                n);
    EXPECT_GT(sum / n, 15.0) << "lookahead " << lookahead;
  }
}

}  // namespace
}  // namespace lipsync::session

namespace lipsync::session {
namespace {

// Figures (printed, not asserted as timings): the first speaking frame's due time after
// a TTS-style push (all the audio at once), and the first idle frame's due time after
// an interrupt, on the media clock the viewer plays. Structural bound only: the first
// idle frame is at most max_ahead_frames + 1 after the frame due at the interrupt.
TEST(LiveSessionFiguresTest, FirstSpeakingFrameAndInterruptToIdle) {
  const SessionConfig config;
  std::vector<double> first_ms, interrupt_ms;
  int64_t repeated = 0;
  for (int i = 0; i < 8; ++i) {
    RecordingSink sink;
    auto session = LiveSession::Start(Params(16000, 1, media::Codec::kH264), config,
                                      TheCluster().server(), &sink);
    ASSERT_TRUE(session.ok());
    const auto start = (*session)->info().clock_start;
    ASSERT_TRUE(sink.WaitFrames(size_t(5 + 3 * i)));
    const auto pushed = Clock::now();
    ASSERT_TRUE((*session)->PushAudio(ToPcm(Buzz(16000, 3.0, 0, 0))).ok());
    ASSERT_TRUE(sink.WaitEvent(EventKind::kSpeechStarted));
    int64_t first = -1;
    for (const auto& e : sink.events()) {
      if (e.kind == EventKind::kSpeechStarted) first = e.frame_index;
    }
    first_ms.push_back(
        std::chrono::duration<double, std::milli>(start + first * 40ms - pushed).count());
    ASSERT_TRUE(sink.WaitFrames(size_t(first + 10)));
    repeated += (*session)->stats().repeated_frames;
    const auto interrupted_at = Clock::now();
    (*session)->Interrupt();
    ASSERT_TRUE(sink.WaitEvent(EventKind::kInterrupted));
    int64_t idle = -1;
    for (const auto& e : sink.events()) {
      if (e.kind == EventKind::kInterrupted) idle = e.frame_index;
    }
    const double due_ms = std::chrono::duration<double, std::milli>(interrupted_at - start).count();
    interrupt_ms.push_back(idle * 40.0 - due_ms);
    EXPECT_LE(idle, int64_t(due_ms / 40) + config.max_ahead_frames + 2);
  }
  std::sort(first_ms.begin(), first_ms.end());
  std::sort(interrupt_ms.begin(), interrupt_ms.end());
  std::printf(
      "first speaking frame due after the push: min %.0f ms, median %.0f ms, max %.0f ms "
      "(%zu runs; %lld frames repeated in their first 10 speaking frames)\n",
      first_ms.front(), first_ms[first_ms.size() / 2], first_ms.back(), first_ms.size(),
      static_cast<long long>(repeated));
  std::printf("interrupt to the first idle frame's due time: min %.0f ms, max %.0f ms\n",
              interrupt_ms.front(), interrupt_ms.back());
}

}  // namespace
}  // namespace lipsync::session
