#include "compositing/compositor.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "avatar/avatar_fixture.h"
#include "compositing/compositing_test_util.h"
#include "image/region_jpeg.h"

namespace lipsync::compositing {
namespace {

constexpr int kW = 320, kH = 240, kFrames = 8;
// The settings an Avatar encodes its cached JPEGs with (quality 75, its default
// restart interval): region output must equal a full encode with these.
const image::JpegSettings kAvatarJpeg{75, avatar::AvatarOptions{}.restart_interval_mcus};
const avatar::CropRect kRect{100, 50, 220, 170};

class CompositorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::WriteAvatar(tmp_.path(), "a", kFrames, kW, kH, kRect);
    for (int i = 0; i < 5; ++i) {
      auto p = testing::MakePrediction(i);
      preds_.insert(preds_.end(), p.begin(), p.end());
    }
  }
  std::shared_ptr<avatar::Avatar> Open(bool region_jpeg, bool compact, int quality = 75) {
    avatar::AvatarOptions o;
    o.id = "a";
    o.frames_dir = dir_ + "/frames";
    o.crop_rects_path = dir_ + "/crop_rects.json";
    o.region_jpeg = region_jpeg;
    o.compact = compact;
    o.jpeg_quality = quality;
    auto a = avatar::Avatar::Open(o);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return *a;
  }
  ModelOutputView Output() const { return {preds_.data(), OutputType::kFloat32, 5}; }

  testing::TempDir tmp_;
  std::string dir_;
  std::vector<float> preds_;
  Compositor compositor_{2};
};

// Raw output equals background + paste-back done frame by frame; frames in order.
TEST_F(CompositorTest, RawMatchesSequentialPaste) {
  auto a = Open(false, false);
  CompositeOptions opt;
  opt.format = config::OutputFormat::kRaw;
  opt.feather_px = 3;
  auto r = compositor_.Compose(*a, Output(), 6, avatar::LoopMode::kWrap, opt);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->background_indices, (std::vector<int>{6, 7, 0, 1, 2}));
  EXPECT_EQ(r->frame_width, kW);
  PasteBack paste;
  std::vector<uint8_t> face(320 * 320 * 3);
  for (int i = 0; i < 5; ++i) {
    int bg = r->background_indices[i];
    image::Image expected = testing::MakeFrame(kW, kH, bg);
    ModelOutputToRgb(preds_.data() + size_t(i) * 3 * 320 * 320, OutputType::kFloat32, face.data());
    ASSERT_TRUE(paste
                    .Paste(face.data(), opt.paste_mode, 3, a->rect(bg), expected.pixels.data(), kW,
                           kH, expected.stride())
                    .ok());
    ASSERT_EQ(r->frames[i].size(), expected.pixels.size());
    EXPECT_TRUE(std::equal(expected.pixels.begin(), expected.pixels.end(),
                           reinterpret_cast<const uint8_t*>(r->frames[i].data())))
        << "frame " << i;
  }
  EXPECT_GT(r->timings.paste_ms, 0);
  EXPECT_EQ(r->timings.encode_ms >= 0, true);
}

