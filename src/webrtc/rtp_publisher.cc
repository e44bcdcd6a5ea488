#include "webrtc/rtp_publisher.h"

#include "audio/resampler.h"

#include <opus/opus.h>
#include <soxr.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <deque>
#include <random>
#include <vector>

extern "C" {
#include <libavformat/avformat.h>
#include <libavutil/error.h>
}

namespace lipsync::webrtc {
namespace {

constexpr int kVideoClock = 90000;
constexpr int kOpusClock = 48000;

std::string AvError(int code) {
  std::array<char, AV_ERROR_MAX_STRING_SIZE> buf{};
  av_strerror(code, buf.data(), buf.size());
  return buf.data();
}

bool OpusNativeRate(int rate) {
  return rate == 8000 || rate == 12000 || rate == 16000 || rate == 24000 || rate == 48000;
}

// One RTP muxer: one stream to one UDP port.
class RtpMuxer {
 public:
  ~RtpMuxer() {
    if (ctx_ == nullptr) return;
    if (header_written_) av_write_trailer(ctx_);
    if (ctx_->pb != nullptr) avio_closep(&ctx_->pb);
    avformat_free_context(ctx_);
  }

  Status Open(const std::string& url, AVMediaType type, AVCodecID codec, int clock,
              int payload_type, uint32_t ssrc, int width = 0, int height = 0) {
    int rc = avformat_alloc_output_context2(&ctx_, nullptr, "rtp", url.c_str());
    if (rc < 0 || ctx_ == nullptr) return Status::Internal("RTP muxer: " + AvError(rc));
    AVStream* st = avformat_new_stream(ctx_, nullptr);
    if (st == nullptr) return Status::Internal("RTP muxer: no stream");
    st->codecpar->codec_type = type;
    st->codecpar->codec_id = codec;
    st->codecpar->width = width;
    st->codecpar->height = height;
    if (type == AVMEDIA_TYPE_AUDIO) {
      st->codecpar->sample_rate = clock;
      av_channel_layout_default(&st->codecpar->ch_layout, 1);
    }
    st->time_base = AVRational{1, clock};
    rc = avio_open(&ctx_->pb, url.c_str(), AVIO_FLAG_WRITE);
    if (rc < 0) return Status::Internal("RTP socket " + url + ": " + AvError(rc));
    AVDictionary* opts = nullptr;
    av_dict_set_int(&opts, "payload_type", payload_type, 0);
    av_dict_set_int(&opts, "ssrc", ssrc, 0);
    // No RTCP from here: the receiver (Janus) writes its own sender reports.
    av_dict_set(&opts, "rtpflags", "skip_rtcp", 0);
    rc = avformat_write_header(ctx_, &opts);
    av_dict_free(&opts);
    if (rc < 0) return Status::Internal("RTP muxer header: " + AvError(rc));
    header_written_ = true;
    clock_ = clock;
    return Status::Ok();
  }

  // `ts` on this muxer's clock (1/clock).
  Status Write(std::string_view data, int64_t ts, bool key) {
    AVPacket* pkt = av_packet_alloc();
    if (pkt == nullptr) return Status::Internal("RTP: out of memory");
    pkt->data = reinterpret_cast<uint8_t*>(const_cast<char*>(data.data()));
    pkt->size = static_cast<int>(data.size());
    const AVRational from{1, clock_};
    pkt->pts = pkt->dts = av_rescale_q(ts, from, ctx_->streams[0]->time_base);
    pkt->stream_index = 0;
    if (key) pkt->flags |= AV_PKT_FLAG_KEY;
    const int rc = av_write_frame(ctx_, pkt);
    av_packet_free(&pkt);
    if (rc < 0) return Status::Unavailable("RTP send: " + AvError(rc));
    return Status::Ok();
  }

  AVFormatContext* context() const { return ctx_; }

 private:
  AVFormatContext* ctx_ = nullptr;
  bool header_written_ = false;
  int clock_ = 1;
};

}  // namespace

class RtpPublisher::Impl {
 public:
  ~Impl() {
    if (opus_ != nullptr) opus_encoder_destroy(opus_);
    if (soxr_ != nullptr) soxr_delete(soxr_);
  }

