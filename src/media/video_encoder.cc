#include "media/video_encoder.h"

#include <cstring>

#include "media/encoders.h"

namespace lipsync::media {

const char* CodecName(Codec codec) {
  switch (codec) {
    case Codec::kH264:
      return "h264";
    case Codec::kMjpeg:
      return "mjpeg";
  }
  return "unknown";
}

namespace {

Status OutOfRange(const char* name, long long value, long long lo, long long hi,
                  const char* extra = "") {
  return Status::InvalidArgument("encoder option " + std::string(name) + " = " +
                                 std::to_string(value) + " is out of range: expected " +
                                 std::to_string(lo) + ".." + std::to_string(hi) + extra);
}

bool KnownPreset(const std::string& preset) {
  static const char* const kPresets[] = {"ultrafast", "superfast", "veryfast", "faster",  "fast",
                                         "medium",    "slow",      "slower",   "veryslow"};
  for (const char* p : kPresets)
    if (preset == p) return true;
  return false;
}

}  // namespace

Status ValidateEncoderOptions(const EncoderOptions& o) {
  if (o.codec != Codec::kH264 && o.codec != Codec::kMjpeg)
    return Status::InvalidArgument("encoder option codec is unknown: expected h264 or mjpeg");
  if (o.width < 16 || o.width > 7680 || o.width % 2 != 0)
    return OutOfRange("width", o.width, 16, 7680, " and even");
  if (o.height < 16 || o.height > 4320 || o.height % 2 != 0)
    return OutOfRange("height", o.height, 16, 4320, " and even");
  if (o.fps < 1 || o.fps > 120) return OutOfRange("fps", o.fps, 1, 120);
  if (o.codec == Codec::kMjpeg) {
    if (o.jpeg_quality < 1 || o.jpeg_quality > 100)
      return OutOfRange("jpeg_quality", o.jpeg_quality, 1, 100);
    return Status::Ok();
  }
  if (o.bitrate_kbps < 50 || o.bitrate_kbps > 100000)
    return OutOfRange("bitrate_kbps", o.bitrate_kbps, 50, 100000);
  if (o.vbv_buffer_ms < 10 || o.vbv_buffer_ms > 10000)
    return OutOfRange("vbv_buffer_ms", o.vbv_buffer_ms, 10, 10000);
  if (o.key_interval_frames < 1 || o.key_interval_frames > 3000)
    return OutOfRange("key_interval_frames", o.key_interval_frames, 1, 3000);
  if (o.threads < 1 || o.threads > 16) return OutOfRange("threads", o.threads, 1, 16);
  if (!KnownPreset(o.preset)) {
    std::string shown = o.preset.substr(0, 32);
    for (char& c : shown)
      if (c < 0x20 || c > 0x7e) c = '?';
    return Status::InvalidArgument(
        "encoder option preset '" + shown + (o.preset.size() > 32 ? "...'" : "'") +
        " is unknown: expected one of ultrafast, superfast, veryfast, faster, fast, medium, "
        "slow, slower, veryslow");
  }
  return Status::Ok();
}

Expected<std::unique_ptr<VideoEncoder>> CreateVideoEncoder(const EncoderOptions& options) {
  LIPSYNC_RETURN_IF_ERROR(ValidateEncoderOptions(options));
  if (options.codec == Codec::kMjpeg) return CreateMjpegEncoder(options);
  return CreateH264Encoder(options);
}

Expected<EncodedFrame> VideoEncoder::EncodeImage(const image::Image& frame, bool force_key) {
  const EncoderOptions& o = options();
  if (frame.channels != 3 || frame.width != o.width || frame.height != o.height ||
      frame.pixels.size() < frame.stride() * size_t(frame.height))
    return Status::InvalidArgument(
        "frame is " + std::to_string(frame.width) + "x" + std::to_string(frame.height) + "x" +
        std::to_string(frame.channels) + ": expected RGB " + std::to_string(o.width) + "x" +
        std::to_string(o.height) + "x3 (the encoder's configured size)");
  return Encode(frame.pixels.data(), frame.stride(), force_key);
}

Expected<std::vector<EncodedFrame>> EncodeSequence(const EncoderOptions& options,
                                                   const std::vector<const uint8_t*>& frames,
                                                   size_t stride) {
  if (frames.empty())
    return Status::InvalidArgument("EncodeSequence: no frames: expected at least one");
  LIPSYNC_ASSIGN_OR_RETURN(auto encoder, CreateVideoEncoder(options));
  std::vector<EncodedFrame> out;
  out.reserve(frames.size());
  for (size_t i = 0; i < frames.size(); ++i) {
    LIPSYNC_ASSIGN_OR_RETURN(EncodedFrame f, encoder->Encode(frames[i], stride, i == 0));
    out.push_back(std::move(f));
  }
  return out;
}

std::vector<std::string_view> SplitAnnexB(std::string_view au) {
  std::vector<std::string_view> nals;
  const size_t n = au.size();
  size_t i = 0;
  size_t start = std::string_view::npos;  // payload start of the current NAL
  while (i + 2 < n) {
    if (au[i] == 0 && au[i + 1] == 0 && au[i + 2] == 1) {
      if (start != std::string_view::npos) {
        size_t end = i;
        // A 4-byte start code's leading zero (and trailing_zero_8bits) is not payload.
        while (end > start && au[end - 1] == 0) --end;
        nals.push_back(au.substr(start, end - start));
      }
      i += 3;
      start = i;
    } else {
      ++i;
    }
  }
  if (start != std::string_view::npos && start < n) nals.push_back(au.substr(start));
  return nals;
}

}  // namespace lipsync::media
