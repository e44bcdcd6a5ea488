// The live session over real gRPC on loopback (CompositingService.StreamSession): a
// CompositingServer calling an in-process InferenceServer, the e2e fixtures' "talking"
// demo tenant (320x240, 8 frames, the demo lip-sync model with its audio encoder),
// credentials on. Bounds on timing are loose (a loaded 2-core box): the assertions are
// on status codes, events, indices, sample counts and counters.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "auth/authenticator.h"
#include "compositing.grpc.pb.h"
#include "compositing/compositing_server.h"
#include "e2e/e2e_cluster.h"
#include "e2e/speech_fixture.h"
#include "inference/inference_server.h"
#include "rpc/compositing_service.h"
#include "rpc/server_setup.h"

namespace lipsync::rpc {
namespace {

namespace fs = std::filesystem;
namespace pb = ::compositing;
using namespace std::chrono_literals;

constexpr const char* kStreamKey = "stream-secret";  // every tenant, scope stream
constexpr const char* kInferKey = "infer-secret";    // every tenant, scope infer only
constexpr const char* kOtherKey = "other-secret";    // tenants other-*, scope stream

// The before_infer hook of every session (tests swap what it does).
std::mutex g_hook_mu;
std::function<void(int64_t, int64_t, int)> g_before_infer;

fs::path WriteCredentials() {
  const fs::path path = e2e::ModelRoot() / "session_credentials.yaml";
  std::ofstream out(path);
  out << "api_keys:\n"
      << "  - {id: streamer, sha256: " << auth::HashApiKey(kStreamKey)
      << ", tenants: ['*'], scopes: [stream]}\n"
      << "  - {id: batcher, sha256: " << auth::HashApiKey(kInferKey)
      << ", tenants: ['*'], scopes: [infer]}\n"
      << "  - {id: other, sha256: " << auth::HashApiKey(kOtherKey)
      << ", tenants: ['other-*'], scopes: [stream]}\n";
  return path;
}

// Both servers in one process, the compositing service on a loopback port.
class TestServer {
 public:
  explicit TestServer(config::CompositingConfig config,
                      const std::function<void(ServerOptions&)>& tweak = nullptr) {
    e2e::TalkingTenant();
    auto inference = inference::InferenceServer::Create(e2e::InferenceTestConfig());
    EXPECT_TRUE(inference.ok()) << inference.status().ToString();
    if (!inference.ok()) return;
    inference_ = std::move(*inference);
    compositing::CompositingServerOptions options;
    options.inference_label = "in-process";
    auto server = compositing::CompositingServer::Create(config, *inference_, options);
    EXPECT_TRUE(server.ok()) << server.status().ToString();
    if (!server.ok()) return;
    server_ = std::move(*server);
    service_ = std::make_unique<CompositingServiceImpl>(server_.get());
    session::SessionHooks hooks;
    hooks.before_infer = [](int64_t generation, int64_t start, int batch) {
      std::function<void(int64_t, int64_t, int)> hook;
      {
        std::lock_guard<std::mutex> lock(g_hook_mu);
        hook = g_before_infer;
      }
      if (hook) hook(generation, start, batch);
    };
    service_->sessions().set_hooks(hooks);
    ServerOptions so;
    so.listen_address = "127.0.0.1:0";
    so.ops.server_name = "compositing";
    so.ops.auth.credentials_file = WriteCredentials().string();
    if (tweak) tweak(so);
    auto grpc_server = GrpcServer::Start(so, {service_.get()});
    EXPECT_TRUE(grpc_server.ok()) << grpc_server.status().ToString();
    if (!grpc_server.ok()) return;
    grpc_ = std::move(*grpc_server);
    channel_ = e2e::LoopbackChannel(grpc_->port());
  }
  ~TestServer() {
    if (grpc_) grpc_->Shutdown(1s);
    if (server_) server_->Shutdown(1s);
  }
  bool ok() const { return grpc_ != nullptr; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  int port() const { return grpc_->port(); }
  int active_sessions() { return service_->sessions().limiter().active(); }
  SessionService& sessions() { return service_->sessions(); }
  bool WaitIdle(std::chrono::milliseconds timeout = 30s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (active_sessions() != 0) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(20ms);
    }
    return true;
  }

