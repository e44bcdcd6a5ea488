// Cisco's openh264 (Debian libopenh264, BSD-2) behind VideoEncoder, the alternative to
// h264_encoder.cc (x264) selected with -DLIPSYNC_H264_ENCODER=openh264. Same contract:
// real-time camera mode, one spatial and temporal layer, baseline profile with CAVLC
// (openh264 writes profile_idc 66 with constraint_set0/1: constrained baseline), an IDR
// every key_interval_frames and on demand (ForceIntraFrame) with SPS/PPS before it
// (constant ids), bitrate rate control with frame skipping off (one access unit per
// frame), Annex B. vbv_buffer_ms is not applied (openh264 has no VBV size setting).
#include <wels/codec_api.h>

#include <cstring>
#include <mutex>
#include <vector>

#include "libyuv/convert.h"
#include "media/encoders.h"

namespace lipsync::media {
namespace {

struct WelsLog {
  std::mutex mu;
  std::string last_error;
};

void LogToString(void* ctx, int level, const char* message) {
  if (ctx == nullptr || message == nullptr || level > WELS_LOG_ERROR) return;
  auto* log = static_cast<WelsLog*>(ctx);
  std::string line(message, strnlen(message, 255));
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  std::lock_guard<std::mutex> lock(log->mu);
  log->last_error = line;
}

ECOMPLEXITY_MODE ComplexityFor(const std::string& preset) {
  if (preset == "ultrafast" || preset == "superfast") return LOW_COMPLEXITY;
  if (preset == "veryfast" || preset == "faster" || preset == "fast") return MEDIUM_COMPLEXITY;
  return HIGH_COMPLEXITY;
}

class OpenH264Encoder final : public VideoEncoder {
 public:
  explicit OpenH264Encoder(const EncoderOptions& options)
      : options_(options), log_(std::make_unique<WelsLog>()) {}
  ~OpenH264Encoder() override {
    if (encoder_ != nullptr) {
      encoder_->Uninitialize();
      WelsDestroySVCEncoder(encoder_);
    }
  }
  OpenH264Encoder(const OpenH264Encoder&) = delete;
  OpenH264Encoder& operator=(const OpenH264Encoder&) = delete;

