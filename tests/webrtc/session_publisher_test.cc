// WebRtcHub + SessionPublisher against Debian's real janus on loopback with the shipped
// configuration: a session's mountpoint and viewer token made on the worker, RTP sent
// from the caller's thread, a viewer token that opens the streaming plugin only, the
// mountpoint and token removed at the end; Janus not running (UNAVAILABLE, then READY
// when it starts), a Janus restart (LOST, then READY with a new mountpoint), and wrong
// secrets refused at startup.
#include "webrtc/session_publisher.h"

#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

#include "webrtc/janus_fixture.h"

namespace lipsync::webrtc {
namespace {

using lipsync::testing::JanusProcess;
using json = nlohmann::json;
using namespace std::chrono_literals;

// What a browser would send to the Janus API (the HTTP transport), as JSON.
json PostJson(int port, const std::string& path, const json& body) {
  namespace beast = boost::beast;
  namespace http = beast::http;
  boost::asio::io_context ioc;
  boost::asio::ip::tcp::resolver resolver(ioc);
  beast::tcp_stream stream(ioc);
  stream.connect(resolver.resolve("127.0.0.1", std::to_string(port)));
  http::request<http::string_body> req{http::verb::post, path, 11};
  req.set(http::field::host, "127.0.0.1");
  req.set(http::field::content_type, "application/json");
  req.body() = body.dump();
  req.prepare_payload();
  http::write(stream, req);
  beast::flat_buffer buffer;
  http::response<http::string_body> res;
  http::read(stream, buffer, res);
  return json::parse(res.body(), nullptr, false);
}

// Collects the publisher's notifications.
class States {
 public:
  void Add(const WebRtcState& s) {
    std::lock_guard<std::mutex> lock(mu_);
    all_.push_back(s);
    cv_.notify_all();
  }
  // Waits for the `n`th notification (1-based).
  bool WaitFor(size_t n, std::chrono::seconds timeout = 20s) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return all_.size() >= n; });
  }
  WebRtcState At(size_t i) {
    std::lock_guard<std::mutex> lock(mu_);
    return all_.at(i);
  }
  size_t size() {
    std::lock_guard<std::mutex> lock(mu_);
    return all_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<WebRtcState> all_;
};

class SessionPublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!JanusProcess::Available()) GTEST_SKIP() << "needs /usr/bin/janus (Debian janus)";
    dir_ = std::filesystem::temp_directory_path() /
           ("session_publisher_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    http_port_ = lipsync::testing::FreeTcpPort();
    admin_port_ = lipsync::testing::FreeTcpPort();
  }
  void TearDown() override {
    janus_.Stop();
    std::filesystem::remove_all(dir_);
  }
  bool StartJanus() { return janus_.Start(dir_, http_port_, admin_port_); }
  WebRtcOptions Options() const {
    WebRtcOptions o;
    o.janus.url = "http://127.0.0.1:" + std::to_string(http_port_) + "/janus";
    o.janus.admin_url = "http://127.0.0.1:" + std::to_string(admin_port_) + "/admin";
    o.janus.api_secret = JanusProcess::kApiSecret;
    o.janus.admin_key = JanusProcess::kAdminKey;
    o.janus.admin_secret = JanusProcess::kAdminSecret;
    o.janus.rtp_interface = "127.0.0.1";
    o.janus.instance = "sp-test-" + std::to_string(::getpid());
    o.janus.timeout_seconds = 2;
    o.check_interval = 200ms;
    o.retry_interval = 300ms;
    return o;
  }
  static SessionMedia Media() {
    SessionMedia m;
    m.width = 160;
    m.height = 96;
    return m;
  }
  // A viewer's Janus session with `token` (no api_secret): its id, or 0 when refused.
  uint64_t ViewerSession(const std::string& token) {
    json r = PostJson(http_port_, "/janus",
                      {{"janus", "create"}, {"transaction", "v1"}, {"token", token}});
    if (r.value("janus", "") != "success") return 0;
    return r["data"]["id"].get<uint64_t>();
  }
  std::filesystem::path dir_;
  int http_port_ = 0, admin_port_ = 0;
  JanusProcess janus_;
};

