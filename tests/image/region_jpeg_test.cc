#include "image/region_jpeg.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <ostream>
#include <random>
#include <vector>

#include "image/image.h"

namespace lipsync::image {
namespace {

// Gradients plus noise, so that every MCU has real AC content and Huffman codes vary.
Image TexturedFrame(int w, int h, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(-24, 24);
  Image img(w, h, 3);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.row(y) + x * 3;
      const int base[3] = {x * 255 / w, y * 255 / h, ((x / 7 + y / 5) * 13) & 255};
      for (int c = 0; c < 3; ++c) p[c] = uint8_t(std::clamp(base[c] + noise(rng), 0, 255));
    }
  }
  return img;
}

// Overwrites `rect` of `frame` with a different texture (the "mouth patch").
void PaintPatch(Image& frame, PixelRect rect, std::mt19937& rng) {
  std::uniform_int_distribution<int> value(0, 255);
  const int tint = value(rng);
  for (int y = rect.y; y < rect.y + rect.height; ++y) {
    for (int x = rect.x; x < rect.x + rect.width; ++x) {
      uint8_t* p = frame.row(y) + x * 3;
      p[0] = uint8_t(tint);
      p[1] = uint8_t(value(rng));
      p[2] = uint8_t((x * y) & 255);
    }
  }
}

void RestoreRect(Image& frame, const Image& background, PixelRect rect) {
  for (int y = rect.y; y < rect.y + rect.height; ++y) {
    std::copy_n(background.row(y) + rect.x * 3, rect.width * 3, frame.row(y) + rect.x * 3);
  }
}

// Rects that hit every edge and corner, single pixels, MCU- and interval-boundary
// straddles, the whole frame, plus random ones.
std::vector<PixelRect> TestRects(int w, int h, int random_count, std::mt19937& rng) {
  std::vector<PixelRect> rects = {
      {0, 0, 1, 1},
      {w - 1, h - 1, 1, 1},
      {w - 1, 0, 1, 1},
      {0, h - 1, 1, 1},
      {0, 0, std::min(w, 100), std::min(h, 90)},
      {std::max(0, w - 97), std::max(0, h - 83), std::min(w, 97), std::min(h, 83)},
      {w / 2 - 1, 0, 2, h},  // full-height column through the middle
      {0, h / 2 - 1, w, 2},  // full-width row
      {15, 15, 2, 2},        // straddles an MCU corner
      {63, 31, 2, 3},        // straddles an interval boundary (64 px at 4 MCUs)
      {0, 0, w, h},          // whole frame (full-encode fallback)
      {w / 8, h / 8, w * 3 / 4, h * 3 / 4},
  };
  for (int i = 0; i < random_count; ++i) {
    const int rw = std::uniform_int_distribution<int>(1, std::min(w, 400))(rng);
    const int rh = std::uniform_int_distribution<int>(1, std::min(h, 400))(rng);
    const int rx = std::uniform_int_distribution<int>(0, w - rw)(rng);
    const int ry = std::uniform_int_distribution<int>(0, h - rh)(rng);
    rects.push_back({rx, ry, rw, rh});
  }
  std::erase_if(rects, [&](const PixelRect& r) {
    return r.x < 0 || r.y < 0 || r.width <= 0 || r.height <= 0 || r.x + r.width > w ||
           r.y + r.height > h;
  });
  return rects;
}

struct SpliceCase {
  int width;
  int height;
  int quality;
  int restart_interval;
  int random_rects;
};

void PrintTo(const SpliceCase& c, std::ostream* os) {
  *os << c.width << "x" << c.height << " q" << c.quality << " interval " << c.restart_interval;
}

class RegionJpegSpliceTest : public ::testing::TestWithParam<SpliceCase> {};

