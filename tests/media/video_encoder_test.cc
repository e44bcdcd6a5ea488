#include "media/video_encoder.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>

#include "image/image.h"
#include "media/h264_test_util.h"

namespace lipsync::media {
namespace {

using testing::DecodeWithFfmpeg;
using testing::Psnr;
using testing::SliceType;

// A smooth synthetic "face": a gradient background that drifts, and an ellipse (a
// mouth) that opens and closes and moves, so consecutive frames differ.
image::Image SyntheticFrame(int w, int h, int index) {
  image::Image img(w, h, 3);
  const double open = 0.5 + 0.5 * std::sin(index * 0.5);
  const double cx = w * (0.5 + 0.1 * std::sin(index * 0.13)), cy = h * 0.65;
  const double rx = w * 0.12, ry = h * (0.02 + 0.08 * open);
  for (int y = 0; y < h; ++y) {
    uint8_t* row = img.row(y);
    for (int x = 0; x < w; ++x) {
      double dx = (x - cx) / rx, dy = (y - cy) / ry;
      double d = dx * dx + dy * dy;
      uint8_t* p = row + size_t(x) * 3;
      if (d < 1.0) {
        p[0] = uint8_t(120 + 60 * d);
        p[1] = uint8_t(30 + 40 * d);
        p[2] = uint8_t(40 + 30 * d);
      } else {
        p[0] = uint8_t((x + index * 2) * 200 / (w + 100) + 30);
        p[1] = uint8_t(y * 180 / h + 40);
        p[2] = uint8_t(((x + y) / 2 + index) % 256 / 2 + 60);
      }
    }
  }
  return img;
}

EncoderOptions H264Options(int w, int h) {
  EncoderOptions o;
  o.codec = Codec::kH264;
  o.width = w;
  o.height = h;
  return o;
}

std::vector<int> NalTypes(const std::string& au) {
  std::vector<int> types;
  for (std::string_view nal : SplitAnnexB(au)) types.push_back(NalUnitType(nal));
  return types;
}

bool HasType(const std::vector<int>& types, int t) {
  return std::find(types.begin(), types.end(), t) != types.end();
}

int CountVcl(const std::vector<int>& types) {
  int n = 0;
  for (int t : types) n += (t == 1 || t == 5);
  return n;
}

TEST(SplitAnnexBTest, ThreeAndFourByteStartCodes) {
  std::string s("\x00\x00\x00\x01\x67\x42\x00\x00\x01\x68\xce\x00\x00\x00\x01\x65\x88", 17);
  auto nals = SplitAnnexB(s);
  ASSERT_EQ(nals.size(), 3u);
  EXPECT_EQ(NalUnitType(nals[0]), 7);
  EXPECT_EQ(nals[0].size(), 2u);
  EXPECT_EQ(NalUnitType(nals[1]), 8);
  EXPECT_EQ(nals[1].size(), 2u);
  EXPECT_EQ(NalUnitType(nals[2]), 5);
  EXPECT_TRUE(SplitAnnexB("").empty());
  EXPECT_TRUE(SplitAnnexB(std::string("\x12\x34", 2)).empty());
}

class H264SizeTest : public ::testing::TestWithParam<std::pair<int, int>> {};

// First frame IDR with SPS+PPS, then P frames without headers; one picture (one VCL
// NAL, threads = 1) per access unit, never a B slice; profile constrained baseline.
TEST_P(H264SizeTest, KeyFramesHeadersAndProfile) {
  auto [w, h] = GetParam();
  auto enc = CreateVideoEncoder(H264Options(w, h));
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  for (int i = 0; i < 12; ++i) {
    image::Image frame = SyntheticFrame(w, h, i);
    auto out = (*enc)->EncodeImage(frame, false);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    ASSERT_FALSE(out->data.empty());
    auto types = NalTypes(out->data);
    EXPECT_EQ(CountVcl(types), 1) << "frame " << i;
    for (std::string_view nal : SplitAnnexB(out->data)) {
      int t = NalUnitType(nal);
      if (t == 1 || t == 5) {
        EXPECT_NE(SliceType(nal), 1) << "B slice in frame " << i;
      }
    }
    if (i == 0) {
      EXPECT_TRUE(out->key_frame);
      EXPECT_TRUE(HasType(types, 7));
      EXPECT_TRUE(HasType(types, 8));
      EXPECT_TRUE(HasType(types, 5));
      for (std::string_view nal : SplitAnnexB(out->data)) {
        if (NalUnitType(nal) != 7) continue;
        ASSERT_GE(nal.size(), 4u);
        EXPECT_EQ(uint8_t(nal[1]), 66) << "profile_idc";
        EXPECT_TRUE(uint8_t(nal[2]) & 0x40) << "constraint_set1_flag (constrained baseline)";
      }
    } else {
      EXPECT_FALSE(out->key_frame) << "frame " << i;
      EXPECT_EQ(types, std::vector<int>{1}) << "frame " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, H264SizeTest,
                         ::testing::Values(std::make_pair(1280, 720), std::make_pair(176, 144)));

TEST(H264EncoderTest, ForceKeyMakesIdrWithSpsPps) {
  auto enc = CreateVideoEncoder(H264Options(320, 240));
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  for (int i = 0; i < 8; ++i) {
    auto out = (*enc)->EncodeImage(SyntheticFrame(320, 240, i), i == 5);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    auto types = NalTypes(out->data);
    bool key = i == 0 || i == 5;
    EXPECT_EQ(out->key_frame, key) << "frame " << i;
    EXPECT_EQ(HasType(types, 5), key) << "frame " << i;
    EXPECT_EQ(HasType(types, 7), key) << "frame " << i;
    EXPECT_EQ(HasType(types, 8), key) << "frame " << i;
  }
}

TEST(H264EncoderTest, KeyFrameEveryKeyInterval) {
  EncoderOptions o = H264Options(160, 96);
  o.key_interval_frames = 10;
  auto enc = CreateVideoEncoder(o);
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  std::vector<int> keys;
  for (int i = 0; i < 31; ++i) {
    auto out = (*enc)->EncodeImage(SyntheticFrame(160, 96, i), false);
    ASSERT_TRUE(out.ok());
    if (out->key_frame) {
      keys.push_back(i);
      EXPECT_TRUE(HasType(NalTypes(out->data), 7));
    }
  }
  EXPECT_EQ(keys, (std::vector<int>{0, 10, 20, 30}));
}

TEST(H264EncoderTest, SlicedThreadsStillOneAccessUnitPerFrame) {
  EncoderOptions o = H264Options(640, 360);
  o.threads = 2;
  auto enc = CreateVideoEncoder(o);
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  for (int i = 0; i < 5; ++i) {
    auto out = (*enc)->EncodeImage(SyntheticFrame(640, 360, i), false);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_GE(CountVcl(NalTypes(out->data)), 1);
  }
}

// The stream decodes with an independent decoder (ffmpeg) to as many frames as went
// in, in order, each close to its input at the default bitrate.
TEST(H264EncoderTest, DecodesWithFfmpegAtGoodQuality) {
  const int w = 1280, h = 720, n = 40;
  auto enc = CreateVideoEncoder(H264Options(w, h));
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  std::vector<image::Image> frames;
  std::string stream;
  for (int i = 0; i < n; ++i) {
    frames.push_back(SyntheticFrame(w, h, i));
    auto out = (*enc)->EncodeImage(frames.back(), i == 25);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    stream += out->data;
  }
  std::vector<uint8_t> rgb;
  std::string error;
  ASSERT_TRUE(DecodeWithFfmpeg(stream, w, h, &rgb, &error)) << error;
  const size_t frame_bytes = size_t(w) * h * 3;
  ASSERT_EQ(rgb.size() / frame_bytes, size_t(n));
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    double psnr = Psnr(rgb.data() + i * frame_bytes, frames[i].pixels.data(), frame_bytes);
    EXPECT_GE(psnr, 27.0) << "frame " << i;
    sum += psnr;
  }
  EXPECT_GE(sum / n, 30.0);
  // Bitrate near the target: 1500 kbps at 25 fps is 7500 bytes per frame on average;
  // allow the first IDR and the VBV's slack.
  EXPECT_LT(double(stream.size()) / n, 7500 * 2.0);
}

// A cached sequence (IDR first) replayed after other content decodes exactly as it
// decodes alone; live encoding resumes with a forced IDR.
TEST(H264EncoderTest, CachedSequenceReplaysExactly) {
  const int w = 320, h = 240;
  EncoderOptions o = H264Options(w, h);
  o.bitrate_kbps = 400;
  std::vector<image::Image> idle;
  std::vector<const uint8_t*> ptrs;
  for (int i = 0; i < 12; ++i) idle.push_back(SyntheticFrame(w, h, 100 + i));
  for (auto& f : idle) ptrs.push_back(f.pixels.data());
  auto cached = EncodeSequence(o, ptrs);
  ASSERT_TRUE(cached.ok()) << cached.status().ToString();
  ASSERT_EQ(cached->size(), idle.size());
  EXPECT_TRUE(cached->front().key_frame);
  std::string cache_alone;
  for (auto& f : *cached) cache_alone += f.data;

  auto live = CreateVideoEncoder(o);
  ASSERT_TRUE(live.ok());
  std::string stream;
  for (int i = 0; i < 7; ++i) stream += (*live)->EncodeImage(SyntheticFrame(w, h, i), false)->data;
  stream += cache_alone;  // idle: replayed twice (a loop), no re-encoding
  stream += cache_alone;
  auto resumed = (*live)->EncodeImage(SyntheticFrame(w, h, 7), true);  // back to live
  ASSERT_TRUE(resumed.ok());
  EXPECT_TRUE(resumed->key_frame);
  stream += resumed->data;
  stream += (*live)->EncodeImage(SyntheticFrame(w, h, 8), false)->data;

  std::vector<uint8_t> all, alone;
  std::string error;
  ASSERT_TRUE(DecodeWithFfmpeg(stream, w, h, &all, &error)) << error;
  ASSERT_TRUE(DecodeWithFfmpeg(cache_alone, w, h, &alone, &error)) << error;
  const size_t fb = size_t(w) * h * 3;
  ASSERT_EQ(all.size() / fb, 7 + 2 * idle.size() + 2);
  ASSERT_EQ(alone.size() / fb, idle.size());
  for (size_t rep = 0; rep < 2; ++rep)
    EXPECT_EQ(0, std::memcmp(all.data() + (7 + rep * idle.size()) * fb, alone.data(), alone.size()))
        << "replay " << rep << " differs from the cache decoded alone";
  const size_t last = 7 + 2 * idle.size();
  EXPECT_GE(Psnr(all.data() + last * fb, SyntheticFrame(w, h, 7).pixels.data(), fb), 28.0);
  EXPECT_GE(Psnr(all.data() + (last + 1) * fb, SyntheticFrame(w, h, 8).pixels.data(), fb), 28.0);
}

TEST(VideoEncoderTest, InvalidOptionsRejected) {
  auto expect_invalid = [](EncoderOptions o, const char* what) {
    auto enc = CreateVideoEncoder(o);
    ASSERT_FALSE(enc.ok()) << what;
    EXPECT_EQ(enc.status().code(), StatusCode::kInvalidArgument) << what;
    EXPECT_THAT(enc.status().message(), ::testing::HasSubstr(what));
  };
  EncoderOptions o = H264Options(1280, 720);
  o.width = 1281;
  expect_invalid(o, "width");
  o = H264Options(0, 720);
  expect_invalid(o, "width");
  o = H264Options(1280, 5000);
  expect_invalid(o, "height");
  o = H264Options(1280, 720);
  o.fps = 0;
  expect_invalid(o, "fps");
  o = H264Options(1280, 720);
  o.bitrate_kbps = 0;
  expect_invalid(o, "bitrate_kbps");
  o = H264Options(1280, 720);
  o.key_interval_frames = 0;
  expect_invalid(o, "key_interval_frames");
  o = H264Options(1280, 720);
  o.preset = std::string(1000, 'x');
  expect_invalid(o, "preset");
  o = H264Options(1280, 720);
  o.codec = Codec::kMjpeg;
  o.jpeg_quality = 101;
  expect_invalid(o, "jpeg_quality");
}

// 8K passes the common validation; openh264 stops at H.264 level 5.2's largest frame
// and says so (INVALID_ARGUMENT) instead of failing inside the library.
TEST(VideoEncoderTest, LargestFramesByBackend) {
  const std::string backend = H264EncoderName();
  ASSERT_TRUE(backend == "x264" || backend == "openh264") << backend;
  EXPECT_TRUE(CreateVideoEncoder(H264Options(4096, 2304)).ok());
  auto huge = CreateVideoEncoder(H264Options(7680, 4320));
  if (backend == "openh264") {
    ASSERT_FALSE(huge.ok());
    EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(huge.status().message(), ::testing::HasSubstr("macroblocks"));
  } else {
    EXPECT_TRUE(huge.ok()) << huge.status().ToString();
  }
}

TEST(VideoEncoderTest, WrongFrameSizeRejected) {
  for (Codec codec : {Codec::kH264, Codec::kMjpeg}) {
    EncoderOptions o = H264Options(320, 240);
    o.codec = codec;
    auto enc = CreateVideoEncoder(o);
    ASSERT_TRUE(enc.ok()) << CodecName(codec);
    auto wrong = (*enc)->EncodeImage(SyntheticFrame(320, 242, 0), false);
    ASSERT_FALSE(wrong.ok());
    EXPECT_EQ(wrong.status().code(), StatusCode::kInvalidArgument);
    image::Image gray(320, 240, 1);
    EXPECT_EQ((*enc)->EncodeImage(gray, false).status().code(), StatusCode::kInvalidArgument);
    image::Image frame = SyntheticFrame(320, 240, 0);
    EXPECT_EQ((*enc)->Encode(frame.pixels.data(), 320 * 3 - 1, false).status().code(),
              StatusCode::kInvalidArgument);
    EXPECT_EQ((*enc)->Encode(nullptr, 0, false).status().code(), StatusCode::kInvalidArgument);
    // Still usable after the rejections.
    EXPECT_TRUE((*enc)->EncodeImage(frame, false).ok()) << CodecName(codec);
  }
}

TEST(MjpegEncoderTest, RoundTripWithDecodeJpeg) {
  EncoderOptions o;
  o.codec = Codec::kMjpeg;
  o.width = 640;
  o.height = 360;
  o.jpeg_quality = 85;
  auto enc = CreateVideoEncoder(o);
  ASSERT_TRUE(enc.ok()) << enc.status().ToString();
  for (int i = 0; i < 3; ++i) {
    image::Image frame = SyntheticFrame(640, 360, i);
    auto out = (*enc)->EncodeImage(frame, false);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_TRUE(out->key_frame);
    auto decoded = image::DecodeJpeg(out->data);
    ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
    ASSERT_EQ(decoded->width, 640);
    ASSERT_EQ(decoded->height, 360);
    EXPECT_GE(Psnr(decoded->pixels.data(), frame.pixels.data(), frame.pixels.size()), 30.0);
  }
  EXPECT_STREQ(CodecName(Codec::kMjpeg), "mjpeg");
  EXPECT_STREQ(CodecName(Codec::kH264), "h264");
}

}  // namespace
}  // namespace lipsync::media