 private:
  std::unique_ptr<inference::InferenceServer> inference_;
  std::unique_ptr<compositing::CompositingServer> server_;
  std::unique_ptr<CompositingServiceImpl> service_;
  std::unique_ptr<GrpcServer> grpc_;
  std::shared_ptr<grpc::Channel> channel_;
};

config::CompositingConfig TestConfig() {
  config::CompositingConfig c = e2e::CompositingTestConfig();
  c.session.max_sessions = 2;
  c.session.viewer_queue_frames = 25;
  return c;
}

// One server for the whole binary, destroyed after the last test so that background work
// (a session's model prefetch) is joined before the process exits.
TestServer*& ServerSlot() {
  static TestServer* server = nullptr;
  return server;
}

class ServerEnvironment : public ::testing::Environment {
 public:
  void TearDown() override {
    delete ServerSlot();
    ServerSlot() = nullptr;
  }
};
[[maybe_unused]] const ::testing::Environment* const kServerEnvironment =
    ::testing::AddGlobalTestEnvironment(new ServerEnvironment);

TestServer& Server() {
  TestServer*& server = ServerSlot();
  if (server == nullptr) server = new TestServer(TestConfig());
  return *server;
}

// One client session: a thread reads every output into memory.
class Client {
 public:
  explicit Client(const std::shared_ptr<grpc::Channel>& channel,
                  const std::string& key = kStreamKey, bool read = true) {
    stub_ = pb::CompositingService::NewStub(channel);
    if (!key.empty()) context_.AddMetadata("authorization", "Bearer " + key);
    context_.set_deadline(std::chrono::system_clock::now() + 300s);
    stream_ = stub_->StreamSession(&context_);
    if (read) StartReading();
  }
  ~Client() {
    context_.TryCancel();
    if (reader_.joinable()) reader_.join();
  }

  void StartReading() {
    reader_ = std::thread([this] {
      pb::SessionOutput out;
      while (stream_->Read(&out)) {
        std::lock_guard<std::mutex> lock(mu_);
        if (out.has_frame()) {
          if (frames_.empty()) first_frame_ = std::chrono::steady_clock::now();
          last_frame_ = std::chrono::steady_clock::now();
          out.mutable_frame()->clear_video();  // keep memory small; sizes are not checked
          frames_.push_back(out.frame());
        } else if (out.has_event()) {
          events_.push_back(out.event());
        } else if (out.has_stats()) {
          stats_.push_back(out.stats());
        } else if (out.has_opened()) {
          opened_ = out.opened();
          ++opened_count_;
          order_ok_ = frames_.empty() && events_.empty();
        }
        cv_.notify_all();
      }
      std::lock_guard<std::mutex> lock(mu_);
      done_ = true;
      cv_.notify_all();
    });
  }

  bool Send(const pb::SessionInput& in) { return stream_->Write(in); }
  bool Open(const std::string& model, int rate = 16000, int channels = 1,
            pb::VideoCodec codec = pb::MJPEG, int jpeg_quality = 0) {
    pb::SessionInput in;
    pb::SessionOpen* o = in.mutable_open();
    o->set_model_id(model);
    o->set_sample_rate(rate);
    o->set_channels(channels);
    o->set_codec(codec);
    o->set_jpeg_quality(jpeg_quality);
    return Send(in);
  }
  bool Audio(std::string pcm) {
    pb::SessionInput in;
    in.mutable_audio()->set_pcm(std::move(pcm));
    return Send(in);
  }
  bool Control(pb::SessionControl::Kind kind) {
    pb::SessionInput in;
    in.mutable_control()->set_kind(kind);
    return Send(in);
  }
  void WritesDone() { stream_->WritesDone(); }
  void Cancel() { context_.TryCancel(); }
  grpc::Status Finish() {
    if (reader_.joinable()) reader_.join();
    return stream_->Finish();
  }
  grpc::ClientReaderWriter<pb::SessionInput, pb::SessionOutput>& stream() { return *stream_; }

