// Video encoders for live sessions: one encoder per session, fed packed RGB frames of
// a fixed size, producing one encoded access unit per frame.
//
// - H264 (libx264): constrained baseline, no B-frames, zero-latency tuning (one frame
//   in, one access unit out), Annex B with SPS/PPS repeated before every IDR, a key frame
//   every `key_interval_frames` and on demand, CBR-ish rate control with a VBV of
//   `vbv_buffer_ms` at `bitrate_kbps`.
// - MJPEG: every frame a baseline JPEG (every frame is a key frame).
//
// An encoder is NOT thread-safe: one session drives it from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace lipsync::media {

enum class Codec { kH264, kMjpeg };
const char* CodecName(Codec codec);

struct EncoderOptions {
  Codec codec = Codec::kH264;
  int width = 0;   // even, 16..7680
  int height = 0;  // even, 16..4320
  int fps = 25;
  int bitrate_kbps = 1500;        // H264
  int vbv_buffer_ms = 1000;       // H264: VBV size as time at bitrate
  int key_interval_frames = 50;   // H264: a key frame at least this often (2 s at 25 fps)
  std::string preset = "ultrafast";  // H264: x264 preset
  int threads = 1;                // H264: encoder threads (sliced, no frame delay)
  int jpeg_quality = 75;          // MJPEG
};

struct EncodedFrame {
  std::string data;  // Annex B access unit, or a JPEG
  bool key_frame = false;
};

class VideoEncoder {
 public:
  virtual ~VideoEncoder() = default;
  // Encodes one packed RGB24 frame of the configured size (stride = width*3, or
  // `stride`). force_key: this frame is an IDR (with SPS/PPS). INVALID_ARGUMENT for a
  // wrong size; INTERNAL if the codec fails.
  virtual Expected<EncodedFrame> Encode(const uint8_t* rgb, size_t stride, bool force_key) = 0;
  virtual const EncoderOptions& options() const = 0;
};

// INVALID_ARGUMENT for options out of range (saying which and what is allowed).
Expected<std::unique_ptr<VideoEncoder>> CreateVideoEncoder(const EncoderOptions& options);

}  // namespace lipsync::media