TEST_F(SessionPublisherTest, PublishesToItsOwnMountpointWithAViewerTokenAndRemovesBoth) {
  ASSERT_TRUE(StartJanus()) << janus_.Log();
  auto hub = WebRtcHub::Start(Options());
  ASSERT_TRUE(hub.ok()) << hub.status().ToString();
  States states;
  std::atomic<int> key_frames{0};
  WebRtcState ready;
  {
    SessionPublisher publisher(
        *hub, Media(), "session-1", [&](const WebRtcState& s) { states.Add(s); },
        [&] { ++key_frames; });
    ASSERT_TRUE(states.WaitFor(1));
    ready = states.At(0);
    ASSERT_EQ(ready.kind, WebRtcState::Kind::kReady) << ready.message;
    EXPECT_NE(ready.mountpoint_id, 0u);
    EXPECT_FALSE(ready.pin.empty());
    EXPECT_FALSE(ready.token.empty());
    EXPECT_EQ(key_frames.load(), 1);  // a new mountpoint starts with a key frame

    uint64_t epoch = 0;
    auto client = (*hub)->Client(&epoch);
    ASSERT_TRUE(client.ok());
    auto own = (*client)->OwnMountpoints();
    ASSERT_TRUE(own.ok());
    EXPECT_EQ(*own, std::vector<uint64_t>{ready.mountpoint_id});

    std::string annexb("\x00\x00\x00\x01\x09\xf0", 6);
    for (int k = 0; k < 5; ++k) publisher.SendFrame(k, annexb, std::string(1280, '\0'));
    EXPECT_EQ(publisher.frames_sent(), 5);

    // The viewer's token opens the streaming plugin, and nothing else.
    const uint64_t viewer = ViewerSession(ready.token);
    ASSERT_NE(viewer, 0u);
    json attach = PostJson(http_port_, "/janus/" + std::to_string(viewer),
                           {{"janus", "attach"},
                            {"plugin", "janus.plugin.streaming"},
                            {"transaction", "v2"},
                            {"token", ready.token}});
    EXPECT_EQ(attach.value("janus", ""), "success") << attach.dump();
    EXPECT_EQ(ViewerSession("not-a-token"), 0u);
    EXPECT_EQ(ViewerSession(""), 0u);
  }
  // Gone with the session: the mountpoint and the token.
  uint64_t epoch = 0;
  auto client = (*hub)->Client(&epoch);
  ASSERT_TRUE(client.ok());
  auto own = (*client)->OwnMountpoints();
  ASSERT_TRUE(own.ok());
  EXPECT_TRUE(own->empty());
  EXPECT_EQ(ViewerSession(ready.token), 0u);
  EXPECT_EQ(states.size(), 1u);
}

TEST_F(SessionPublisherTest, JanusNotRunningThenStartedThenRestarted) {
  auto hub = WebRtcHub::Start(Options());  // nobody listens: not a startup error
  ASSERT_TRUE(hub.ok()) << hub.status().ToString();
  States states;
  SessionPublisher publisher(
      *hub, Media(), "session-2", [&](const WebRtcState& s) { states.Add(s); }, [] {});
  ASSERT_TRUE(states.WaitFor(1));
  EXPECT_EQ(states.At(0).kind, WebRtcState::Kind::kUnavailable);
  EXPECT_FALSE(states.At(0).message.empty());
  std::string annexb("\x00\x00\x00\x01\x09\xf0", 6);
  publisher.SendFrame(0, annexb, "");  // no mountpoint: nothing sent, nothing blocks
  EXPECT_EQ(publisher.frames_sent(), 0);

  ASSERT_TRUE(StartJanus()) << janus_.Log();
  ASSERT_TRUE(states.WaitFor(2));
  const WebRtcState first = states.At(1);
  ASSERT_EQ(first.kind, WebRtcState::Kind::kReady) << first.message;

  janus_.Stop();
  ASSERT_TRUE(states.WaitFor(3));
  EXPECT_EQ(states.At(2).kind, WebRtcState::Kind::kLost);
  ASSERT_TRUE(StartJanus()) << janus_.Log();
  ASSERT_TRUE(states.WaitFor(4));
  const WebRtcState again = states.At(3);
  ASSERT_EQ(again.kind, WebRtcState::Kind::kReady) << again.message;
  EXPECT_NE(again.mountpoint_id, first.mountpoint_id);
  EXPECT_NE(ViewerSession(again.token), 0u);  // a token the new Janus knows
  uint64_t epoch = 0;
  auto client = (*hub)->Client(&epoch);
  ASSERT_TRUE(client.ok());
  auto own = (*client)->OwnMountpoints();
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(*own, std::vector<uint64_t>{again.mountpoint_id});
}

TEST_F(SessionPublisherTest, WrongSecretsAreAStartupErrorNamingTheSetting) {
  ASSERT_TRUE(StartJanus()) << janus_.Log();
  struct Case {
    const char* setting;
    std::function<void(WebRtcOptions&)> spoil;
  };
  for (const Case& c :
       {Case{"api_secret", [](WebRtcOptions& o) { o.janus.api_secret = "x"; }},
        Case{"admin_key", [](WebRtcOptions& o) { o.janus.admin_key = "x"; }},
        Case{"admin_secret", [](WebRtcOptions& o) { o.janus.admin_secret = "x"; }}}) {
    WebRtcOptions o = Options();
    c.spoil(o);
    auto hub = WebRtcHub::Start(o);
    ASSERT_FALSE(hub.ok()) << c.setting;
    EXPECT_EQ(hub.status().code(), StatusCode::kPermissionDenied) << hub.status().ToString();
    EXPECT_NE(hub.status().message().find(c.setting), std::string::npos) << hub.status().message();
  }
}

}  // namespace
}  // namespace lipsync::webrtc