  // Polls `pred` (which may call the accessors below) until it holds, the stream ends
  // or `timeout` passes.
  bool WaitFor(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 60s) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (true) {
      if (pred()) return true;
      std::unique_lock<std::mutex> lock(mu_);
      if (done_ || std::chrono::steady_clock::now() > end) {
        lock.unlock();
        return pred();
      }
      cv_.wait_for(lock, 20ms);
    }
  }
  bool WaitFrames(size_t n, std::chrono::milliseconds timeout = 60s) {
    return WaitFor([&] { return frame_count() >= n; }, timeout);
  }
  bool WaitEvent(pb::SessionEvent::Kind kind, std::chrono::milliseconds timeout = 60s) {
    return WaitFor([&] { return !EventsOf(kind).empty(); }, timeout);
  }
  // Access under the lock (call only from the test thread's lambdas above, or here).
  std::vector<pb::MediaFrame> frames() {
    std::lock_guard<std::mutex> lock(mu_);
    return frames_;
  }
  std::vector<pb::SessionEvent> events() {
    std::lock_guard<std::mutex> lock(mu_);
    return events_;
  }
  std::vector<pb::SessionStats> stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  pb::SessionOpened opened() {
    std::lock_guard<std::mutex> lock(mu_);
    return opened_;
  }
  bool opened_first() {
    std::lock_guard<std::mutex> lock(mu_);
    return opened_count_ == 1 && order_ok_;
  }
  size_t frame_count() {
    std::lock_guard<std::mutex> lock(mu_);
    return frames_.size();
  }
  std::vector<pb::SessionEvent> EventsOf(pb::SessionEvent::Kind kind) {
    std::vector<pb::SessionEvent> out;
    for (const auto& e : events()) {
      if (e.kind() == kind) out.push_back(e);
    }
    return out;
  }

 private:
  std::unique_ptr<pb::CompositingService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<pb::SessionInput, pb::SessionOutput>> stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<pb::MediaFrame> frames_;
  std::vector<pb::SessionEvent> events_;
  std::vector<pb::SessionStats> stats_;
  pb::SessionOpened opened_;
  int opened_count_ = 0;
  bool order_ok_ = false;
  bool done_ = false;
  std::chrono::steady_clock::time_point first_frame_, last_frame_;
};

// "Speech": a 150 Hz buzz with harmonics and a 4 Hz syllable envelope, `seconds` long,
// at `rate`, as s16le with `channels` interleaved copies.
std::string Buzz(int rate, double seconds, int channels = 1) {
  const size_t n = size_t(seconds * rate);
  std::string out;
  out.reserve(n * 2 * size_t(channels));
  for (size_t i = 0; i < n; ++i) {
    const double t = double(i) / rate;
    const double env = 0.55 + 0.45 * std::sin(2 * M_PI * 4 * t);
    double v = 0;
    for (int h = 1; h <= 5; ++h) v += std::sin(2 * M_PI * 150 * h * t) / h;
    int16_t s = int16_t(std::lround(6000 * env * v));
    if (s == 0) s = 1;
    for (int c = 0; c < channels; ++c) {
      out.push_back(char(uint16_t(s) & 0xFF));
      out.push_back(char(uint16_t(s) >> 8));
    }
  }
  return out;
}

// Frames are consecutive from 0 with pts k/25 s and rate/25 samples of audio each.
void ExpectOneClock(const std::vector<pb::MediaFrame>& frames, int rate) {
  for (size_t k = 0; k < frames.size(); ++k) {
    ASSERT_EQ(frames[k].frame_index(), int64_t(k));
    ASSERT_EQ(frames[k].pts_us(), int64_t(k) * 40000);
    ASSERT_EQ(frames[k].audio_sample_rate(), rate);
    ASSERT_EQ(frames[k].audio().size(), size_t(rate / 25) * 2) << "frame " << k;
  }
}

int64_t NonZeroSamples(const std::vector<pb::MediaFrame>& frames) {
  int64_t n = 0;
  for (const auto& f : frames) {
    const std::string& a = f.audio();
    for (size_t i = 0; i + 1 < a.size(); i += 2) n += (a[i] != 0 || a[i + 1] != 0);
  }
  return n;
}

int SpeakingFrames(const std::vector<pb::MediaFrame>& frames) {
  int n = 0;
  for (const auto& f : frames) n += f.speaking();
  return n;
}

// Sends `pcm` in chunks of `chunk_seconds`, at real time (`realtime`) or at once; then
// END_OF_SPEECH, CLOSE and half-close; waits for the end. The status.
grpc::Status RunSpeech(Client& client, const std::string& pcm, int rate, int channels,
                       double chunk_seconds, bool realtime) {
  const size_t frame_bytes = size_t(2) * channels;
  const size_t chunk = size_t(chunk_seconds * rate) * frame_bytes;
  const auto start = std::chrono::steady_clock::now();
  for (size_t off = 0; off < pcm.size(); off += chunk) {
    const size_t n = std::min(chunk, pcm.size() - off);
    if (!client.Audio(pcm.substr(off, n))) break;
    if (realtime) {
      std::this_thread::sleep_until(
          start + std::chrono::microseconds(int64_t((off + n) / frame_bytes) * 1000000 / rate));
    }
  }
  client.Control(pb::SessionControl::END_OF_SPEECH);
  client.Control(pb::SessionControl::CLOSE);
  client.WritesDone();
  return client.Finish();
}

TEST(SessionServiceTest, FirstMessageMustBeOpen) {
  ASSERT_TRUE(Server().ok());
  Client client(Server().channel());
  ASSERT_TRUE(client.Audio(Buzz(16000, 0.1)));
  client.WritesDone();
  grpc::Status status = client.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("open"), std::string::npos) << status.error_message();
  EXPECT_EQ(client.frame_count(), 0u);
}

