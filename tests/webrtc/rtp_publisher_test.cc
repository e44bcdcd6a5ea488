// RtpPublisher against a real receiver on loopback: libavformat's SDP/RTP demuxer reads
// what the publisher sends (from the publisher's own SDP), libavcodec decodes the H.264
// and the Opus. Checks the media clock (timestamps), key frames, decodability and that
// the sound is the sound that was sent.
#include "webrtc/rtp_publisher.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <thread>
#include <vector>

#include "media/video_encoder.h"

extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
}

namespace lipsync::webrtc {
namespace {

// Two free even/odd-safe UDP ports (each with a free neighbour for RTCP).
int FreeUdpPort() {
  for (int attempt = 0; attempt < 50; ++attempt) {
    int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    int port = ntohs(a.sin_port);
    if (port % 2 == 0 && port < 65000) return port;
  }
  return 0;
}

struct Received {
  std::vector<int64_t> video_pts, audio_pts;  // in each stream's time base
  AVRational video_tb{0, 1}, audio_tb{0, 1};
  int decoded_frames = 0, width = 0, height = 0;
  std::vector<float> pcm;  // decoded Opus, first channel
  int pcm_rate = 0;
};

// Reads the SDP's streams until `stop` and some time after; decodes both.
class Receiver {
 public:
  explicit Receiver(const std::string& sdp_path) : sdp_path_(sdp_path) {}

  bool Open() {
    AVDictionary* opts = nullptr;
    av_dict_set(&opts, "protocol_whitelist", "file,udp,rtp", 0);
    av_dict_set(&opts, "reorder_queue_size", "0", 0);
    ctx_ = avformat_alloc_context();
    ctx_->interrupt_callback.callback = [](void* self) -> int {
      return static_cast<Receiver*>(self)->quit_.load() ? 1 : 0;
    };
    ctx_->interrupt_callback.opaque = this;
    int rc = avformat_open_input(&ctx_, sdp_path_.c_str(), nullptr, &opts);
    av_dict_free(&opts);
    return rc == 0;
  }

  void Run() {
    const AVCodec* h264 = avcodec_find_decoder(AV_CODEC_ID_H264);
    const AVCodec* opus = avcodec_find_decoder(AV_CODEC_ID_OPUS);
    AVCodecContext* vdec = avcodec_alloc_context3(h264);
    AVCodecContext* adec = avcodec_alloc_context3(opus);
    int vi = -1, ai = -1;
    for (unsigned i = 0; i < ctx_->nb_streams; ++i) {
      if (ctx_->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_VIDEO) vi = int(i);
      if (ctx_->streams[i]->codecpar->codec_type == AVMEDIA_TYPE_AUDIO) ai = int(i);
    }
    if (vi < 0 || ai < 0) return;
    avcodec_parameters_to_context(adec, ctx_->streams[ai]->codecpar);
    avcodec_open2(vdec, h264, nullptr);
    avcodec_open2(adec, opus, nullptr);
    out_.video_tb = ctx_->streams[vi]->time_base;
    out_.audio_tb = ctx_->streams[ai]->time_base;
    AVPacket* pkt = av_packet_alloc();
    AVFrame* frame = av_frame_alloc();
    while (av_read_frame(ctx_, pkt) >= 0) {
      if (pkt->stream_index == vi) {
        if (pkt->pts != AV_NOPTS_VALUE) out_.video_pts.push_back(pkt->pts);
        if (avcodec_send_packet(vdec, pkt) == 0) {
          while (avcodec_receive_frame(vdec, frame) == 0) {
            ++out_.decoded_frames;
            out_.width = frame->width;
            out_.height = frame->height;
          }
        }
      } else if (pkt->stream_index == ai) {
        if (pkt->pts != AV_NOPTS_VALUE) out_.audio_pts.push_back(pkt->pts);
        if (avcodec_send_packet(adec, pkt) == 0) {
          while (avcodec_receive_frame(adec, frame) == 0) {
            out_.pcm_rate = frame->sample_rate;
            const float* ch0 = reinterpret_cast<const float*>(frame->extended_data[0]);
            if (frame->format == AV_SAMPLE_FMT_FLTP || frame->format == AV_SAMPLE_FMT_FLT) {
              const int step =
                  frame->format == AV_SAMPLE_FMT_FLT ? frame->ch_layout.nb_channels : 1;
              for (int i = 0; i < frame->nb_samples; ++i) out_.pcm.push_back(ch0[i * step]);
            }
          }
        }
      }
      av_packet_unref(pkt);
    }
    av_frame_free(&frame);
    av_packet_free(&pkt);
    avcodec_free_context(&vdec);
    avcodec_free_context(&adec);
  }