TEST_P(RegionJpegSpliceTest, ByteIdenticalToFullEncode) {
  const SpliceCase& param = GetParam();
  std::mt19937 rng(uint32_t(param.width * 31 + param.quality));
  const Image background = TexturedFrame(param.width, param.height, rng());
  const JpegSettings settings{param.quality, param.restart_interval};
  auto bg = RegionJpegBackground::Create(background.pixels.data(), background.width,
                                         background.height, background.stride(), settings);
  ASSERT_TRUE(bg.ok()) << bg.status().ToString();
  auto bg_reference = EncodeJpegWithRestarts(background.pixels.data(), background.width,
                                             background.height, background.stride(), settings);
  ASSERT_TRUE(bg_reference.ok());
  ASSERT_EQ(bg->background_jpeg(), *bg_reference);

  Image frame = background;
  for (const PixelRect& rect : TestRects(param.width, param.height, param.random_rects, rng)) {
    PaintPatch(frame, rect, rng);
    auto expected = EncodeJpegWithRestarts(frame.pixels.data(), frame.width, frame.height,
                                           frame.stride(), settings);
    ASSERT_TRUE(expected.ok()) << expected.status().ToString();
    auto spliced = bg->EncodeWithRegion(frame.pixels.data(), frame.stride(), rect);
    ASSERT_TRUE(spliced.ok()) << spliced.status().ToString();
    ASSERT_EQ(spliced->size(), expected->size())
        << "rect " << rect.x << "," << rect.y << " " << rect.width << "x" << rect.height;
    ASSERT_TRUE(*spliced == *expected) << "bytes differ for rect " << rect.x << "," << rect.y << " "
                                       << rect.width << "x" << rect.height;
    RestoreRect(frame, background, rect);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Sizes, RegionJpegSpliceTest,
    ::testing::Values(SpliceCase{1280, 720, 75, 4, 6}, SpliceCase{1920, 1080, 85, 4, 2},
                      SpliceCase{320, 240, 50, 4, 40}, SpliceCase{320, 240, 95, 1, 20},
                      SpliceCase{1000, 562, 75, 4, 12}, SpliceCase{200, 37, 30, 8, 20},
                      SpliceCase{17, 9, 75, 4, 10}),
    [](const ::testing::TestParamInfo<SpliceCase>& info) {
      return std::to_string(info.param.width) + "x" + std::to_string(info.param.height) + "_q" +
             std::to_string(info.param.quality) + "_ri" +
             std::to_string(info.param.restart_interval);
    });

TEST(RegionJpegTest, DecodedRegionShowsThePatch) {
  const Image background = TexturedFrame(320, 240, 7);
  auto bg =
      RegionJpegBackground::Create(background.pixels.data(), 320, 240, background.stride(), {});
  ASSERT_TRUE(bg.ok());
  Image frame = background;
  const PixelRect rect{100, 60, 64, 48};
  for (int y = rect.y; y < rect.y + rect.height; ++y)
    for (int x = rect.x; x < rect.x + rect.width; ++x) {
      uint8_t* p = frame.row(y) + x * 3;
      p[0] = 250, p[1] = 20, p[2] = 20;
    }
  auto jpeg = bg->EncodeWithRegion(frame.pixels.data(), frame.stride(), rect);
  ASSERT_TRUE(jpeg.ok());
  auto decoded = DecodeJpeg(*jpeg);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  ASSERT_EQ(decoded->width, 320);
  ASSERT_EQ(decoded->height, 240);
  // Away from the patch border the decoded pixels are the patch colour...
  const uint8_t* inside = decoded->row(rect.y + 24) + (rect.x + 32) * 3;
  EXPECT_NEAR(inside[0], 250, 12);
  EXPECT_NEAR(inside[1], 20, 12);
  // ...and the whole image is as faithful as a full encode of the same frame.
  auto full = EncodeJpegWithRestarts(frame.pixels.data(), 320, 240, frame.stride(), {});
  ASSERT_TRUE(full.ok());
  auto full_decoded = DecodeJpeg(*full);
  ASSERT_TRUE(full_decoded.ok());
  EXPECT_EQ(decoded->pixels, full_decoded->pixels);
  EXPECT_GT(Psnr(frame, *decoded), 20.0);
}

TEST(RegionJpegTest, ReadsOnlyTheMcuRowsTheRectTouches) {
  const Image background = TexturedFrame(640, 480, 3);
  auto bg =
      RegionJpegBackground::Create(background.pixels.data(), 640, 480, background.stride(), {});
  ASSERT_TRUE(bg.ok());
  std::vector<int> rows_read;
  const RegionJpegBackground::RowSource source = [&](int x0, int y) {
    rows_read.push_back(y);
    return background.row(y) + x0 * 3;
  };
  // Rows 40..59 lie in MCU rows 2 and 3 -> pixel rows 32..63.
  auto small = bg->EncodeWithRegion(source, {300, 40, 30, 20});
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(*small, bg->background_jpeg());
  ASSERT_FALSE(rows_read.empty());
  EXPECT_EQ(rows_read.front(), 32);
  EXPECT_EQ(rows_read.back(), 63);
  EXPECT_EQ(rows_read.size(), 32u);

  // Beyond the full-encode fraction: whole MCU rows, but still only the touched ones
  // (a compositor holding only a strip of rows relies on this).
  rows_read.clear();
  auto large = bg->EncodeWithRegion(source, {0, 20, 640, 400});
  ASSERT_TRUE(large.ok());
  EXPECT_EQ(*large, bg->background_jpeg());
  ASSERT_FALSE(rows_read.empty());
  EXPECT_EQ(rows_read.front(), 16);
  EXPECT_EQ(rows_read.back(), 431);
  EXPECT_EQ(rows_read.size(), 416u);

  rows_read.clear();
  auto whole = bg->EncodeWithRegion(source, {0, 0, 640, 480});
  ASSERT_TRUE(whole.ok());
  EXPECT_EQ(*whole, bg->background_jpeg());
  EXPECT_EQ(rows_read.size(), 480u);
}

// A source holding only ReadRect(rect) (what compact backgrounds keep) gives the bytes
// of a full encode, for rects inside, at the edges and past the fallback fraction.
TEST(RegionJpegTest, SourceHoldingOnlyReadRectMatchesFullEncode) {
  const Image background = TexturedFrame(640, 480, 11);
  auto bg =
      RegionJpegBackground::Create(background.pixels.data(), 640, 480, background.stride(), {});
  ASSERT_TRUE(bg.ok());
  for (PixelRect rect :
       {PixelRect{300, 40, 30, 20}, PixelRect{0, 0, 70, 33}, PixelRect{590, 440, 50, 40},
        PixelRect{-10, 200, 100, 300}, PixelRect{10, 20, 600, 400}}) {
    Image frame = background;
    for (int y = std::max(0, rect.y); y < std::min(480, rect.y + rect.height); ++y)
      for (int x = std::max(0, rect.x); x < std::min(640, rect.x + rect.width); ++x)
        frame.row(y)[x * 3] ^= 0x5A;
    const PixelRect read = bg->ReadRect(rect);
    ASSERT_GT(read.width, 0);
    EXPECT_LE(read.x, std::max(0, rect.x));
    EXPECT_GE(read.x + read.width, std::min(640, rect.x + rect.width));
    EXPECT_EQ(read.y % 16, 0);
    Image held(read.width, read.height, 3);
    for (int y = 0; y < read.height; ++y)
      std::copy_n(frame.row(read.y + y) + read.x * 3, read.width * 3, held.row(y));
    bool outside = false;
    auto spliced = bg->EncodeWithRegion(
        [&](int x0, int y) -> const uint8_t* {
          if (x0 != read.x || y < read.y || y >= read.y + read.height) {
            outside = true;
            return nullptr;
          }
          return held.row(y - read.y);
        },
        rect);
    ASSERT_TRUE(spliced.ok()) << spliced.status().ToString();
    EXPECT_FALSE(outside);
    auto full = EncodeJpegWithRestarts(frame.pixels.data(), 640, 480, frame.stride(), {});
    ASSERT_TRUE(full.ok());
    EXPECT_EQ(*spliced, *full) << "rect " << rect.x << "," << rect.y;
  }
  EXPECT_EQ(bg->ReadRect({700, 10, 5, 5}).width, 0);
  // Past the full-encode fraction: whole MCU rows.
  EXPECT_EQ(bg->ReadRect({10, 20, 600, 400}).width, 640);
}

TEST(RegionJpegTest, EmptyOrOutsideRectReturnsBackground) {
  const Image background = TexturedFrame(96, 64, 5);
  auto bg = RegionJpegBackground::Create(background.pixels.data(), 96, 64, background.stride(), {});
  ASSERT_TRUE(bg.ok());
  for (PixelRect rect : {PixelRect{10, 10, 0, 5}, PixelRect{200, 10, 5, 5},
                         PixelRect{-50, -50, 10, 10}, PixelRect{2000000000, 0, 2000000000, 5}}) {
    auto out = bg->EncodeWithRegion(background.pixels.data(), background.stride(), rect);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    EXPECT_EQ(*out, bg->background_jpeg());
  }
  // Partly outside: clipped, still byte-identical.
  auto clipped =
      bg->EncodeWithRegion(background.pixels.data(), background.stride(), {-20, 50, 40, 100});
  ASSERT_TRUE(clipped.ok());
  EXPECT_EQ(*clipped, bg->background_jpeg());
}

TEST(RegionJpegTest, EffectiveRestartIntervalDividesMcusPerRow) {
  EXPECT_EQ(EffectiveRestartInterval(1280, 4), 4);  // 80 MCUs
  EXPECT_EQ(EffectiveRestartInterval(1280, 7), 5);
  EXPECT_EQ(EffectiveRestartInterval(1920, 4), 4);     // 120 MCUs
  EXPECT_EQ(EffectiveRestartInterval(1000, 4), 3);     // 63 MCUs
  EXPECT_EQ(EffectiveRestartInterval(61 * 16, 4), 1);  // prime MCU count
  EXPECT_EQ(EffectiveRestartInterval(17, 4), 2);       // 2 MCUs
  EXPECT_EQ(EffectiveRestartInterval(16, 4), 1);
  EXPECT_EQ(EffectiveRestartInterval(1280, 0), 1);

  const Image img = TexturedFrame(1000, 40, 1);
  auto bg = RegionJpegBackground::Create(img.pixels.data(), 1000, 40, img.stride(), {75, 4});
  ASSERT_TRUE(bg.ok());
  EXPECT_EQ(bg->restart_interval_mcus(), 3);
  EXPECT_EQ(bg->interval_count(), 21 * 3);
  EXPECT_GE(bg->memory_bytes(), int64_t(bg->background_jpeg().size()));
}

TEST(RegionJpegTest, RejectsBadInput) {
  const Image img = TexturedFrame(64, 32, 2);
  EXPECT_FALSE(RegionJpegBackground::Create(img.pixels.data(), 64, 32, 10, {}).ok());
  EXPECT_FALSE(RegionJpegBackground::Create(img.pixels.data(), 0, 32, img.stride(), {}).ok());
  EXPECT_FALSE(RegionJpegBackground::Create(nullptr, 64, 32, img.stride(), {}).ok());
  EXPECT_FALSE(RegionJpegBackground::Create(img.pixels.data(), 64, 32, img.stride(), {0, 4}).ok());
  EXPECT_FALSE(RegionJpegBackground::Create(img.pixels.data(), 64, 32, img.stride(), {75, 0}).ok());
  EXPECT_FALSE(EncodeJpegWithRestarts(img.pixels.data(), 64, 32, img.stride(), {101, 4}).ok());

  auto bg = RegionJpegBackground::Create(img.pixels.data(), 64, 32, img.stride(), {});
  ASSERT_TRUE(bg.ok());
  auto negative = bg->EncodeWithRegion(img.pixels.data(), img.stride(), {0, 0, -1, 4});
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(bg->EncodeWithRegion(img.pixels.data(), 3, {0, 0, 4, 4}).ok());
  EXPECT_FALSE(bg->EncodeWithRegion(nullptr, img.stride(), {0, 0, 4, 4}).ok());
  auto missing_row = bg->EncodeWithRegion(
      [&](int x0, int y) -> const uint8_t* { return y < 8 ? img.row(y) + x0 * 3 : nullptr; },
      {0, 0, 4, 20});
  ASSERT_FALSE(missing_row.ok());
  EXPECT_EQ(missing_row.status().code(), StatusCode::kInvalidArgument);
}

TEST(RegionJpegTest, StridedFrameMatchesPackedFrame) {
  const Image packed = TexturedFrame(100, 50, 9);
  const size_t stride = 100 * 3 + 17;
  std::vector<uint8_t> strided(stride * 50, 0xAB);
  for (int y = 0; y < 50; ++y) std::copy_n(packed.row(y), 300, strided.data() + y * stride);
  auto a = EncodeJpegWithRestarts(packed.pixels.data(), 100, 50, packed.stride(), {});
  auto b = EncodeJpegWithRestarts(strided.data(), 100, 50, stride, {});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  auto bg = RegionJpegBackground::Create(strided.data(), 100, 50, stride, {});
  ASSERT_TRUE(bg.ok());
  auto region = bg->EncodeWithRegion(strided.data(), stride, {40, 20, 10, 10});
  ASSERT_TRUE(region.ok());
  EXPECT_EQ(*region, *a);
}

}  // namespace
}  // namespace lipsync::image