TEST(SessionServiceTest, UnknownModelIsNotFoundAndBadRateInvalidArgument) {
  ASSERT_TRUE(Server().ok());
  {
    Client client(Server().channel());
    ASSERT_TRUE(client.Open("no-such-model"));
    grpc::Status status = client.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
    auto errors = client.EventsOf(pb::SessionEvent::ERROR);
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_EQ(errors[0].code(), int(grpc::StatusCode::NOT_FOUND));
  }
  {
    Client client(Server().channel());
    ASSERT_TRUE(client.Open(e2e::TalkingTenant(), 11025));
    grpc::Status status = client.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  }
  EXPECT_TRUE(Server().WaitIdle());
}

TEST(SessionServiceTest, CredentialsScopeAndTenant) {
  ASSERT_TRUE(Server().ok());
  struct Case {
    std::string key;
    grpc::StatusCode code;
  };
  for (const Case& c : {Case{"", grpc::StatusCode::UNAUTHENTICATED},
                        Case{"wrong-secret", grpc::StatusCode::UNAUTHENTICATED},
                        Case{kInferKey, grpc::StatusCode::PERMISSION_DENIED},
                        Case{kOtherKey, grpc::StatusCode::PERMISSION_DENIED}}) {
    Client client(Server().channel(), c.key);
    client.Open(e2e::TalkingTenant());
    client.WritesDone();
    grpc::Status status = client.Finish();
    EXPECT_EQ(status.error_code(), c.code) << "key '" << c.key << "': " << status.error_message();
    EXPECT_EQ(client.frame_count(), 0u);
  }
  EXPECT_TRUE(Server().WaitIdle());
}

TEST(SessionServiceTest, IdleSessionOpensFirstAndStreamsOneClock) {
  ASSERT_TRUE(Server().ok());
  Client client(Server().channel());
  ASSERT_TRUE(client.Open(e2e::TalkingTenant()));
  ASSERT_TRUE(client.WaitFrames(30));
  EXPECT_TRUE(client.opened_first());
  pb::SessionOpened opened = client.opened();
  EXPECT_EQ(opened.width(), e2e::kWidth);
  EXPECT_EQ(opened.height(), e2e::kHeight);
  EXPECT_EQ(opened.fps(), 25);
  EXPECT_EQ(opened.codec(), pb::MJPEG);
  EXPECT_EQ(opened.audio_sample_rate(), 16000);
  EXPECT_FALSE(opened.session_id().empty());
  EXPECT_EQ(Server().active_sessions(), 1);
  client.Control(pb::SessionControl::CLOSE);
  client.WritesDone();
  grpc::Status status = client.Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  auto frames = client.frames();
  ExpectOneClock(frames, 16000);
  EXPECT_EQ(SpeakingFrames(frames), 0);
  EXPECT_EQ(NonZeroSamples(frames), 0);
  EXPECT_EQ(client.EventsOf(pb::SessionEvent::CLOSED).size(), 1u);
  auto stats = client.stats();
  ASSERT_FALSE(stats.empty());
  EXPECT_EQ(stats.back().inference_batches(), 0);
  EXPECT_TRUE(Server().WaitIdle());
}