  void Quit() { quit_ = true; }
  ~Receiver() {
    if (ctx_ != nullptr) avformat_close_input(&ctx_);
  }
  const Received& received() const { return out_; }

 private:
  std::string sdp_path_;
  AVFormatContext* ctx_ = nullptr;
  std::atomic<bool> quit_{false};
  Received out_;
};

// A test card that changes every frame, packed RGB.
std::vector<uint8_t> Card(int w, int h, int k) {
  std::vector<uint8_t> rgb(size_t(w) * size_t(h) * 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = &rgb[(size_t(y) * size_t(w) + size_t(x)) * 3];
      p[0] = uint8_t(x + k * 4);
      p[1] = uint8_t(y * 2);
      p[2] = uint8_t((x ^ y) + k);
    }
  }
  return rgb;
}

// A 440 Hz tone at `rate`, `samples` long, starting at sample `offset`, s16le.
std::string Tone(int rate, int samples, int64_t offset) {
  std::string pcm(size_t(samples) * 2, '\0');
  for (int i = 0; i < samples; ++i) {
    const double t = double(offset + i) / rate;
    const int16_t v = int16_t(10000 * std::sin(2 * std::numbers::pi * 440.0 * t));
    std::memcpy(pcm.data() + size_t(i) * 2, &v, 2);
  }
  return pcm;
}

// Dominant frequency estimate by zero crossings.
double ZeroCrossingHz(const std::vector<float>& x, int rate) {
  int crossings = 0;
  for (size_t i = 1; i < x.size(); ++i) crossings += (x[i - 1] < 0) != (x[i] < 0);
  return crossings / 2.0 / (double(x.size()) / rate);
}

class RtpPublisherTest : public ::testing::TestWithParam<int> {};

TEST_P(RtpPublisherTest, ReceiverDecodesVideoAndSoundOnTheMediaClock) {
  const int rate = GetParam();
  RtpTarget t;
  t.video_port = FreeUdpPort();
  t.audio_port = FreeUdpPort();
  while (t.audio_port == t.video_port) t.audio_port = FreeUdpPort();
  ASSERT_GT(t.video_port, 0);
  t.input_sample_rate = rate;
  t.width = 160;
  t.height = 96;
  auto pub = RtpPublisher::Create(t);
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  const std::string sdp = (*pub)->sdp();
  ASSERT_NE(sdp.find("H264/90000"), std::string::npos) << sdp;
  ASSERT_NE(sdp.find("opus/48000"), std::string::npos) << sdp;

  const auto dir = std::filesystem::temp_directory_path() /
                   ("rtp_pub_" + std::to_string(::getpid()) + "_" + std::to_string(rate));
  std::filesystem::create_directories(dir);
  const std::string sdp_path = (dir / "session.sdp").string();
  std::ofstream(sdp_path) << sdp;
  Receiver receiver(sdp_path);
  ASSERT_TRUE(receiver.Open());
  std::thread reader([&] { receiver.Run(); });

  media::EncoderOptions eo;
  eo.width = 160;
  eo.height = 96;
  eo.bitrate_kbps = 300;
  auto enc = media::CreateVideoEncoder(eo);
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  const int frames = 50;
  const int spf = rate / 25;
  for (int k = 0; k < frames; ++k) {
    auto card = Card(eo.width, eo.height, k);
    auto au = (*enc)->Encode(card.data(), 0, k == 0);
    ASSERT_TRUE(au.ok());
    ASSERT_TRUE((*pub)->SendFrame(k, au->data, Tone(rate, spf, int64_t(k) * spf)).ok());
    std::this_thread::sleep_for(std::chrono::milliseconds(4));  // paced, a little
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  receiver.Quit();
  reader.join();
  std::filesystem::remove_all(dir);

  const Received& r = receiver.received();
  const RtpStats stats = (*pub)->stats();
  EXPECT_EQ(stats.video_frames, frames);
  EXPECT_GE(stats.audio_packets, 2 * frames - 2);  // 20 ms packets, 40 ms frames
  // Video: one access unit per frame on a 90 kHz clock, 3600 ticks apart.
  ASSERT_GE(r.video_pts.size(), size_t(frames) - 2);
  const int64_t vstep = av_rescale_q(90000 / 25, AVRational{1, 90000}, r.video_tb);
  for (size_t i = 1; i < r.video_pts.size(); ++i) {
    EXPECT_EQ(r.video_pts[i] - r.video_pts[i - 1], vstep) << "video packet " << i;
  }
  EXPECT_GE(r.decoded_frames, frames - 3);
  EXPECT_EQ(r.width, eo.width);
  EXPECT_EQ(r.height, eo.height);
  // Audio: 20 ms Opus packets, 960 ticks apart on the 48 kHz clock.
  ASSERT_GE(r.audio_pts.size(), size_t(2 * frames) - 4);
  const int64_t astep = av_rescale_q(960, AVRational{1, 48000}, r.audio_tb);
  for (size_t i = 1; i < r.audio_pts.size(); ++i) {
    EXPECT_EQ(r.audio_pts[i] - r.audio_pts[i - 1], astep) << "audio packet " << i;
  }
  // The sound is the 440 Hz tone that was sent (skip the codec's start-up).
  ASSERT_GT(r.pcm_rate, 0);
  ASSERT_GT(r.pcm.size(), size_t(r.pcm_rate));
  std::vector<float> body(r.pcm.begin() + r.pcm_rate / 5, r.pcm.end() - r.pcm_rate / 10);
  EXPECT_NEAR(ZeroCrossingHz(body, r.pcm_rate), 440.0, 15.0);
}

INSTANTIATE_TEST_SUITE_P(Rates, RtpPublisherTest, ::testing::Values(16000, 44100, 48000));

TEST(RtpPublisherCreateTest, RejectsBadTargetsNamingTheField) {
  RtpTarget t;
  t.width = 160;
  t.height = 96;
  t.video_port = 0;
  t.audio_port = 5004;
  auto r = RtpPublisher::Create(t);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("ports"), std::string::npos);
  t.video_port = 5006;
  t.host = "evil/host";
  r = RtpPublisher::Create(t);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("host"), std::string::npos);
  t.host = "127.0.0.1";
  t.input_sample_rate = 22051;  // not a supported rate
  r = RtpPublisher::Create(t);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("22051"), std::string::npos) << r.status().message();
  t.input_sample_rate = 16000;
  t.video_payload_type = 8;
  r = RtpPublisher::Create(t);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("payload type"), std::string::npos);
}

TEST(RtpPublisherCreateTest, FrameIndicesNeverGoBackwards) {
  RtpTarget t;
  t.width = 160;
  t.height = 96;
  t.video_port = FreeUdpPort();
  t.audio_port = FreeUdpPort();
  auto pub = RtpPublisher::Create(t);
  ASSERT_TRUE(pub.ok()) << pub.status().ToString();
  ASSERT_TRUE((*pub)->SendFrame(5, "", Tone(16000, 640, 0)).ok());
  Status s = (*pub)->SendFrame(4, "", Tone(16000, 640, 0));
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*pub)->SendFrame(6, "", std::string(3, '\0')).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lipsync::webrtc
