#include "image/image.h"
#include "media/encoders.h"

namespace lipsync::media {
namespace {

class MjpegEncoder final : public VideoEncoder {
 public:
  explicit MjpegEncoder(const EncoderOptions& options) : options_(options) {}

  Expected<EncodedFrame> Encode(const uint8_t* rgb, size_t stride, bool /*force_key*/) override {
    const size_t row = size_t(options_.width) * 3;
    if (stride == 0) stride = row;
    if (rgb == nullptr || stride < row)
      return Status::InvalidArgument("frame stride " + std::to_string(stride) +
                                     " (or a null frame): expected a non-null RGB frame with "
                                     "stride >= " +
                                     std::to_string(row));
    auto jpeg =
        image::EncodeJpeg(rgb, options_.width, options_.height, stride, options_.jpeg_quality);
    if (!jpeg.ok()) return jpeg.status().WithContext("MJPEG encoder");
    EncodedFrame out;
    out.data = std::move(jpeg).value();
    out.key_frame = true;
    return out;
  }

  const EncoderOptions& options() const override { return options_; }

 private:
  EncoderOptions options_;
};

}  // namespace

std::unique_ptr<VideoEncoder> CreateMjpegEncoder(const EncoderOptions& options) {
  return std::make_unique<MjpegEncoder>(options);
}

}  // namespace lipsync::media
