// Private to src/media: the concrete encoders behind CreateVideoEncoder. Options are
// validated by the caller (ValidateEncoderOptions) before these are called.
#pragma once

#include <memory>

#include "media/video_encoder.h"

namespace lipsync::media {

// libx264: constrained baseline, zero latency (see video_encoder.h). INTERNAL if x264
// rejects the parameters.
Expected<std::unique_ptr<VideoEncoder>> CreateH264Encoder(const EncoderOptions& options);
// image::EncodeJpeg at options.jpeg_quality; every frame a key frame.
std::unique_ptr<VideoEncoder> CreateMjpegEncoder(const EncoderOptions& options);

}  // namespace lipsync::media