// JPEG output: plain encode, region-spliced encode and compact storage all decode to
// the composite; region and compact give the bytes of a full restart-interval encode.
TEST_F(CompositorTest, JpegPathsAgree) {
  CompositeOptions raw;
  raw.format = config::OutputFormat::kRaw;
  CompositeOptions jpeg;
  auto plain = Open(false, false);
  auto region = Open(true, false);
  auto compact = Open(true, true);
  auto expected = compositor_.Compose(*plain, Output(), 3, avatar::LoopMode::kPingPong, raw);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(expected->background_indices, (std::vector<int>{3, 4, 5, 6, 7}));
  auto a = compositor_.Compose(*plain, Output(), 3, avatar::LoopMode::kPingPong, jpeg);
  auto b = compositor_.Compose(*region, Output(), 3, avatar::LoopMode::kPingPong, jpeg);
  auto c = compositor_.Compose(*compact, Output(), 3, avatar::LoopMode::kPingPong, jpeg);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  for (int i = 0; i < 5; ++i) {
    const auto& raw_frame = expected->frames[i];
    auto full = image::EncodeJpegWithRestarts(reinterpret_cast<const uint8_t*>(raw_frame.data()),
                                              kW, kH, size_t(kW) * 3, kAvatarJpeg);
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(b->frames[i], *full) << "region frame " << i;
    EXPECT_EQ(c->frames[i], *full) << "compact frame " << i;
    auto decoded = image::DecodeJpeg(a->frames[i]);
    ASSERT_TRUE(decoded.ok());
    image::Image want(kW, kH, 3);
    std::copy(raw_frame.begin(), raw_frame.end(), want.pixels.begin());
    EXPECT_GE(image::Psnr(*decoded, want), 30);
  }
  // A quality other than the cached JPEG's falls back to a full encode; compact frames
  // re-read their file for it, so the output equals the plain avatar's exactly.
  jpeg.jpeg_quality = 90;
  auto d = compositor_.Compose(*compact, Output(), 3, avatar::LoopMode::kPingPong, jpeg);
  auto plain90 = compositor_.Compose(*plain, Output(), 3, avatar::LoopMode::kPingPong, jpeg);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_TRUE(plain90.ok());
  EXPECT_EQ(d->frames, plain90->frames);
  // File gone: the cached JPEG decoded, the held region exact on top; still close.
  std::filesystem::remove(compact->frame_path(3));
  auto e = compositor_.Compose(*compact, Output(), 3, avatar::LoopMode::kPingPong, jpeg);
  ASSERT_TRUE(e.ok()) << e.status().ToString();
  auto decoded = image::DecodeJpeg(e->frames[0]);
  ASSERT_TRUE(decoded.ok());
  image::Image want(kW, kH, 3);
  std::copy(expected->frames[0].begin(), expected->frames[0].end(), want.pixels.begin());
  EXPECT_GE(image::Psnr(*decoded, want), 30);
}

// Compact storage proper: a 640x480 avatar keeps only the restart intervals around the
// crop rect per frame, and still produces the bytes of a full restart-interval encode
// of the composite, for rects in the middle and at every frame edge.
TEST_F(CompositorTest, CompactRegionProducesFullEncodeBytes) {
  auto dir = testing::WriteAvatar(tmp_.path(), "big", 3, 640, 480, {300, 200, 380, 280});
  avatar::AvatarOptions o;
  o.id = "big";
  o.frames_dir = dir + "/frames";
  o.crop_rects_path = dir + "/crop_rects.json";
  auto plain = *avatar::Avatar::Open(o);
  o.region_jpeg = o.compact = true;
  auto compact = *avatar::Avatar::Open(o);
  ASSERT_TRUE((*compact->Frame(0))->compact());
  CompositeOptions raw, jpeg;
  raw.format = config::OutputFormat::kRaw;
  raw.feather_px = jpeg.feather_px = 6;
  auto expected = compositor_.Compose(*plain, Output(), 1, avatar::LoopMode::kWrap, raw);
  auto got = compositor_.Compose(*compact, Output(), 1, avatar::LoopMode::kWrap, jpeg);
  ASSERT_TRUE(expected.ok() && got.ok()) << got.status().ToString();
  for (int i = 0; i < 5; ++i) {
    auto full =
        image::EncodeJpegWithRestarts(reinterpret_cast<const uint8_t*>(expected->frames[i].data()),
                                      640, 480, 640 * 3, kAvatarJpeg);
    EXPECT_EQ(got->frames[i], *full) << "frame " << i;
  }
  // Raw output from compact storage: the decoded JPEG outside the region, exact inside.
  auto raw_compact = compositor_.Compose(*compact, Output(), 1, avatar::LoopMode::kWrap, raw);
  ASSERT_TRUE(raw_compact.ok());
  auto held = (*compact->Frame(1))->pixels_rect;
  for (int y = held.y; y < held.y + held.height; ++y) {
    size_t begin = (size_t(y) * 640 + held.x) * 3, end = begin + size_t(held.width) * 3;
    ASSERT_TRUE(std::equal(expected->frames[0].begin() + begin, expected->frames[0].begin() + end,
                           raw_compact->frames[0].begin() + begin))
        << "row " << y;
  }

  // Rects touching each edge and corner of the frame (160-px face, not MCU-aligned).
  const std::vector<avatar::CropRect> edges = {
      {0, 0, 160, 160},   {480, 0, 640, 160}, {0, 320, 160, 480},   {480, 320, 640, 480},
      {237, 0, 397, 160}, {0, 171, 160, 331}, {480, 155, 640, 315}, {229, 320, 389, 480}};
  std::string rects = "[";
  for (size_t k = 0; k < edges.size(); ++k) {
    const auto& e = edges[k];
    rects += (k ? "," : "") + std::string("[") + std::to_string(e.x1) + "," + std::to_string(e.y1) +
             "," + std::to_string(e.x2) + "," + std::to_string(e.y2) + "]";
  }
  auto edge_dir = testing::WriteAvatar(tmp_.path(), "edges", int(edges.size()), 640, 480, edges[0]);
  ASSERT_TRUE(image::WriteFileBytes(edge_dir + "/crop_rects.json", rects + "]").ok());
  o.id = "edges";
  o.frames_dir = edge_dir + "/frames";
  o.crop_rects_path = edge_dir + "/crop_rects.json";
  auto edge_compact = *avatar::Avatar::Open(o);
  o.region_jpeg = o.compact = false;
  auto edge_plain = *avatar::Avatar::Open(o);
  for (int start = 0; start < int(edges.size()); start += 5) {
    auto want = compositor_.Compose(*edge_plain, Output(), start, avatar::LoopMode::kWrap, raw);
    auto have = compositor_.Compose(*edge_compact, Output(), start, avatar::LoopMode::kWrap, jpeg);
    ASSERT_TRUE(want.ok() && have.ok()) << have.status().ToString();
    for (int i = 0; i < 5; ++i) {
      auto full = image::EncodeJpegWithRestarts(
          reinterpret_cast<const uint8_t*>(want->frames[i].data()), 640, 480, 640 * 3, kAvatarJpeg);
      EXPECT_EQ(have->frames[i], *full) << "edge rect " << have->background_indices[i];
    }
  }
  EXPECT_TRUE((*edge_compact->Frame(3))->compact());
}