// One 10 s chunk sent at once (a TTS), 16 kHz mono: every sample comes back on the clock.
TEST(SessionServiceTest, TenSecondChunkFasterThanRealTime) {
  ASSERT_TRUE(Server().ok());
  Client client(Server().channel());
  ASSERT_TRUE(client.Open(e2e::TalkingTenant()));
  const std::string pcm = Buzz(16000, 10.0);
  grpc::Status status = RunSpeech(client, pcm, 16000, 1, 10.0, false);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto frames = client.frames();
  ExpectOneClock(frames, 16000);
  EXPECT_EQ(NonZeroSamples(frames), int64_t(pcm.size() / 2));
  EXPECT_GT(SpeakingFrames(frames), 150);
  EXPECT_GE(client.EventsOf(pb::SessionEvent::SPEECH_STARTED).size(), 1u);
  EXPECT_TRUE(client.EventsOf(pb::SessionEvent::ERROR).empty());
  auto stats = client.stats();
  ASSERT_FALSE(stats.empty());
  EXPECT_GT(stats.back().inference_batches(), 0);
  EXPECT_TRUE(Server().WaitIdle());
}

// 10 ms chunks at real time (a microphone).
TEST(SessionServiceTest, TenMillisecondChunksAtRealTime) {
  ASSERT_TRUE(Server().ok());
  Client client(Server().channel());
  ASSERT_TRUE(client.Open(e2e::TalkingTenant(), 16000, 1, pb::H264));
  const std::string pcm = Buzz(16000, 3.0);
  grpc::Status status = RunSpeech(client, pcm, 16000, 1, 0.010, true);
  ASSERT_TRUE(status.ok()) << status.error_message();
  auto frames = client.frames();
  ExpectOneClock(frames, 16000);
  EXPECT_EQ(NonZeroSamples(frames), int64_t(pcm.size() / 2));
  EXPECT_GT(SpeakingFrames(frames), 30);
  EXPECT_TRUE(frames.front().key_frame());
  EXPECT_TRUE(Server().WaitIdle());
}

// 48 kHz stereo in 100 ms chunks faster than real time: mono out at 48 kHz.
TEST(SessionServiceTest, FortyEightKilohertzStereo) {
  ASSERT_TRUE(Server().ok());
  Client client(Server().channel());
  ASSERT_TRUE(client.Open(e2e::TalkingTenant(), 48000, 2));
  const std::string pcm = Buzz(48000, 2.0, 2);
  grpc::Status status = RunSpeech(client, pcm, 48000, 2, 0.1, false);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(client.opened().audio_sample_rate(), 48000);
  auto frames = client.frames();
  ExpectOneClock(frames, 48000);
  EXPECT_EQ(NonZeroSamples(frames), int64_t(pcm.size() / 4));
  EXPECT_GT(SpeakingFrames(frames), 20);
  EXPECT_TRUE(Server().WaitIdle());
}

// INTERRUPT while a batch is in inference: the next frame is idle and a key frame, and
// the late batch's frames never show.
TEST(SessionServiceTest, InterruptMidBatch) {
  ASSERT_TRUE(Server().ok());
  std::mutex mu;
  std::condition_variable cv;
  bool in_batch = false, release = false;
  {
    std::lock_guard<std::mutex> lock(g_hook_mu);
    g_before_infer = [&](int64_t, int64_t, int) {
      std::unique_lock<std::mutex> l(mu);
      in_batch = true;
      cv.notify_all();
      cv.wait_for(l, 20s, [&] { return release; });
    };
  }
  Client client(Server().channel());
  ASSERT_TRUE(client.Open(e2e::TalkingTenant(), 16000, 1, pb::H264));
  ASSERT_TRUE(client.Audio(Buzz(16000, 4.0)));
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, 60s, [&] { return in_batch; }));
  }
  ASSERT_TRUE(client.Control(pb::SessionControl::INTERRUPT));
  const bool interrupted = client.WaitEvent(pb::SessionEvent::INTERRUPTED, 30s);
  {
    std::lock_guard<std::mutex> l(mu);
    release = true;
  }
  cv.notify_all();
  {
    std::lock_guard<std::mutex> lock(g_hook_mu);
    g_before_infer = nullptr;
  }
  ASSERT_TRUE(interrupted);
  const int64_t first_idle = client.EventsOf(pb::SessionEvent::INTERRUPTED)[0].frame_index();
  ASSERT_TRUE(client.WaitFrames(size_t(first_idle) + 25));
  auto frames = client.frames();
  ASSERT_GT(frames.size(), size_t(first_idle));
  EXPECT_FALSE(frames[first_idle].speaking());
  EXPECT_TRUE(frames[first_idle].key_frame());
  EXPECT_EQ(frames[first_idle].generation(), 1);
  for (size_t k = size_t(first_idle); k < frames.size(); ++k) {
    EXPECT_FALSE(frames[k].speaking()) << "frame " << k << " after the interrupt";
  }
  client.Control(pb::SessionControl::CLOSE);
  client.WritesDone();
  EXPECT_TRUE(client.Finish().ok());
  EXPECT_TRUE(Server().WaitIdle());
}