  Status Open() {
    // H.264 level 5.2's largest frame (36864 macroblocks, e.g. 4096x2304): openh264 fails
    // to initialize beyond it.
    const int64_t macroblocks =
        int64_t((options_.width + 15) / 16) * int64_t((options_.height + 15) / 16);
    if (macroblocks > 36864)
      return Status::InvalidArgument(
          "encoder option width x height = " + std::to_string(options_.width) + "x" +
          std::to_string(options_.height) +
          " is too large for openh264: expected at most 36864 macroblocks (e.g. 4096x2304)");
    if (WelsCreateSVCEncoder(&encoder_) != 0 || encoder_ == nullptr) {
      encoder_ = nullptr;
      return Status::Internal("H264 encoder: openh264 could not create an encoder");
    }
    WelsTraceCallback callback = LogToString;
    void* ctx = log_.get();
    int level = WELS_LOG_ERROR;
    encoder_->SetOption(ENCODER_OPTION_TRACE_CALLBACK, &callback);
    encoder_->SetOption(ENCODER_OPTION_TRACE_CALLBACK_CONTEXT, &ctx);
    encoder_->SetOption(ENCODER_OPTION_TRACE_LEVEL, &level);
    const int w = options_.width, h = options_.height, bps = options_.bitrate_kbps * 1000;
    SEncParamExt p;
    encoder_->GetDefaultParams(&p);
    p.iUsageType = CAMERA_VIDEO_REAL_TIME;
    p.iPicWidth = w;
    p.iPicHeight = h;
    p.fMaxFrameRate = float(options_.fps);
    p.iTargetBitrate = bps;
    p.iMaxBitrate = bps;
    p.iRCMode = RC_BITRATE_MODE;
    p.bEnableFrameSkip = false;
    p.iTemporalLayerNum = 1;
    p.iSpatialLayerNum = 1;
    p.uiIntraPeriod = unsigned(options_.key_interval_frames);
    p.bEnableSceneChangeDetect = false;  // key frames only on schedule and on demand
    p.iMultipleThreadIdc = options_.threads;
    p.iEntropyCodingModeFlag = 0;  // CAVLC: baseline
    p.iComplexityMode = ComplexityFor(options_.preset);
    p.eSpsPpsIdStrategy = CONSTANT_ID;
    p.bEnableDenoise = false;
    p.bEnableLongTermReference = false;
    SSpatialLayerConfig& layer = p.sSpatialLayers[0];
    layer.iVideoWidth = w;
    layer.iVideoHeight = h;
    layer.fFrameRate = float(options_.fps);
    layer.iSpatialBitrate = bps;
    layer.iMaxSpatialBitrate = bps;
    layer.uiProfileIdc = PRO_BASELINE;
    if (options_.threads > 1) {
      layer.sSliceArgument.uiSliceMode = SM_FIXEDSLCNUM_SLICE;
      layer.sSliceArgument.uiSliceNum = unsigned(options_.threads);
    } else {
      layer.sSliceArgument.uiSliceMode = SM_SINGLE_SLICE;
    }
    // BT.601 limited range, as libyuv's RAWToI420 produces.
    layer.bVideoSignalTypePresent = true;
    layer.uiVideoFormat = VF_UNDEF;
    layer.bFullRange = false;
    layer.bColorDescriptionPresent = true;
    layer.uiColorPrimaries = CP_SMPTE170M;
    layer.uiTransferCharacteristics = TRC_SMPTE170M;
    layer.uiColorMatrix = CM_SMPTE170M;
    if (encoder_->InitializeExt(&p) != cmResultSuccess) return Failed("initializing");
    int format = videoFormatI420;
    if (encoder_->SetOption(ENCODER_OPTION_DATAFORMAT, &format) != cmResultSuccess)
      return Failed("setting the I420 input format");
    y_.resize(size_t(w) * h);
    u_.resize(size_t(w / 2) * (h / 2));
    v_.resize(u_.size());
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
    SSourcePicture pic;
    std::memset(&pic, 0, sizeof(pic));
    pic.iPicWidth = w;
    pic.iPicHeight = h;
    pic.iColorFormat = videoFormatI420;
    pic.iStride[0] = w;
    pic.iStride[1] = pic.iStride[2] = w / 2;
    pic.pData[0] = y_.data();
    pic.pData[1] = u_.data();
    pic.pData[2] = v_.data();
    pic.uiTimeStamp = (frames_++) * 1000 / options_.fps;
    if (force_key && encoder_->ForceIntraFrame(true) != cmResultSuccess)
      return Failed("forcing a key frame");
    SFrameBSInfo info;
    std::memset(&info, 0, sizeof(info));
    if (encoder_->EncodeFrame(&pic, &info) != cmResultSuccess) return Failed("encoding a frame");
    if (info.eFrameType == videoFrameTypeSkip || info.eFrameType == videoFrameTypeInvalid)
      return Status::Internal(
          "H264 encoder: openh264 skipped a frame: expected one access unit per frame");
    EncodedFrame out;
    for (int l = 0; l < info.iLayerNum; ++l) {
      const SLayerBSInfo& layer = info.sLayerInfo[l];
      size_t bytes = 0;
      for (int n = 0; n < layer.iNalCount; ++n) bytes += size_t(layer.pNalLengthInByte[n]);
      out.data.append(reinterpret_cast<const char*>(layer.pBsBuf), bytes);
    }
    out.key_frame = info.eFrameType == videoFrameTypeIDR;
    return out;
  }

  const EncoderOptions& options() const override { return options_; }

 private:
  Status Failed(const char* what) {
    std::string detail;
    {
      std::lock_guard<std::mutex> lock(log_->mu);
      detail = log_->last_error;
    }
    return Status::Internal("H264 encoder: openh264 failed " + std::string(what) +
                            (detail.empty() ? std::string() : ": " + detail));
  }

  EncoderOptions options_;
  std::unique_ptr<WelsLog> log_;  // stable address for openh264's callback
  ISVCEncoder* encoder_ = nullptr;
  std::vector<uint8_t> y_, u_, v_;
  int64_t frames_ = 0;
};

}  // namespace

const char* H264EncoderName() { return "openh264"; }

Expected<std::unique_ptr<VideoEncoder>> CreateH264Encoder(const EncoderOptions& options) {
  auto encoder = std::make_unique<OpenH264Encoder>(options);
  LIPSYNC_RETURN_IF_ERROR(encoder->Open());
  return std::unique_ptr<VideoEncoder>(std::move(encoder));
}

}  // namespace lipsync::media