  Status Init(const RtpTarget& t) {
    target_ = t;
    std::random_device rd;
    const uint32_t video_ssrc = rd() & 0x7fffffffu, audio_ssrc = rd() & 0x7fffffffu;
    const std::string base = "rtp://" + t.host + ":";
    const std::string opts = "?pkt_size=" + std::to_string(t.max_packet_bytes);
    LIPSYNC_RETURN_IF_ERROR(video_.Open(base + std::to_string(t.video_port) + opts,
                                        AVMEDIA_TYPE_VIDEO, AV_CODEC_ID_H264, kVideoClock,
                                        t.video_payload_type, video_ssrc, t.width, t.height));
    LIPSYNC_RETURN_IF_ERROR(audio_.Open(base + std::to_string(t.audio_port) + opts,
                                        AVMEDIA_TYPE_AUDIO, AV_CODEC_ID_OPUS, kOpusClock,
                                        t.audio_payload_type, audio_ssrc));
    std::array<AVFormatContext*, 2> both{video_.context(), audio_.context()};
    std::vector<char> sdp(4096);
    if (av_sdp_create(both.data(), 2, sdp.data(), static_cast<int>(sdp.size())) == 0) {
      sdp_ = sdp.data();
    }

    encode_rate_ = OpusNativeRate(t.input_sample_rate) ? t.input_sample_rate : kOpusClock;
    if (encode_rate_ != t.input_sample_rate) {
      soxr_error_t err = nullptr;
      soxr_io_spec_t io = soxr_io_spec(SOXR_INT16_I, SOXR_INT16_I);
      soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
      soxr_ = soxr_create(t.input_sample_rate, encode_rate_, 1, &err, &io, &q, nullptr);
      if (err != nullptr || soxr_ == nullptr) {
        return Status::Internal(std::string("audio resampler: ") + (err ? err : "failed"));
      }
    }
    int err = 0;
    opus_ = opus_encoder_create(encode_rate_, 1, OPUS_APPLICATION_VOIP, &err);
    if (err != OPUS_OK || opus_ == nullptr) {
      return Status::Internal(std::string("Opus encoder: ") + opus_strerror(err));
    }
    opus_encoder_ctl(opus_, OPUS_SET_BITRATE(t.audio_bitrate_bps));
    return Status::Ok();
  }

  Status SendFrame(int64_t index, std::string_view annexb, std::string_view pcm) {
    if (index < last_index_) {
      return Status::InvalidArgument("frame " + std::to_string(index) + " after frame " +
                                     std::to_string(last_index_) +
                                     ": expected frame indices that never go backwards");
    }
    if (pcm.size() % 2 != 0) {
      return Status::InvalidArgument("PCM of " + std::to_string(pcm.size()) +
                                     " bytes: expected whole s16le samples");
    }
    Status first_error = Status::Ok();
    if (!annexb.empty()) {
      const int64_t ts = index * kVideoClock / target_.fps;
      const bool key = ContainsIdr(annexb);
      Status s = video_.Write(annexb, ts, key);
      if (s.ok()) {
        ++stats_.video_frames;
        stats_.bytes += static_cast<int64_t>(annexb.size());
      } else {
        first_error = s;
      }
    }
    // Audio: re-anchored on the media clock whenever frames were skipped, so a gap never
    // shifts the audio against the video.
    if (index != last_index_ + 1 || fifo_anchor_ < 0) {
      fifo_.clear();
      fifo_anchor_ = index * kOpusClock / target_.fps;
      emitted_ = 0;
      if (soxr_ != nullptr) soxr_clear(soxr_);
    }
    last_index_ = index;
    if (!pcm.empty()) {
      std::vector<int16_t> in(pcm.size() / 2);
      std::memcpy(in.data(), pcm.data(), pcm.size());
      if (soxr_ == nullptr) {
        fifo_.insert(fifo_.end(), in.begin(), in.end());
      } else {
        std::vector<int16_t> out(
            in.size() * size_t(encode_rate_) / size_t(target_.input_sample_rate) + 64);
        size_t done = 0;
        soxr_error_t err =
            soxr_process(soxr_, in.data(), in.size(), nullptr, out.data(), out.size(), &done);
        if (err != nullptr) return Status::Internal(std::string("audio resampler: ") + err);
        fifo_.insert(fifo_.end(), out.begin(), out.begin() + static_cast<ptrdiff_t>(done));
      }
      Status s = DrainAudio();
      if (first_error.ok()) first_error = s;
    }
    return first_error;
  }

  const std::string& sdp() const { return sdp_; }
  RtpStats stats() const { return stats_; }

 private:
  static bool ContainsIdr(std::string_view au) {
    for (size_t i = 0; i + 3 < au.size(); ++i) {
      if (au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1 && (au[i + 3] & 0x1F) == 5) return true;
    }
    return false;
  }