TEST(SessionServiceTest, ClientCancelFreesTheSession) {
  ASSERT_TRUE(Server().ok());
  Client client(Server().channel());
  ASSERT_TRUE(client.Open(e2e::TalkingTenant()));
  ASSERT_TRUE(client.Audio(Buzz(16000, 5.0)));
  ASSERT_TRUE(client.WaitFrames(10));
  EXPECT_EQ(Server().active_sessions(), 1);
  client.Cancel();
  EXPECT_EQ(client.Finish().error_code(), grpc::StatusCode::CANCELLED);
  EXPECT_TRUE(Server().WaitIdle(10s));
}

// A draining server ends its live sessions at once (they never end on their own) and
// refuses new ones, instead of waiting its whole grace period.
TEST(SessionServiceTest, ShutdownEndsLiveSessionsAndRefusesNewOnes) {
  TestServer server(TestConfig());
  ASSERT_TRUE(server.ok());
  Client client(server.channel());
  ASSERT_TRUE(client.Open(e2e::TalkingTenant()));
  ASSERT_TRUE(client.WaitFrames(5));
  EXPECT_EQ(server.sessions().active_streams(), 1);
  server.sessions().Shutdown();
  EXPECT_NE(client.Finish().error_code(), grpc::StatusCode::OK);
  EXPECT_TRUE(server.WaitIdle(10s));
  // The stream leaves the service's list when its handler returns (just after the slot).
  for (int i = 0; i < 500 && server.sessions().active_streams() != 0; ++i) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(server.sessions().active_streams(), 0);
  Client late(server.channel());
  late.Open(e2e::TalkingTenant());
  grpc::Status refused = late.Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_NE(refused.error_message().find("shutting down"), std::string::npos);
}

TEST(SessionServiceTest, SessionLimitIsResourceExhausted) {
  ASSERT_TRUE(Server().ok());
  ASSERT_TRUE(Server().WaitIdle());
  Client a(Server().channel()), b(Server().channel());
  ASSERT_TRUE(a.Open(e2e::TalkingTenant()));
  ASSERT_TRUE(b.Open(e2e::TalkingTenant()));
  ASSERT_TRUE(a.WaitFrames(1));
  ASSERT_TRUE(b.WaitFrames(1));
  Client c(Server().channel());
  ASSERT_TRUE(c.Open(e2e::TalkingTenant()));
  grpc::Status status = c.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  a.Cancel();
  b.Cancel();
  a.Finish();
  b.Finish();
  EXPECT_TRUE(Server().WaitIdle());
}

