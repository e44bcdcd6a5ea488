// Sends one live session's media as RTP to a receiver, e.g. a Janus streaming
// mountpoint (docs/STREAMING.md "WebRTC through Janus"):
//  - video: the session's H.264 access units (Annex B), packetized by libavformat's RTP
//    muxer (RFC 6184, packetization-mode 1: single NAL units and FU-A);
//  - audio: the session's PCM (s16le mono, the session's rate), encoded here with libopus
//    (20 ms packets, 48 kHz RTP clock as RFC 7587 requires) and packetized by the same
//    muxer.
// RTP timestamps come from the session's media clock, never from the wall clock: frame k
// is at k * 90000 / fps on the video clock, and its audio starts at k * 48000 / fps on
// the audio clock. Packets are sent when SendFrame is called, so the caller's pacing
// (the session sends each frame when it is due) is the RTP pacing that keeps a
// receiver that stamps by arrival (Janus's sender reports) in sync.
//
// Owns its UDP sockets (through libavformat), encoder and resampler. Not thread-safe:
// one thread calls SendFrame (the session's sink).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace lipsync::webrtc {

struct RtpTarget {
  std::string host = "127.0.0.1";
  int video_port = 0;  // 1..65535
  int audio_port = 0;  // 1..65535
  int video_payload_type = 96;
  int audio_payload_type = 111;
  int width = 0, height = 0;      // the video's size (even, 16..7680 x 16..4320)
  int fps = 25;                   // the session's frame rate
  int input_sample_rate = 16000;  // the session's PCM rate (docs/AUDIO.md rates)
  int audio_bitrate_bps = 32000;  // Opus target
  int max_packet_bytes = 1200;    // RTP packet size limit (fits a TURN-relayed path)
};

struct RtpStats {
  int64_t video_frames = 0;
  int64_t audio_packets = 0;
  int64_t bytes = 0;  // payload bytes handed to the muxers
};

class RtpPublisher {
 public:
  // INVALID_ARGUMENT for a bad target (each field named); INTERNAL when libavformat or
  // libopus refuse to set up (their message included).
  static Expected<std::unique_ptr<RtpPublisher>> Create(const RtpTarget& target);
  ~RtpPublisher();
  RtpPublisher(const RtpPublisher&) = delete;
  RtpPublisher& operator=(const RtpPublisher&) = delete;

  // Sends frame `index` of the session: its access unit (may be empty: audio only) and
  // the PCM it owns (rate/fps samples of s16le mono; may be empty: video only).
  // Frame indices must not go backwards. An error leaves the publisher usable.
  Status SendFrame(int64_t index, std::string_view annexb, std::string_view pcm_s16le);

  // An SDP describing both streams (for receivers such as ffmpeg in the tests).
  const std::string& sdp() const;
  RtpStats stats() const;

 private:
  class Impl;
  explicit RtpPublisher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lipsync::webrtc
