// Visual input and paste-back against the cv2 reference, identity round trip, feather.
#include "compositing/paste_back.h"

#include <gtest/gtest.h>

#include <cmath>

#include "avatar/avatar_fixture.h"
#include "compositing/compositing_test_util.h"
#include "compositing/visual_input.h"

namespace lipsync::compositing {
namespace {

constexpr int kW = 320, kH = 240;
const avatar::CropRect kRect{97, 41, 279, 223};  // 182 x 182, like the guide's avatar

std::string RectArgs(const avatar::CropRect& r) {
  return std::to_string(r.x1) + " " + std::to_string(r.y1) + " " + std::to_string(r.x2) + " " +
         std::to_string(r.y2);
}

TEST(PasteBackTest, VisualInputAndBothModesMatchCv2) {
  testing::TempDir tmp;
  image::Image frame = testing::MakeFrame(kW, kH, 2);
  ASSERT_TRUE(image::WritePng(tmp.str() + "/frame.png", frame).ok());
  std::vector<float> pred = testing::MakePrediction(1);
  ASSERT_TRUE(image::WriteFileBytes(tmp.str() + "/pred.f32",
                                    std::string_view(reinterpret_cast<const char*>(pred.data()),
                                                     pred.size() * sizeof(float)))
                  .ok());
  ASSERT_TRUE(testing::RunCv2Reference("pipeline " + tmp.str() + " " + RectArgs(kRect)));

  // Visual input: same floats, up to one 8-bit level (cv2's SIMD rounding).
  VisualInputBuilder builder;
  std::vector<float> ours(kVisualInputFloats);
  ASSERT_TRUE(builder.Build(frame.pixels.data(), kW, kH, frame.stride(), kRect, ours.data()).ok());
  auto ref_bytes = image::ReadFileBytes(tmp.str() + "/visual.f32");
  ASSERT_TRUE(ref_bytes.ok());
  ASSERT_EQ(ref_bytes->size(), kVisualInputFloats * sizeof(float));
  const float* ref = reinterpret_cast<const float*>(ref_bytes->data());
  double max_diff = 0;
  size_t differ = 0;
  for (size_t i = 0; i < kVisualInputFloats; ++i) {
    double d = std::abs(ours[i] - ref[i]);
    max_diff = std::max(max_diff, d);
    differ += d > 0;
  }
  std::printf("visual input vs cv2: max diff %.6f (%.3f levels), %zu of %zu floats differ\n",
              max_diff, max_diff * 255, differ, kVisualInputFloats);
  EXPECT_LE(max_diff, 1.0 / 255 + 1e-6);
  EXPECT_LT(differ, kVisualInputFloats / 1000);
  // The mask really zeroes (5,5)-(310,305) inclusive and nothing else.
  constexpr size_t plane = 320 * 320;
  EXPECT_EQ(ours[3 * plane + 5 * 320 + 5], 0.f);
  EXPECT_EQ(ours[3 * plane + 305 * 320 + 310], 0.f);
  EXPECT_NE(ours[3 * plane + 306 * 320 + 310], 0.f);
  EXPECT_NE(ours[3 * plane + 305 * 320 + 311], 0.f);
  EXPECT_EQ(ours[3 * plane + 4 * 320 + 100], ours[4 * 320 + 100]);

  // Paste-back, both modes: every pixel within one level of cv2's.
  std::vector<uint8_t> face(320 * 320 * 3);
  ModelOutputToRgb(pred.data(), OutputType::kFloat32, face.data());
  PasteBack paste;
  for (auto [mode, file] : {std::pair{config::PasteMode::kSynctalk328, "/synctalk328.png"},
                            std::pair{config::PasteMode::kResize, "/resize.png"}}) {
    image::Image out = frame;
    ASSERT_TRUE(
        paste.Paste(face.data(), mode, 0, kRect, out.pixels.data(), kW, kH, out.stride()).ok());
    auto ref_img = image::ReadImageFile(tmp.str() + file);
    ASSERT_TRUE(ref_img.ok());
    auto d = testing::Compare(out, *ref_img);
    std::printf("paste %s vs cv2: max diff %d, %.4f%% of samples differ\n", file + 1, d.max,
                100 * d.over_zero);
    EXPECT_LE(d.max, 1) << file;
    EXPECT_LT(d.over_zero, 0.001) << file;
  }
}

// Pasting the unchanged ROI back: outside the rect exact, inside PSNR >= 30 dB.
TEST(PasteBackTest, IdentityRoundTrip) {
  image::Image frame = testing::MakeFrame(kW, kH, 5);
  VisualInputBuilder builder;
  std::vector<float> input(kVisualInputFloats);
  ASSERT_TRUE(builder.Build(frame.pixels.data(), kW, kH, frame.stride(), kRect, input.data()).ok());
  std::vector<uint8_t> face(320 * 320 * 3);
  ModelOutputToRgb(input.data(), OutputType::kFloat32, face.data());  // channels 0-2 = ROI
  PasteBack paste;
  for (auto mode : {config::PasteMode::kSynctalk328, config::PasteMode::kResize}) {
    image::Image out = frame;
    ASSERT_TRUE(
        paste.Paste(face.data(), mode, 4, kRect, out.pixels.data(), kW, kH, out.stride()).ok());
    image::Image in_ref(kRect.width(), kRect.height(), 3), in_out = in_ref;
    bool outside_exact = true;
    for (int y = 0; y < kH; ++y) {
      for (int x = 0; x < kW; ++x) {
        bool inside = x >= kRect.x1 && x < kRect.x2 && y >= kRect.y1 && y < kRect.y2;
        const uint8_t* a = frame.row(y) + x * 3;
        const uint8_t* b = out.row(y) + x * 3;
        if (!inside) {
          outside_exact &= std::equal(a, a + 3, b);
        } else {
          std::copy_n(a, 3, in_ref.row(y - kRect.y1) + (x - kRect.x1) * 3);
          std::copy_n(b, 3, in_out.row(y - kRect.y1) + (x - kRect.x1) * 3);
        }
      }
    }
    EXPECT_TRUE(outside_exact);
    double psnr = image::Psnr(in_ref, in_out);
    std::printf("identity round trip (%s): PSNR inside the rect %.1f dB\n",
                mode == config::PasteMode::kResize ? "resize" : "synctalk328", psnr);
    EXPECT_GE(psnr, 30.0);
  }
}

// A white patch on black: without feather the box edge is a 255-level step; with
// feather_px = 8 no step between neighbours exceeds one ramp step.
TEST(PasteBackTest, FeatherLeavesNoHardEdge) {
  std::vector<uint8_t> white(320 * 320 * 3, 255);
  PasteBack paste;
  auto max_step = [&](int feather) {
    image::Image out(kW, kH, 3);  // black
    EXPECT_TRUE(paste
                    .Paste(white.data(), config::PasteMode::kResize, feather, kRect,
                           out.pixels.data(), kW, kH, out.stride())
                    .ok());
    int step = 0;
    for (int y = 0; y < kH; ++y) {
      for (int x = 1; x < kW; ++x) {
        for (int c = 0; c < 3; ++c) {
          step = std::max(step, std::abs(out.row(y)[x * 3 + c] - out.row(y)[(x - 1) * 3 + c]));
        }
      }
    }
    for (int y = 1; y < kH; ++y) {
      for (size_t i = 0; i < out.stride(); ++i) {
        step = std::max(step, std::abs(out.row(y)[i] - out.row(y - 1)[i]));
      }
    }
    // The patch centre is fully the prediction.
    EXPECT_EQ(out.row((kRect.y1 + kRect.y2) / 2)[(kRect.x1 + kRect.x2) / 2 * 3], 255);
    return step;
  };
  EXPECT_EQ(max_step(0), 255);
  int feathered = max_step(8);
  EXPECT_LE(feathered, 255 / 8 + 2);
}

TEST(PasteBackTest, RejectsBadRect) {
  std::vector<uint8_t> face(320 * 320 * 3);
  image::Image out(kW, kH, 3);
  PasteBack paste;
  auto st = paste.Paste(face.data(), config::PasteMode::kResize, 0, {300, 10, 330, 40},
                        out.pixels.data(), kW, kH, out.stride());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  VisualInputBuilder builder;
  std::vector<float> input(kVisualInputFloats);
  EXPECT_FALSE(
      builder.Build(out.pixels.data(), kW, kH, out.stride(), {10, 10, 10, 20}, input.data()).ok());
}

TEST(PasteBackTest, OutputConversionRoundsAndClamps) {
  std::vector<float> pred(3 * 320 * 320, 0.5f);
  pred[0] = -1.f;                       // B of pixel 0
  pred[320 * 320] = 2.f;                // G of pixel 0
  pred[2 * 320 * 320] = std::nanf("");  // R of pixel 0
  pred[1] = 0.2f;                       // B of pixel 1: 51.0
  std::vector<uint8_t> rgb(320 * 320 * 3);
  ModelOutputToRgb(pred.data(), OutputType::kFloat32, rgb.data());
  EXPECT_EQ(rgb[0], 0);    // R (NaN)
  EXPECT_EQ(rgb[1], 255);  // G
  EXPECT_EQ(rgb[2], 0);    // B
  EXPECT_EQ(rgb[5], 51);
  EXPECT_EQ(rgb[3], 128);  // 127.5 rounds up
  std::vector<uint8_t> planar(3 * 320 * 320);
  planar[0] = 10, planar[320 * 320] = 20, planar[2 * 320 * 320] = 30;
  ModelOutputToRgb(planar.data(), OutputType::kUint8, rgb.data());
  EXPECT_EQ(rgb[0], 30);
  EXPECT_EQ(rgb[1], 20);
  EXPECT_EQ(rgb[2], 10);
}

}  // namespace
}  // namespace lipsync::compositing