// Two sessions; one never reads. The other still gets about 25 fps; the stalled one's
// frames are dropped for it alone and counted.
TEST(SessionServiceTest, StalledViewerDoesNotSlowTheOther) {
  ASSERT_TRUE(Server().ok());
  ASSERT_TRUE(Server().WaitIdle());
  Client stalled(Server().channel(), kStreamKey, /*read=*/false);
  ASSERT_TRUE(stalled.Open(e2e::TalkingTenant(), 16000, 1, pb::MJPEG, 100));
  Client live(Server().channel());
  ASSERT_TRUE(live.Open(e2e::TalkingTenant()));
  ASSERT_TRUE(live.WaitFrames(5));
  const auto t0 = std::chrono::steady_clock::now();
  const size_t n0 = live.frame_count();
  std::this_thread::sleep_for(8s);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double fps = double(live.frame_count() - n0) / seconds;
  EXPECT_GT(fps, 15.0);
  EXPECT_LT(fps, 35.0);
  // The stalled viewer reads now: its stats say frames were dropped for it, and the
  // frames it gets skip those (on the session's clock).
  stalled.StartReading();
  EXPECT_TRUE(stalled.WaitFor([&] {
    auto s = stalled.stats();
    const size_t n = stalled.frame_count();
    return !s.empty() && s.back().dropped_frames() > 0 && n > 0 &&
           stalled.frames().back().frame_index() > int64_t(n) - 1;
  }));
  auto stats = stalled.stats();
  ASSERT_FALSE(stats.empty());
  EXPECT_GT(stats.back().dropped_frames(), 0);
  live.Cancel();
  stalled.Cancel();
  live.Finish();
  stalled.Finish();
  EXPECT_TRUE(Server().WaitIdle());
}

// Bad chunks become ERROR events; the session goes on and ends normally.
TEST(SessionServiceTest, BadInputIsAnErrorEventAndTheSessionGoesOn) {
  ASSERT_TRUE(Server().ok());
  Client client(Server().channel());
  ASSERT_TRUE(client.Open(e2e::TalkingTenant()));
  ASSERT_TRUE(client.Audio(std::string(321, '\1')));  // odd byte count
  ASSERT_TRUE(client.Audio(Buzz(16000, 10.5)));       // over 10 s
  ASSERT_TRUE(client.Open(e2e::TalkingTenant()));     // a second open
  ASSERT_TRUE(client.Control(pb::SessionControl::KIND_UNSPECIFIED));
  ASSERT_TRUE(client.Send(pb::SessionInput()));  // empty message
  ASSERT_TRUE(client.Audio(Buzz(16000, 0.5)));   // good
  ASSERT_TRUE(client.Control(pb::SessionControl::CLOSE));
  ASSERT_TRUE(client.Audio(Buzz(16000, 0.1)));  // audio after close
  ASSERT_TRUE(client.WaitFor([&] { return client.EventsOf(pb::SessionEvent::ERROR).size() >= 6; }));
  client.WritesDone();
  grpc::Status status = client.Finish();
  EXPECT_TRUE(status.ok()) << status.error_message();
  auto errors = client.EventsOf(pb::SessionEvent::ERROR);
  ASSERT_EQ(errors.size(), 6u);
  for (const auto& e : errors) {
    EXPECT_EQ(e.code(), int(grpc::StatusCode::INVALID_ARGUMENT)) << e.message();
    EXPECT_FALSE(e.message().empty());
    EXPECT_LT(e.message().size(), 400u);
  }
  EXPECT_NE(errors.back().message().find("close"), std::string::npos) << errors.back().message();
  EXPECT_EQ(client.EventsOf(pb::SessionEvent::CLOSED).size(), 1u);
  auto frames = client.frames();
  ExpectOneClock(frames, 16000);
  EXPECT_EQ(NonZeroSamples(frames), int64_t(8000));  // only the good 0.5 s
  EXPECT_TRUE(Server().WaitIdle());
}

// A TTS faster than the buffer: the server stops reading while the buffer is full
// (never more than session.max_buffered_seconds held) and takes the rest as it drains.
TEST(SessionServiceTest, FlowControlHoldsTheSenderAtTheBufferLimit) {
  config::CompositingConfig config = TestConfig();
  config.session.max_buffered_seconds = 3;
  config.session.max_chunk_seconds = 2;
  TestServer server(config);
  ASSERT_TRUE(server.ok());
  Client client(server.channel());
  ASSERT_TRUE(client.Open(e2e::TalkingTenant()));
  const std::string pcm = Buzz(16000, 6.0);
  grpc::Status status = RunSpeech(client, pcm, 16000, 1, 2.0, false);
  ASSERT_TRUE(status.ok()) << status.error_message();
  for (const auto& s : client.stats()) EXPECT_LE(s.buffered_audio_ms(), 3000);
  auto frames = client.frames();
  ExpectOneClock(frames, 16000);
  EXPECT_EQ(NonZeroSamples(frames), int64_t(pcm.size() / 2));
  EXPECT_TRUE(client.EventsOf(pb::SessionEvent::ERROR).empty());
}

