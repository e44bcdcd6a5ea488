// JanusClient against Debian's real janus on loopback with the shipped configuration:
// mountpoints created with Janus-chosen ports, RTP from RtpPublisher reaching them,
// leftovers of a previous run removed, a restarted Janus detected and reconnected, and
// wrong secrets or no Janus answered with clear statuses.
#include "webrtc/janus_client.h"

#include <gtest/gtest.h>

#include <cstring>

#include "webrtc/janus_fixture.h"
#include "webrtc/rtp_publisher.h"

namespace lipsync::webrtc {
namespace {

using lipsync::testing::JanusProcess;

class JanusClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!JanusProcess::Available()) GTEST_SKIP() << "needs /usr/bin/janus (Debian janus)";
    dir_ = std::filesystem::temp_directory_path() /
           ("janus_client_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_TRUE(janus_.Start(dir_)) << janus_.Log();
  }
  void TearDown() override {
    janus_.Stop();
    std::filesystem::remove_all(dir_);
  }
  JanusOptions Options() const {
    JanusOptions o;
    o.url = janus_.url();
    o.api_secret = JanusProcess::kApiSecret;
    o.admin_key = JanusProcess::kAdminKey;
    o.rtp_interface = "127.0.0.1";
    o.instance = "test-" + std::to_string(::getpid());
    return o;
  }
  std::filesystem::path dir_;
  JanusProcess janus_;
};

TEST_F(JanusClientTest, CreatesAMountpointThatReceivesThePublishersRtpAndDestroysIt) {
  auto client = JanusClient::Connect(Options());
  ASSERT_TRUE(client.ok()) << client.status().ToString();
  auto m = (*client)->CreateMountpoint("session-a");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_GT(m->video_port, 0);
  EXPECT_GT(m->audio_port, 0);
  EXPECT_NE(m->video_port, m->audio_port);
  EXPECT_EQ(m->pin.size(), 16u);
  EXPECT_EQ(m->secret.size(), 32u);
  auto own = (*client)->OwnMountpoints();
  ASSERT_TRUE(own.ok()) << own.status().ToString();
  ASSERT_EQ(own->size(), 1u);
  EXPECT_EQ(own->front(), m->id);

  // RTP into it: Janus logs the first packets of each medium of the mountpoint.
  RtpTarget t;
  t.host = m->rtp_host;
  t.video_port = m->video_port;
  t.audio_port = m->audio_port;
  t.width = 160;
  t.height = 96;
  auto pub = RtpPublisher::Create(t);
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  std::string annexb("\x00\x00\x00\x01\x09\xf0", 6);  // an access unit delimiter
  for (int k = 0; k < 10; ++k) {
    ASSERT_TRUE((*pub)->SendFrame(k, annexb, std::string(1280, '\0')).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE((*client)->DestroyMountpoint(*m).ok());
  own = (*client)->OwnMountpoints();
  ASSERT_TRUE(own.ok());
  EXPECT_TRUE(own->empty());
  EXPECT_EQ((*client)->DestroyMountpoint(*m).code(), StatusCode::kNotFound);
}

TEST_F(JanusClientTest, RemovesWhatAPreviousRunOfTheSameInstanceLeft) {
  auto first = JanusClient::Connect(Options());
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_TRUE((*first)->CreateMountpoint("a").ok());
  ASSERT_TRUE((*first)->CreateMountpoint("b").ok());
  JanusOptions other = Options();
  other.instance = "another-server";
  auto theirs = JanusClient::Connect(other);
  ASSERT_TRUE(theirs.ok());
  ASSERT_TRUE((*theirs)->CreateMountpoint("c").ok());
  first->reset();  // the "crashed" run: its mountpoints stay in Janus

  auto restarted = JanusClient::Connect(Options());
  ASSERT_TRUE(restarted.ok());
  auto removed = (*restarted)->RemoveStale();
  ASSERT_TRUE(removed.ok()) << removed.status().ToString();
  EXPECT_EQ(*removed, 2);
  auto left = (*theirs)->OwnMountpoints();
  ASSERT_TRUE(left.ok());
  EXPECT_EQ(left->size(), 1u);  // another server's mountpoint is not ours to remove
}

TEST_F(JanusClientTest, WrongSecretsArePermissionDeniedNamingTheSetting) {
  JanusOptions o = Options();
  o.api_secret = "wrong";
  auto bad = JanusClient::Connect(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(bad.status().message().find("api_secret"), std::string::npos) << bad.status().message();

  o = Options();
  o.admin_key = "wrong";
  auto client = JanusClient::Connect(o);
  ASSERT_TRUE(client.ok());
  auto m = (*client)->CreateMountpoint("x");
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kPermissionDenied);
  EXPECT_NE(m.status().message().find("admin_key"), std::string::npos) << m.status().message();
}

TEST_F(JanusClientTest, ARestartedJanusIsDetectedAndReconnected) {
  auto client = JanusClient::Connect(Options());
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE((*client)->Keepalive().ok());
  const int port = janus_.http_port();
  janus_.Stop();
  EXPECT_EQ((*client)->Keepalive().code(), StatusCode::kUnavailable);
  ASSERT_TRUE(janus_.Start(dir_, port)) << janus_.Log();
  Status s = (*client)->Keepalive();  // a new Janus: our session is unknown to it
  EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.ToString();
  ASSERT_TRUE((*client)->Reconnect().ok());
  EXPECT_TRUE((*client)->Keepalive().ok());
  EXPECT_TRUE((*client)->CreateMountpoint("again").ok());
}

TEST(JanusClientNoServerTest, UnreachableIsUnavailableAndBadOptionsAreNamed) {
  JanusOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(lipsync::testing::FreeTcpPort()) + "/janus";
  o.api_secret = "s";
  o.admin_key = "k";
  o.timeout_seconds = 2;
  auto c = JanusClient::Connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kUnavailable);
  o.url = "ftp://x/janus";
  c = JanusClient::Connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("janus_url"), std::string::npos);
  o.url = "http://127.0.0.1:1/janus";
  o.admin_key = "";
  c = JanusClient::Connect(o);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lipsync::webrtc
