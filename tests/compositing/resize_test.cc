#include "compositing/resize.h"

#include <gtest/gtest.h>
#include <libyuv/scale_rgb.h>

#include <random>

#include "avatar/avatar_fixture.h"
#include "compositing/compositing_test_util.h"

namespace lipsync::compositing {
namespace {

// Textured source: smooth picture plus noise, so every interpolation weight matters.
image::Image Source(int w, int h) {
  image::Image img = testing::MakeFrame(w, h, 3);
  std::mt19937 rng(7);
  for (auto& v : img.pixels)
    v = static_cast<uint8_t>(std::clamp(int(v) + int(rng() % 41) - 20, 0, 255));
  return img;
}

image::Image Swap(const image::Image& img) {  // RGB <-> BGR
  image::Image out = img;
  for (size_t i = 0; i < out.pixels.size(); i += 3) std::swap(out.pixels[i], out.pixels[i + 2]);
  return out;
}

struct Size {
  int sw, sh, dw, dh;
};

// Upscales as for the visual input (crop -> 328), downscales as for the paste-back
// (328 -> rect), odd ratios both ways. Not exact 2x downscales (cv2 switches to
// INTER_AREA there).
TEST(ResizeTest, MatchesCv2WithinOneLevel) {
  const std::vector<Size> sizes = {{182, 182, 328, 328}, {328, 328, 182, 182},
                                   {120, 96, 328, 328},  {328, 328, 215, 187},
                                   {320, 320, 400, 380}, {320, 320, 150, 130}};
  testing::TempDir tmp;
  std::string args = "resize " + tmp.str();
  for (size_t k = 0; k < sizes.size(); ++k) {
    image::Image src = Source(sizes[k].sw, sizes[k].sh);
    ASSERT_TRUE(image::WritePng(tmp.str() + "/src_" + std::to_string(k) + ".png", src).ok());
    args += " " + std::to_string(sizes[k].dw) + " " + std::to_string(sizes[k].dh);
  }
  ASSERT_TRUE(testing::RunCv2Reference(args));

  ResizeScratch scratch;
  for (size_t k = 0; k < sizes.size(); ++k) {
    const Size s = sizes[k];
    image::Image src = Source(s.sw, s.sh);
    for (auto [interp, name] :
         {std::pair{Interpolation::kLinear, "linear"}, std::pair{Interpolation::kCubic, "cubic"}}) {
      auto ref = image::ReadImageFile(tmp.str() + "/" + name + "_" + std::to_string(k) + ".png");
      ASSERT_TRUE(ref.ok());
      image::Image ours(s.dw, s.dh, 3);
      Resize(src.pixels.data(), s.sw, s.sh, src.stride(), ours.pixels.data(), s.dw, s.dh,
             ours.stride(), 3, interp, scratch);
      auto d = testing::Compare(ours, *ref);
      EXPECT_LE(d.max, 1) << name << " case " << k;
      EXPECT_LT(d.over_zero, 0.001) << name << " case " << k;
      std::printf("%dx%d -> %dx%d %s: max diff %d, %.4f%% of samples differ\n", s.sw, s.sh, s.dw,
                  s.dh, name, d.max, 100 * d.over_zero);
    }
    // For the record: libyuv's bilinear against cv2 INTER_LINEAR (why it is not used).
    auto ref = *image::ReadImageFile(tmp.str() + "/linear_" + std::to_string(k) + ".png");
    image::Image bgr = Swap(src), yuv(s.dw, s.dh, 3);
    libyuv::RGBScale(bgr.pixels.data(), int(bgr.stride()), s.sw, s.sh, yuv.pixels.data(),
                     int(yuv.stride()), s.dw, s.dh, libyuv::kFilterBilinear);
    auto dy = testing::Compare(Swap(yuv), ref);
    std::printf(
        "  libyuv RGBScale bilinear vs cv2 INTER_LINEAR: max %d, %.1f%% differ, %.1f%% by >1\n",
        dy.max, 100 * dy.over_zero, 100 * dy.over_one);
  }
}

}  // namespace
}  // namespace lipsync::compositing
