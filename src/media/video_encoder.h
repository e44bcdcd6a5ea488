// Video encoders for live sessions: one encoder per session, fed packed RGB frames of
// a fixed size, producing one encoded access unit per frame.
//
// - H264: openh264 (default) or libx264, chosen at build time (CMake LIPSYNC_H264_ENCODER;
//   only one is linked; H264EncoderName() says which; docs/perf/h264_encoders.md): constrained
//   baseline, no B-frames, zero-latency tuning (one frame in, one access unit out), Annex B with
//   SPS/PPS repeated before every IDR, a key frame every `key_interval_frames` and on demand,
//   CBR-ish rate control with a VBV of `vbv_buffer_ms` at `bitrate_kbps`.
// - MJPEG: every frame a baseline JPEG (every frame is a key frame).
//
// An encoder is NOT thread-safe: one session drives it from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "image/image.h"

namespace lipsync::media {

enum class Codec { kH264, kMjpeg };
const char* CodecName(Codec codec);
// The H.264 encoder library linked into this binary: "x264" or "openh264".
const char* H264EncoderName();

struct EncoderOptions {
  Codec codec = Codec::kH264;
  int width = 0;   // even, 16..7680
  int height = 0;  // even, 16..4320 (openh264: at most 36864 macroblocks, e.g. 4096x2304)
  int fps = 25;
  int bitrate_kbps = 1500;  // H264
  // H264: VBV size as time at bitrate. It bounds the largest frame (a periodic IDR): at
  // 1500 kbps, 1000 ms let x264 spend 113 KB (600 ms on the wire at that rate) on an IDR,
  // 250 ms keeps it near 21 KB (docs/perf/h264_encoders.md). x264 only; openh264 uses
  // its real-time rate control at bitrate_kbps (no frame skipping).
  int vbv_buffer_ms = 250;
  int key_interval_frames = 50;      // H264: a key frame at least this often (2 s at 25 fps)
  std::string preset = "ultrafast";  // H264: x264 preset (openh264: ultra/superfast -> low
                                     // complexity, veryfast..fast -> medium, else high)
  int threads = 1;                   // H264: encoder threads (sliced, no frame delay)
  int jpeg_quality = 75;             // MJPEG
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
  // stride 0 means width*3; a stride below width*3 or a null frame is INVALID_ARGUMENT.
  virtual Expected<EncodedFrame> Encode(const uint8_t* rgb, size_t stride, bool force_key) = 0;
  virtual const EncoderOptions& options() const = 0;
  // Same, from an image: INVALID_ARGUMENT unless it is RGB (3 channels) of the
  // configured width and height.
  Expected<EncodedFrame> EncodeImage(const image::Image& frame, bool force_key);
};

// INVALID_ARGUMENT for options out of range (saying which and what is allowed).
Expected<std::unique_ptr<VideoEncoder>> CreateVideoEncoder(const EncoderOptions& options);
Status ValidateEncoderOptions(const EncoderOptions& options);

// Encodes `frames` (packed RGB24 of options' size, `stride` as in Encode) with a fresh
// encoder of `options`: one access unit per frame, frame 0 a key frame (H264: IDR with
// SPS/PPS), then a key frame every key_interval_frames. Meant for the idle loop: encode
// it once, keep the access units (they can be shared by every session with the same
// options: they are immutable), and replay them instead of re-encoding idle frames.
//
// Replaying is exact: an IDR resets the decoder (no reference to anything before it),
// so a viewer decodes a replayed run [i, j) that starts at a key frame (frames[i].key_frame)
// exactly as it was decoded when the sequence was made, whatever came before. Rules
// for the session: (1) enter the cached run only at a key frame; (2) play it in order,
// without skipping (P frames reference the previous frame); looping back to index 0
// (an IDR) is always allowed; (3) returning to live encoding needs Encode(..., force_key
// = true) for the first live frame. H264 only depends on SPS/PPS being sent before
// each IDR, which both the cache and the live encoder do. For MJPEG every entry is a
// key frame (a plain JPEG cache).
Expected<std::vector<EncodedFrame>> EncodeSequence(const EncoderOptions& options,
                                                   const std::vector<const uint8_t*>& frames,
                                                   size_t stride = 0);

// H.264 Annex B helpers (also used by tests and tools): the NAL units of an access unit
// split at 3- or 4-byte start codes (payload without the start code), and nal_unit_type
// (5 IDR, 1 non-IDR slice, 6 SEI, 7 SPS, 8 PPS, 9 AUD).
std::vector<std::string_view> SplitAnnexB(std::string_view access_unit);
inline int NalUnitType(std::string_view nal) {
  return nal.empty() ? -1 : static_cast<uint8_t>(nal[0]) & 0x1f;
}

}  // namespace lipsync::media