  // Encodes and sends every whole 20 ms packet in the FIFO.
  Status DrainAudio() {
    const size_t packet = size_t(encode_rate_ / 50);
    std::array<unsigned char, 1500> out{};
    std::vector<int16_t> buf(packet);
    while (fifo_.size() >= packet) {
      std::copy_n(fifo_.begin(), packet, buf.begin());
      fifo_.erase(fifo_.begin(), fifo_.begin() + static_cast<ptrdiff_t>(packet));
      const int n = opus_encode(opus_, buf.data(), static_cast<int>(packet), out.data(),
                                static_cast<opus_int32>(out.size()));
      const int64_t ts = fifo_anchor_ + emitted_;
      emitted_ += kOpusClock / 50;
      if (n < 0) return Status::Internal(std::string("Opus encode: ") + opus_strerror(n));
      LIPSYNC_RETURN_IF_ERROR(audio_.Write(
          std::string_view(reinterpret_cast<const char*>(out.data()), size_t(n)), ts, true));
      ++stats_.audio_packets;
      stats_.bytes += n;
    }
    return Status::Ok();
  }

  RtpTarget target_;
  RtpMuxer video_, audio_;
  std::string sdp_;
  OpusEncoder* opus_ = nullptr;
  soxr_t soxr_ = nullptr;
  int encode_rate_ = kOpusClock;
  std::deque<int16_t> fifo_;
  int64_t fifo_anchor_ = -1;  // 48 kHz timestamp of the FIFO's first sample
  int64_t emitted_ = 0;       // 48 kHz samples sent since the anchor
  int64_t last_index_ = -2;
  RtpStats stats_;
};

Expected<std::unique_ptr<RtpPublisher>> RtpPublisher::Create(const RtpTarget& target) {
  auto port_ok = [](int p) { return p >= 1 && p <= 65535; };
  if (target.host.empty() || target.host.size() > 255 ||
      target.host.find_first_of("/?#@: ") != std::string::npos) {
    return Status::InvalidArgument("RTP host '" + target.host.substr(0, 64) +
                                   "': expected a host name or IPv4 address");
  }
  if (!port_ok(target.video_port) || !port_ok(target.audio_port)) {
    return Status::InvalidArgument("RTP ports " + std::to_string(target.video_port) + "/" +
                                   std::to_string(target.audio_port) + ": expected 1..65535");
  }
  if (target.width < 16 || target.width > 7680 || target.height < 16 || target.height > 4320 ||
      target.width % 2 != 0 || target.height % 2 != 0) {
    return Status::InvalidArgument("video size " + std::to_string(target.width) + "x" +
                                   std::to_string(target.height) +
                                   ": expected even, 16..7680 x 16..4320");
  }
  if (target.fps < 1 || target.fps > 120 || kOpusClock % target.fps != 0 ||
      kVideoClock % target.fps != 0) {
    return Status::InvalidArgument("fps " + std::to_string(target.fps) +
                                   ": expected 1..120 dividing 48000 and 90000");
  }
  if (Status rate = audio::CheckSupportedSampleRate(target.input_sample_rate); !rate.ok()) {
    return rate.WithContext("session audio");
  }
  if (target.max_packet_bytes < 200 || target.max_packet_bytes > 1472) {
    return Status::InvalidArgument("max_packet_bytes " + std::to_string(target.max_packet_bytes) +
                                   ": expected 200..1472");
  }
  for (int pt : {target.video_payload_type, target.audio_payload_type}) {
    if (pt < 96 || pt > 127) {
      return Status::InvalidArgument("payload type " + std::to_string(pt) +
                                     ": expected a dynamic type 96..127");
    }
  }
  auto impl = std::make_unique<Impl>();
  LIPSYNC_RETURN_IF_ERROR(impl->Init(target));
  return std::unique_ptr<RtpPublisher>(new RtpPublisher(std::move(impl)));
}

RtpPublisher::RtpPublisher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RtpPublisher::~RtpPublisher() = default;

Status RtpPublisher::SendFrame(int64_t index, std::string_view annexb, std::string_view pcm_s16le) {
  return impl_->SendFrame(index, annexb, pcm_s16le);
}

const std::string& RtpPublisher::sdp() const { return impl_->sdp(); }
RtpStats RtpPublisher::stats() const { return impl_->stats(); }

}  // namespace lipsync::webrtc
