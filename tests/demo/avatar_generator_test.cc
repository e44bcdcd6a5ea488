#include "demo/avatar_generator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <unistd.h>

#include "image/image.h"
#include "modelgen/model_builder.h"

namespace lipsync::demo {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() /
            ("demo_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter_++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string str() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

std::string Bytes(const std::string& path) {
  auto bytes = image::ReadFileBytes(path);
  EXPECT_TRUE(bytes.ok()) << path;
  return bytes.ok() ? *bytes : "";
}

// The model's view of a frame, as SyncTalk_2D builds it: crop -> bilinear resize to
// 328x328 (half-pixel centres, like cv2.resize) -> [4:324, 4:324]; returned as luma.
std::vector<float> RoiLuma(const image::Image& frame, const CropRect& crop) {
  const int side = crop.size();
  std::vector<float> roi(320 * 320);
  auto luma = [&](int x, int y) {
    x = std::clamp(x, 0, side - 1) + crop.x1;
    y = std::clamp(y, 0, side - 1) + crop.y1;
    const uint8_t* p = frame.row(y) + 3 * x;
    return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2];
  };
  for (int v = 0; v < 320; ++v) {
    const float sy = (v + 4 + 0.5f) * side / 328.f - 0.5f;
    const int y0 = int(std::floor(sy));
    const float fy = sy - y0;
    for (int u = 0; u < 320; ++u) {
      const float sx = (u + 4 + 0.5f) * side / 328.f - 0.5f;
      const int x0 = int(std::floor(sx));
      const float fx = sx - x0;
      roi[v * 320 + u] = (1 - fy) * ((1 - fx) * luma(x0, y0) + fx * luma(x0 + 1, y0)) +
                         fy * ((1 - fx) * luma(x0, y0 + 1) + fx * luma(x0 + 1, y0 + 1));
    }
  }
  return roi;
}

struct MouthFound {
  int row = -1;               // darkest horizontal band's row
  int left = -1, right = -1;  // where that band stops being dark
};

// The darkest horizontal feature in the lower half of the ROI, searched without
// knowing where the generator put it.
MouthFound FindMouth(const std::vector<float>& roi) {
  MouthFound found;
  float darkest = 1e9f;
  for (int v = 160; v < 316; ++v) {
    for (int u0 = 40; u0 + 40 <= 280; u0 += 4) {
      float sum = 0;
      for (int u = u0; u < u0 + 40; ++u) sum += roi[v * 320 + u];
      if (sum < darkest) {
        darkest = sum;
        found.row = v;
        found.left = u0;
      }
    }
  }
  // Grow the band sideways while it stays clearly darker than the skin around it.
  const int v = found.row;
  const float band = darkest / 40;
  const float skin = roi[std::min(319, v + 30) * 320 + found.left + 20];
  const float threshold = band + 0.5f * (skin - band);
  int center = found.left + 20;
  found.left = found.right = center;
  while (found.left > 0 && roi[v * 320 + found.left - 1] < threshold) --found.left;
  while (found.right < 319 && roi[v * 320 + found.right + 1] < threshold) ++found.right;
  return found;
}

TEST(AvatarGeneratorTest, SameSeedSameBytesOtherSeedOtherFrames) {
  const AvatarSpec spec{320, 240, 3, 7};
  TempDir a, b;
  ASSERT_TRUE(GenerateAvatarFrames(spec, a.str()).ok());
  ASSERT_TRUE(GenerateAvatarFrames(spec, b.str(), nullptr, 1).ok());  // thread count irrelevant
  for (const char* file : {"frames/frame_0000.png", "frames/frame_0002.png", "crop_rects.json"}) {
    EXPECT_EQ(Bytes(a.str() + "/" + file), Bytes(b.str() + "/" + file)) << file;
  }
  EXPECT_FALSE(fs::exists(a.str() + "/frames/frame_0003.png"));
  const image::Image seven = RenderAvatarFrame(spec, 1);
  EXPECT_EQ(seven.pixels, RenderAvatarFrame(spec, 1).pixels);
  AvatarSpec other = spec;
  other.seed = 8;
  EXPECT_LT(image::Psnr(seven, RenderAvatarFrame(other, 1)), 30.0);
  // Consecutive frames differ (motion, grain) but are the same scene.
  const double consecutive = image::Psnr(seven, RenderAvatarFrame(spec, 2));
  EXPECT_LT(consecutive, 60.0);
  EXPECT_GT(consecutive, 25.0);
  // The written PNG decodes to the rendered frame.
  auto decoded = image::ReadImageFile(a.str() + "/frames/frame_0001.png");
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->pixels, seven.pixels);
}

TEST(AvatarGeneratorTest, CropRectsAreValidSquaresFollowingTheHead) {
  const AvatarSpec spec;  // 1280x720, 120 frames
  float min_head_x = 1e9f, max_head_x = -1e9f;
  for (int i = 0; i < spec.frames; ++i) {
    const CropRect r = AvatarCropRect(spec, i);
    ASSERT_LT(r.x1, r.x2);
    ASSERT_LT(r.y1, r.y2);
    ASSERT_GE(r.x1, 0);
    ASSERT_GE(r.y1, 0);
    ASSERT_LE(r.x2, spec.width);
    ASSERT_LE(r.y2, spec.height);
    EXPECT_EQ(r.x2 - r.x1, r.y2 - r.y1);
    EXPECT_GE(r.size(), 200);
    EXPECT_LE(r.size(), 260);
    const FacePose pose = AvatarPose(spec, i);
    // Lower face: the crop's centre column is the head's, the mouth in its lower part.
    EXPECT_NEAR((r.x1 + r.x2) / 2.0, pose.head_cx, 1.5) << i;
    EXPECT_GT(pose.mouth_cy, r.y1 + 0.6 * r.size());
    EXPECT_LT(pose.head_cy + pose.head_ry, r.y2);  // the chin is inside
    min_head_x = std::min(min_head_x, pose.head_cx);
    max_head_x = std::max(max_head_x, pose.head_cx);
  }
  EXPECT_GT(max_head_x - min_head_x, 8.f);  // the head does move
  EXPECT_LT(max_head_x - min_head_x, 40.f);
}