// Sessions obey the batch calls' plumbing: a rate limit per session start (one second of
// frames from the tenant's bucket) and one audit line per session at its end.
TEST(SessionServiceTest, RateLimitPerSessionStartAndAuditLineAtEnd) {
  const fs::path audit = e2e::ModelRoot() / "session_audit.jsonl";
  fs::remove(audit);
  TestServer server(TestConfig(), [&](ServerOptions& so) {
    so.ops.audit_log_path = audit.string();
    so.ops.rate_limit.frames_per_second = 1;  // 25 frames per session start: one session
    so.ops.rate_limit.burst_frames = 30;
  });
  ASSERT_TRUE(server.ok());
  {
    Client client(server.channel());
    ASSERT_TRUE(client.Open(e2e::TalkingTenant()));
    ASSERT_TRUE(client.WaitFrames(10));
    Client refused(server.channel());
    ASSERT_TRUE(refused.Open(e2e::TalkingTenant()));
    grpc::Status status = refused.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
    client.Control(pb::SessionControl::CLOSE);
    client.WritesDone();
    EXPECT_TRUE(client.Finish().ok());
  }
  ASSERT_TRUE(server.WaitIdle());
  std::ifstream in(audit);
  std::string line, ok_line, refused_line;
  while (std::getline(in, line)) {
    if (line.find("\"StreamSession\"") == std::string::npos) continue;
    if (line.find("\"OK\"") != std::string::npos) ok_line = line;
    if (line.find("RESOURCE_EXHAUSTED") != std::string::npos) refused_line = line;
  }
  ASSERT_FALSE(ok_line.empty()) << "no OK StreamSession audit line in " << audit;
  EXPECT_NE(ok_line.find("key:streamer"), std::string::npos) << ok_line;
  EXPECT_NE(ok_line.find(e2e::TalkingTenant()), std::string::npos) << ok_line;
  EXPECT_EQ(ok_line.find("\"frames\":0,"), std::string::npos) << ok_line;
  EXPECT_FALSE(refused_line.empty());
}

// `lipsync client --stream` (the binary) against the server: exit 0, the figures
// printed, the MP4 saved.
TEST(SessionServiceTest, ClientBinaryStreamsAWavAndSavesTheMp4) {
  ASSERT_TRUE(Server().ok());
  const fs::path dir = e2e::ModelRoot() / "stream_client";
  fs::create_directories(dir);
  const std::string pcm = Buzz(22050, 2.0);
  {
    std::string wav = "RIFF";
    auto put = [&](uint32_t v, int n) {
      for (int i = 0; i < n; ++i) wav.push_back(char((v >> (8 * i)) & 0xFF));
    };
    put(uint32_t(36 + pcm.size()), 4);
    wav += "WAVEfmt ";
    put(16, 4), put(1, 2), put(1, 2), put(22050, 4), put(44100, 4), put(2, 2), put(16, 2);
    wav += "data";
    put(uint32_t(pcm.size()), 4);
    std::ofstream(dir / "in.wav", std::ios::binary) << wav << pcm;
  }
  const std::string cmd = std::string(LIPSYNC_BINARY_DIR) + "/lipsync client --stream --server " +
                          "127.0.0.1:" + std::to_string(Server().port()) + " --model " +
                          e2e::TalkingTenant() + " --api-key " + kStreamKey + " --audio " +
                          (dir / "in.wav").string() + " --save " + (dir / "out").string() + " > " +
                          (dir / "client.log").string() + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::ifstream log_in(dir / "client.log");
  const std::string log((std::istreambuf_iterator<char>(log_in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(rc, 0) << log;
  EXPECT_NE(log.find("first speaking frame"), std::string::npos) << log;
  EXPECT_NE(log.find("A/V offset:           +0.0 ms"), std::string::npos) << log;
  EXPECT_TRUE(fs::exists(dir / "out" / "session.mp4")) << log;
  EXPECT_GT(fs::file_size(dir / "out" / "session.wav"), 44u + pcm.size() / 2);
  EXPECT_TRUE(Server().WaitIdle());
}

}  // namespace
}  // namespace lipsync::rpc