TEST_F(CompositorTest, VisualInputsMatchBuilder) {
  auto a = Open(false, false);
  std::vector<float> batch(3 * kVisualInputFloats);
  std::vector<int> indices;
  ASSERT_TRUE(
      compositor_.BuildVisualInputs(*a, 7, 3, avatar::LoopMode::kWrap, batch.data(), &indices)
          .ok());
  EXPECT_EQ(indices, (std::vector<int>{7, 0, 1}));
  VisualInputBuilder builder;
  std::vector<float> one(kVisualInputFloats);
  for (int i = 0; i < 3; ++i) {
    auto f = *a->Frame(indices[i]);
    ASSERT_TRUE(builder.Build(*f, a->rect(indices[i]), one.data()).ok());
    EXPECT_TRUE(std::equal(one.begin(), one.end(), batch.begin() + i * kVisualInputFloats));
  }
}

// The uint8 form is the float form times 255, exactly (the inference server divides).
TEST_F(CompositorTest, VisualInputsU8MatchFloats) {
  auto a = Open(true, true);
  std::vector<float> floats(2 * kVisualInputFloats);
  std::vector<uint8_t> bytes(2 * kVisualInputFloats);
  std::vector<int> fi, bi;
  ASSERT_TRUE(
      compositor_.BuildVisualInputs(*a, 5, 2, avatar::LoopMode::kWrap, floats.data(), &fi).ok());
  ASSERT_TRUE(
      compositor_.BuildVisualInputsU8(*a, 5, 2, avatar::LoopMode::kWrap, bytes.data(), &bi).ok());
  EXPECT_EQ(fi, bi);
  size_t differ = 0, nonzero = 0;
  for (size_t i = 0; i < floats.size(); ++i) {
    differ += static_cast<float>(bytes[i]) / 255.0f != floats[i];
    nonzero += bytes[i] != 0;
  }
  EXPECT_EQ(differ, 0u);
  EXPECT_GT(nonzero, floats.size() / 3);
}

TEST_F(CompositorTest, BadArgumentsAreErrors) {
  auto a = Open(false, false);
  CompositeOptions opt;
  EXPECT_EQ(
      compositor_
          .Compose(*a, {preds_.data(), OutputType::kFloat32, 0}, 0, avatar::LoopMode::kWrap, opt)
          .status()
          .code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(compositor_.Compose(*a, Output(), -1, avatar::LoopMode::kWrap, opt).status().code(),
            StatusCode::kInvalidArgument);
  opt.jpeg_quality = 0;
  EXPECT_EQ(compositor_.Compose(*a, Output(), 0, avatar::LoopMode::kWrap, opt).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace lipsync::compositing