TEST(AvatarGeneratorTest, CropRectsJsonListsEveryFrame) {
  const AvatarSpec spec{320, 240, 4, 3};
  const std::string json = CropRectsJson(spec);
  const CropRect r = AvatarCropRect(spec, 3);
  std::string last = "[";
  for (int v : {r.x1, r.y1, r.x2}) last += std::to_string(v) + ",";
  last += std::to_string(r.y2) + "]]";
  EXPECT_EQ(json.front(), '[');
  EXPECT_NE(json.find(last), std::string::npos) << json;
  EXPECT_EQ(std::count(json.begin(), json.end(), '['), 5);
}

// The drawn mouth must land where the demo model draws its mouth in the ROI, whatever
// the frame size and head position.
TEST(AvatarGeneratorTest, MouthLandsAtTheModelsMouthInTheRoi) {
  for (const AvatarSpec& spec : {AvatarSpec{1280, 720, 120, 1}, AvatarSpec{320, 240, 60, 5}}) {
    for (int frame : {0, 24, 48}) {
      const image::Image img = RenderAvatarFrame(spec, frame);
      const MouthFound mouth = FindMouth(RoiLuma(img, AvatarCropRect(spec, frame)));
      SCOPED_TRACE(std::to_string(spec.width) + "x" + std::to_string(spec.height) + " frame " +
                   std::to_string(frame));
      EXPECT_NEAR(mouth.row, modelgen::kMouthCenterY, 5);
      EXPECT_NEAR((mouth.left + mouth.right) / 2.0, modelgen::kMouthCenterX, 5);
      EXPECT_NEAR(mouth.right - mouth.left, 2 * modelgen::kMouthHalfWidth, 12);
      // Control: a crop a few pixels off moves the found mouth visibly, so the search
      // above does measure the placement.
      CropRect shifted = AvatarCropRect(spec, frame);
      const int shift = std::max(2, shifted.size() / 20);
      shifted.y1 -= shift;
      shifted.y2 -= shift;
      shifted.x1 -= shift;
      shifted.x2 -= shift;
      const MouthFound off = FindMouth(RoiLuma(img, shifted));
      EXPECT_GT(off.row - mouth.row, 8);
      EXPECT_GT((off.left + off.right) / 2.0 - (mouth.left + mouth.right) / 2.0, 8);
    }
  }
}

TEST(AvatarGeneratorTest, FramesAreTexturedLikeRealVideo) {
  const image::Image frame = RenderAvatarFrame(AvatarSpec{}, 0);
  ASSERT_EQ(frame.width, 1280);
  ASSERT_EQ(frame.height, 720);
  auto jpeg = image::EncodeJpeg(frame, 75);
  ASSERT_TRUE(jpeg.ok());
  EXPECT_GT(jpeg->size(), 30u * 1024) << "a flat frame would make JPEG timings meaningless";
}

TEST(AvatarGeneratorTest, SmallSizesWorkAndBadSpecsAreRejected) {
  TempDir dir;
  ASSERT_TRUE(GenerateAvatarFrames(AvatarSpec{64, 64, 1, 1}, dir.str()).ok());
  auto decoded = image::ReadImageFile(dir.str() + "/frames/frame_0000.png");
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->width, 64);
  const CropRect r = AvatarCropRect(AvatarSpec{64, 64, 1, 1}, 0);
  EXPECT_GE(r.x1, 0);
  EXPECT_LE(r.x2, 64);
  EXPECT_LE(r.y2, 64);
  for (const AvatarSpec& bad :
       {AvatarSpec{320, 240, 0, 1}, AvatarSpec{10, 240, 1, 1}, AvatarSpec{320, 99999, 1, 1}}) {
    Status st = GenerateAvatarFrames(bad, dir.str());
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(st.message().find("expected"), std::string::npos);
  }
}

TEST(AvatarGeneratorTest, ShorterRerunRemovesExtraFramesAndReportsProgress) {
  TempDir dir;
  ASSERT_TRUE(GenerateAvatarFrames(AvatarSpec{96, 96, 5, 1}, dir.str()).ok());
  ASSERT_TRUE(fs::exists(dir.str() + "/frames/frame_0004.png"));
  std::vector<int> seen;
  ASSERT_TRUE(GenerateAvatarFrames(AvatarSpec{96, 96, 3, 1}, dir.str(),
                                   [&](const std::string& stage, int done, int total) {
                                     EXPECT_EQ(stage, "frames");
                                     EXPECT_EQ(total, 3);
                                     seen.push_back(done);
                                   })
                  .ok());
  EXPECT_EQ(seen, (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(fs::exists(dir.str() + "/frames/frame_0002.png"));
  EXPECT_FALSE(fs::exists(dir.str() + "/frames/frame_0003.png"));
  EXPECT_FALSE(fs::exists(dir.str() + "/frames/frame_0004.png"));
}

}  // namespace
}  // namespace lipsync::demo
