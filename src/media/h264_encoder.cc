// libx264 behind VideoEncoder. One x264_t per session, parameters fixed at creation:
// constrained baseline (x264_param_apply_profile "baseline": CAVLC, no B-frames, no 8x8
// transform, flat matrices; x264 then writes profile_idc 66 with constraint_set0/1),
// tune zerolatency (no lookahead, no frame delay, sliced threads), scenecut and intra
// refresh off (a key frame exactly every key_interval_frames and on demand), ABR with a
// VBV (max rate = bitrate), Annex B with SPS/PPS before every IDR, BT.601 limited range
// signalled in the VUI (what libyuv's RAWToI420 produces).
#include <stdint.h>  // x264.h needs the int types first
#include <x264.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <vector>

#include "libyuv/convert.h"
#include "media/encoders.h"

namespace lipsync::media {
namespace {

// x264's log lines, kept (bounded) so that a failure can say what x264 objected to;
// nothing is printed to stderr.
struct X264Log {
  std::mutex mu;
  std::string last_error;
};

void LogToString(void* priv, int level, const char* fmt, va_list args) {
  if (level > X264_LOG_WARNING || priv == nullptr) return;
  char buf[256];
  vsnprintf(buf, sizeof(buf), fmt, args);
  std::string line(buf);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  auto* log = static_cast<X264Log*>(priv);
  std::lock_guard<std::mutex> lock(log->mu);
  if (level == X264_LOG_ERROR || log->last_error.empty()) log->last_error = line;
}

class H264Encoder final : public VideoEncoder {
 public:
  explicit H264Encoder(const EncoderOptions& options)
      : options_(options), log_(std::make_unique<X264Log>()) {}
  ~H264Encoder() override {
    if (encoder_ != nullptr) x264_encoder_close(encoder_);
  }
  H264Encoder(const H264Encoder&) = delete;
  H264Encoder& operator=(const H264Encoder&) = delete;

  Status Open() {
    x264_param_t p;
    if (x264_param_default_preset(&p, options_.preset.c_str(), "zerolatency") < 0)
      return Status::InvalidArgument("x264 rejected preset '" + options_.preset.substr(0, 32) +
                                     "'");
    p.pf_log = LogToString;
    p.p_log_private = log_.get();
    p.i_log_level = X264_LOG_WARNING;
    p.i_threads = options_.threads;
    p.b_sliced_threads = 1;
    p.i_lookahead_threads = 1;
    p.i_width = options_.width;
    p.i_height = options_.height;
    p.i_csp = X264_CSP_I420;
    p.i_fps_num = uint32_t(options_.fps);
    p.i_fps_den = 1;
    p.i_timebase_num = 1;
    p.i_timebase_den = uint32_t(options_.fps);
    p.b_vfr_input = 0;
    p.i_bframe = 0;
    p.i_keyint_max = options_.key_interval_frames;
    p.i_keyint_min = 1;  // a forced IDR may come at any time
    p.i_scenecut_threshold = 0;
    p.b_intra_refresh = 0;
    p.b_open_gop = 0;
    p.b_repeat_headers = 1;
    p.b_annexb = 1;
    p.b_aud = 0;
    p.b_deterministic = 1;
    p.rc.i_rc_method = X264_RC_ABR;
    p.rc.i_bitrate = options_.bitrate_kbps;
    p.rc.i_vbv_max_bitrate = options_.bitrate_kbps;
    p.rc.i_vbv_buffer_size =
        std::max(1, int(int64_t(options_.bitrate_kbps) * options_.vbv_buffer_ms / 1000));
    p.vui.b_fullrange = 0;
    p.vui.i_colorprim = 6;  // SMPTE 170M (BT.601)
    p.vui.i_transfer = 6;
    p.vui.i_colmatrix = 6;
    if (x264_param_apply_profile(&p, "baseline") < 0) return Failed("applying profile baseline");
    encoder_ = x264_encoder_open(&p);
    if (encoder_ == nullptr) return Failed("opening the encoder");
    const size_t w = size_t(options_.width), h = size_t(options_.height);
    y_.resize(w * h);
    u_.resize((w / 2) * (h / 2));
    v_.resize((w / 2) * (h / 2));
    return Status::Ok();
  }

  Expected<EncodedFrame> Encode(const uint8_t* rgb, size_t stride, bool force_key) override {
    const int w = options_.width, h = options_.height;
    const size_t row = size_t(w) * 3;
    if (stride == 0) stride = row;
    if (rgb == nullptr || stride < row || stride > (size_t(1) << 30))
      return Status::InvalidArgument("frame stride " + std::to_string(stride) +
                                     " (or a null frame): expected a non-null RGB frame with "
                                     "stride >= " +
                                     std::to_string(row));
    // Our RGB is R,G,B in memory: libyuv calls that "RAW" (its "RGB24" is B,G,R).
    if (libyuv::RAWToI420(rgb, int(stride), y_.data(), w, u_.data(), w / 2, v_.data(), w / 2, w,
                          h) != 0)
      return Status::Internal("H264 encoder: RGB to I420 conversion failed");
    x264_picture_t in;
    x264_picture_init(&in);
    in.img.i_csp = X264_CSP_I420;
    in.img.i_plane = 3;
    in.img.plane[0] = y_.data();
    in.img.plane[1] = u_.data();
    in.img.plane[2] = v_.data();
    in.img.i_stride[0] = w;
    in.img.i_stride[1] = w / 2;
    in.img.i_stride[2] = w / 2;
    in.i_pts = next_pts_++;
    in.i_type = force_key ? X264_TYPE_IDR : X264_TYPE_AUTO;
    x264_picture_t out;
    x264_nal_t* nals = nullptr;
    int num_nals = 0;
    int bytes = x264_encoder_encode(encoder_, &nals, &num_nals, &in, &out);
    if (bytes < 0) return Failed("encoding a frame");
    if (bytes == 0 || num_nals <= 0)
      return Status::Internal(
          "H264 encoder: x264 delayed a frame: expected one access unit per frame "
          "(zero latency)");
    EncodedFrame result;
    // x264 lays the NAL units of one call out contiguously, start codes included.
    result.data.assign(reinterpret_cast<const char*>(nals[0].p_payload), size_t(bytes));
    result.key_frame = out.b_keyframe != 0;
    return result;
  }

  const EncoderOptions& options() const override { return options_; }

 private:
  Status Failed(const char* what) {
    std::string detail;
    {
      std::lock_guard<std::mutex> lock(log_->mu);
      detail = log_->last_error;
    }
    return Status::Internal("H264 encoder: x264 failed " + std::string(what) +
                            (detail.empty() ? std::string() : ": " + detail));
  }

  EncoderOptions options_;
  std::unique_ptr<X264Log> log_;  // stable address for x264's callback
  x264_t* encoder_ = nullptr;
  std::vector<uint8_t> y_, u_, v_;
  int64_t next_pts_ = 0;
};

}  // namespace

const char* H264EncoderName() { return "x264"; }

Expected<std::unique_ptr<VideoEncoder>> CreateH264Encoder(const EncoderOptions& options) {
  auto encoder = std::make_unique<H264Encoder>(options);
  LIPSYNC_RETURN_IF_ERROR(encoder->Open());
  return std::unique_ptr<VideoEncoder>(std::move(encoder));
}

}  // namespace lipsync::media
