#include "avatar/avatar.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "avatar/avatar_fixture.h"

namespace lipsync::avatar {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

constexpr int kW = 320, kH = 240, kFrames = 8;
const CropRect kRect{100, 60, 220, 180};

AvatarOptions Options(const std::string& dir) {
  AvatarOptions o;
  o.id = "a";
  o.frames_dir = dir + "/frames";
  o.crop_rects_path = dir + "/crop_rects.json";
  return o;
}

TEST(BackgroundIndexTest, WrapAndPingPong) {
  std::vector<int> wrap, pp;
  for (int i = 0; i < 10; ++i) {
    wrap.push_back(BackgroundIndex(2, i, 4, LoopMode::kWrap));
    pp.push_back(BackgroundIndex(0, i, 4, LoopMode::kPingPong));
  }
  EXPECT_EQ(wrap, (std::vector<int>{2, 3, 0, 1, 2, 3, 0, 1, 2, 3}));
  EXPECT_EQ(pp, (std::vector<int>{0, 1, 2, 3, 2, 1, 0, 1, 2, 3}));
  EXPECT_EQ(BackgroundIndex(5, 0, 4, LoopMode::kPingPong), 1);
  EXPECT_EQ(BackgroundIndex(7, 3, 1, LoopMode::kPingPong), 0);
  EXPECT_EQ(BackgroundIndex(int64_t(1) << 40, 1, 523, LoopMode::kWrap),
            static_cast<int>(((int64_t(1) << 40) + 1) % 523));
}

TEST(AvatarTest, PreloadHoldsEveryFrame) {
  testing::TempDir tmp;
  auto dir = testing::WriteAvatar(tmp.path(), "a", kFrames, kW, kH, kRect);
  auto a = Avatar::Open(Options(dir));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ((*a)->num_frames(), kFrames);
  EXPECT_EQ((*a)->width(), kW);
  EXPECT_EQ((*a)->height(), kH);
  EXPECT_EQ((*a)->cached_frames(), kFrames);
  EXPECT_GE((*a)->memory_bytes(), int64_t(kFrames) * kW * kH * 3);
  EXPECT_EQ((*a)->rect(4), (CropRect{101, 60, 221, 180}));
  // Frames survive deletion of the files once preloaded.
  fs::remove_all(fs::path(dir) / "frames");
  auto f = (*a)->Frame(5);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->pixels.pixels, testing::MakeFrame(kW, kH, 5).pixels);
  EXPECT_EQ((*a)->Frame(kFrames).status().code(), StatusCode::kInvalidArgument);
}

TEST(AvatarTest, LruKeepsAtMostCacheFrames) {
  testing::TempDir tmp;
  auto dir = testing::WriteAvatar(tmp.path(), "a", kFrames, kW, kH, kRect);
  auto o = Options(dir);
  o.preload = false;
  o.cache_frames = 3;
  auto a = Avatar::Open(o);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ((*a)->cached_frames(), 1);
  FrameHandle held = *(*a)->Frame(1);
  for (int i : {2, 3, 4, 5, 6, 7}) ASSERT_TRUE((*a)->Frame(i).ok());
  EXPECT_EQ((*a)->cached_frames(), 3);
  EXPECT_EQ((*a)->memory_bytes(), 3 * int64_t(kW) * kH * 3 + 8 * int64_t(sizeof(CropRect)));
  // An evicted frame's handle stays valid; it is read again from disk when needed.
  EXPECT_EQ(held->pixels.pixels, testing::MakeFrame(kW, kH, 1).pixels);
  // 7 is most recent: touching it then loading two more keeps it.
  ASSERT_TRUE((*a)->Frame(7).ok());
  ASSERT_TRUE((*a)->Frame(0).ok());
  ASSERT_TRUE((*a)->Frame(1).ok());
  fs::remove(fs::path(dir) / "frames" / "frame_0007.png");
  EXPECT_TRUE((*a)->Frame(7).ok());  // still cached
  fs::remove(fs::path(dir) / "frames" / "frame_0006.png");
  auto missing = (*a)->Frame(6);  // evicted earlier, now gone from disk
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("frame_0006.png"));
}

TEST(AvatarTest, ConcurrentFramesAreConsistent) {
  testing::TempDir tmp;
  auto dir = testing::WriteAvatar(tmp.path(), "a", kFrames, kW, kH, kRect);
  auto o = Options(dir);
  o.preload = false;
  o.cache_frames = 2;
  auto a = *Avatar::Open(o);
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        int idx = (i * 3 + t) % kFrames;
        auto f = a->Frame(idx);
        if (!f.ok() || (*f)->pixels.pixels[0] != testing::MakeFrame(kW, kH, idx).pixels[0]) bad++;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_LE(a->cached_frames(), 2);
}

TEST(AvatarTest, ErrorsNameTheFile) {
  testing::TempDir tmp;
  auto dir = testing::WriteAvatar(tmp.path(), "a", kFrames, kW, kH, kRect);
  // Corrupt frame 3.
  ASSERT_TRUE(image::WriteFileBytes(dir + "/frames/frame_0003.png", "not a png").ok());
  auto o = Options(dir);
  auto a = Avatar::Open(o);
  ASSERT_FALSE(a.ok());
  EXPECT_THAT(a.status().message(), HasSubstr("frame_0003.png"));
  // num_frames larger than what exists.
  o.num_frames = 20;
  auto b = Avatar::Open(o);
  EXPECT_EQ(b.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(b.status().message(), HasSubstr("frame_0008.png"));
  // Wrong size frame.
  ASSERT_TRUE(
      image::WritePng(dir + "/frames/frame_0003.png", testing::MakeFrame(100, 100, 3)).ok());
  o.num_frames = 0;
  auto c = Avatar::Open(o);
  EXPECT_THAT(c.status().message(), HasSubstr("frame_0003.png is 100x100; expected 320x240"));
  // Rect outside the frame.
  ASSERT_TRUE(image::WritePng(dir + "/frames/frame_0003.png", testing::MakeFrame(kW, kH, 3)).ok());
  ASSERT_TRUE(image::WriteFileBytes(dir + "/crop_rects.json", "[[0,0,10,10],[0,0,400,10]]").ok());
  auto d = Avatar::Open(o);
  EXPECT_THAT(d.status().message(), HasSubstr("crop_rects.json: has 2 rects"));
}

TEST(AvatarTest, CompactKeepsOnlyTheEncodedRegionAndJpeg) {
  testing::TempDir tmp;
  // 640x480 so the crop region is well under half the frame.
  auto dir = testing::WriteAvatar(tmp.path(), "a", 3, 640, 480, {300, 200, 380, 280});
  auto o = Options(dir);
  auto full = *Avatar::Open(o);
  o.region_jpeg = true;
  o.compact = true;
  auto compact = *Avatar::Open(o);
  auto f = *compact->Frame(1);
  EXPECT_TRUE(f->compact());
  ASSERT_TRUE(f->jpeg);
  const CropRect& r = compact->rect(1);
  // Exactly the region encode's pixels: whole restart intervals and 16-px MCU rows
  // around the rect, nothing more.
  const int interval_px = 16 * f->jpeg->restart_interval_mcus();
  EXPECT_EQ(f->jpeg->restart_interval_mcus(), o.restart_interval_mcus);
  const image::PixelRect want = f->jpeg->ReadRect({r.x1, r.y1, r.width(), r.height()});
  EXPECT_EQ(f->pixels_rect.x, want.x);
  EXPECT_EQ(f->pixels_rect.y, want.y);
  EXPECT_EQ(f->pixels_rect.width, want.width);
  EXPECT_EQ(f->pixels_rect.height, want.height);
  EXPECT_EQ(f->pixels_rect.x % interval_px, 0);
  EXPECT_EQ(f->pixels_rect.y % 16, 0);
  EXPECT_TRUE(Covers(f->pixels_rect, r));
  EXPECT_LE(f->pixels_rect.width, 80 + 2 * interval_px);
  EXPECT_LE(f->pixels_rect.height, 80 + 2 * 16);
  // Held pixels are the original's.
  auto orig = testing::MakeFrame(640, 480, 1);
  for (int y = 0; y < f->pixels_rect.height; ++y) {
    ASSERT_TRUE(std::equal(f->pixels.row(y), f->pixels.row(y) + f->pixels_rect.width * 3,
                           orig.row(f->pixels_rect.y + y) + f->pixels_rect.x * 3))
        << "row " << y;
  }
  // Memory: JPEG + region, under 1/8 of the decoded frames.
  EXPECT_LT(compact->memory_bytes(), full->memory_bytes() / 8);
  int64_t held = 3 * int64_t(sizeof(CropRect));
  for (int i = 0; i < 3; ++i) held += int64_t((*compact->Frame(i))->memory_bytes());
  EXPECT_EQ(compact->memory_bytes(), held);
}

TEST(AvatarTest, PlanReadsOnlyHeadersAndEstimatesTheDecodedBytes) {
  testing::TempDir tmp;
  auto dir = testing::WriteAvatar(tmp.path(), "a", kFrames, kW, kH, kRect);
  auto o = Options(dir);
  // A corrupt body in frame 5 is not noticed by Plan: it decodes nothing.
  ASSERT_TRUE(image::WriteFileBytes(dir + "/frames/frame_0005.png", "not a png").ok());
  auto plan = Avatar::Plan(o);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->width, kW);
  EXPECT_EQ(plan->height, kH);
  EXPECT_EQ(plan->paths.size(), size_t(kFrames));
  EXPECT_EQ(plan->rects.size(), size_t(kFrames));
  const int64_t pixels = int64_t(kFrames) * kW * kH * 3;
  EXPECT_EQ(plan->estimated_bytes, pixels + int64_t(kFrames * sizeof(CropRect)));
  auto opened = Avatar::Open(o, *plan);
  EXPECT_THAT(opened.status().message(), HasSubstr("frame_0005.png"));
  ASSERT_TRUE(image::WritePng(dir + "/frames/frame_0005.png", testing::MakeFrame(kW, kH, 5)).ok());
  auto a = Avatar::Open(o, *plan);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ((*a)->memory_bytes(), plan->estimated_bytes);  // exact for full frames
  // Compact frames: the JPEG plus the held region, far less than full frames.
  o.region_jpeg = o.compact = true;
  auto compact_plan = Avatar::Plan(o);
  ASSERT_TRUE(compact_plan.ok());
  EXPECT_LT(compact_plan->estimated_bytes, pixels / 2);
  auto compact = Avatar::Open(o, *compact_plan);
  ASSERT_TRUE(compact.ok());
  EXPECT_LE((*compact)->memory_bytes(), compact_plan->estimated_bytes);
  // Without preload only the first frame is decoded at Open.
  o = Options(dir);
  o.preload = false;
  EXPECT_EQ(Avatar::Plan(o)->estimated_bytes,
            int64_t(kW) * kH * 3 + int64_t(kFrames * sizeof(CropRect)));
}

TEST(AvatarTest, HostileFramesAreLoadErrorsNamingTheFile) {
  testing::TempDir tmp;
  auto dir = testing::WriteAvatar(tmp.path(), "a", 3, kW, kH, kRect);
  auto o = Options(dir);
  // Frame 0's header claims 60000x60000: rejected by Plan, nothing allocated.
  const std::string frame0 = dir + "/frames/frame_0000.png";
  ASSERT_TRUE(image::WriteFileBytes(frame0, testing::PngClaiming(60000, 60000)).ok());
  auto huge = Avatar::Open(o);
  EXPECT_EQ(huge.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(huge.status().message(), HasSubstr(frame0));
  EXPECT_THAT(huge.status().message(), HasSubstr("60000x60000"));
  ASSERT_TRUE(image::WritePng(frame0, testing::MakeFrame(kW, kH, 0)).ok());
  // A later frame claiming a huge size: rejected when it is decoded.
  const std::string frame2 = dir + "/frames/frame_0002.png";
  ASSERT_TRUE(image::WriteFileBytes(frame2, testing::PngClaiming(50000, 70000)).ok());
  auto later = Avatar::Open(o);
  EXPECT_EQ(later.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(later.status().message(), HasSubstr(frame2));
  // A truncated JPEG frame is an error, not a half-grey background.
  fs::remove(frame2);
  auto jpeg = image::EncodeJpeg(testing::MakeFrame(kW, kH, 2), 90);
  ASSERT_TRUE(jpeg.ok());
  const std::string jpg2 = dir + "/frames/frame_0002.jpg";
  ASSERT_TRUE(image::WriteFileBytes(jpg2, jpeg->substr(0, jpeg->size() * 2 / 3)).ok());
  auto truncated = Avatar::Open(o);
  EXPECT_EQ(truncated.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(truncated.status().message(), HasSubstr(jpg2));
  ASSERT_TRUE(image::WriteFileBytes(jpg2, *jpeg).ok());
  ASSERT_TRUE(Avatar::Open(o).ok());
  // Configured limits: frame size, file size, frame count.
  o.image_limits.max_width = kW - 1;
  EXPECT_THAT(Avatar::Open(o).status().message(), HasSubstr("limits.max_image_width/height"));
  o.image_limits = {};
  o.image_limits.max_file_bytes = 1000;
  EXPECT_THAT(Avatar::Open(o).status().message(), HasSubstr("limits.max_image_file_mb"));
  o.image_limits = {};
  o.max_frames = 2;
  auto many = Avatar::Open(o);
  EXPECT_EQ(many.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(many.status().message(), HasSubstr("limits.max_frames"));
  o.num_frames = 3;
  EXPECT_THAT(Avatar::Open(o).status().message(), HasSubstr("limits.max_frames"));
}

TEST(AvatarTest, ConfinedFilesMustResolveInsideTheRoot) {
  testing::TempDir root, outside;
  auto dir = testing::WriteAvatar(root.path(), "a", 3, kW, kH, kRect);
  testing::WriteAvatar(outside.path(), "x", 3, kW, kH, kRect);
  auto o = Options(dir);
  o.confine_to = root.str();
  ASSERT_TRUE(Avatar::Open(o).ok());
  // One frame symlinked to a file outside the root.
  const std::string frame1 = dir + "/frames/frame_0001.png";
  fs::remove(frame1);
  fs::create_symlink(outside.path() / "x" / "frames" / "frame_0001.png", frame1);
  auto escaped = Avatar::Open(o);
  EXPECT_EQ(escaped.status().code(), StatusCode::kPermissionDenied);
  EXPECT_THAT(escaped.status().message(), HasSubstr("frame_0001.png"));
  EXPECT_THAT(escaped.status().message(), HasSubstr("leaves model_root"));
  o.confine_to.clear();  // unconfined (an operator's configured paths): allowed
  EXPECT_TRUE(Avatar::Open(o).ok());
  o.confine_to = root.str();
  // crop_rects.json symlinked outside.
  fs::remove(frame1);
  ASSERT_TRUE(image::WritePng(frame1, testing::MakeFrame(kW, kH, 1)).ok());
  fs::remove(dir + "/crop_rects.json");
  fs::create_symlink(outside.path() / "x" / "crop_rects.json", dir + "/crop_rects.json");
  EXPECT_EQ(Avatar::Open(o).status().code(), StatusCode::kPermissionDenied);
  // A symlink that stays inside the root is fine.
  fs::remove(dir + "/crop_rects.json");
  testing::WriteAvatar(root.path(), "b", 3, kW, kH, kRect);
  fs::create_symlink(root.path() / "b" / "crop_rects.json", dir + "/crop_rects.json");
  EXPECT_TRUE(Avatar::Open(o).ok());
}

// Confined frames are found by name in the frames directory's real path (one scan):
// plain files are read from there, a frame symlinked inside the root through its real
// path, a dangling symlink or a directory counts as missing, and names that only look
// like frames (frame_00001.png, frame_1.png, frame_0001.PNG) are not frames.
TEST(AvatarTest, ConfinedFramesAreFoundByNameInTheRealDirectory) {
  testing::TempDir root;
  auto dir = testing::WriteAvatar(root.path(), "a", 3, kW, kH, kRect);
  auto other = testing::WriteAvatar(root.path(), "b", 3, kW, kH, kRect);
  fs::create_directory_symlink(root.path() / "a", root.path() / "alias");
  auto o = Options((root.path() / "alias").string());
  o.confine_to = root.str();
  for (const char* decoy :
       {"frame_00003.png", "frame_3.png", "frame_0003.PNG", "frame_0003.png~"}) {
    ASSERT_TRUE(image::WritePng(dir + "/frames/" + decoy, testing::MakeFrame(kW, kH, 3)).ok());
  }
  const std::string frame1 = dir + "/frames/frame_0001.png";
  fs::remove(frame1);
  fs::create_symlink(other + "/frames/frame_0001.png", frame1);
  auto plan = Avatar::Plan(o);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const std::string real = fs::canonical(dir).string();
  EXPECT_EQ(plan->paths,
            (std::vector<std::string>{real + "/frames/frame_0000.png",
                                      fs::canonical(other).string() + "/frames/frame_0001.png",
                                      real + "/frames/frame_0002.png"}));
  EXPECT_GT(plan->plan_ms, 0.0);
  auto opened = Avatar::Open(o, *plan);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_GE((*opened)->load_ms(), plan->plan_ms);  // the load time covers Plan and Open
  EXPECT_EQ((*opened)->num_frames(), 3);

  // A dangling frame symlink is a missing frame: the count stops before it.
  fs::remove(dir + "/frames/frame_0002.png");
  fs::create_symlink(root.path() / "nowhere.png", dir + "/frames/frame_0002.png");
  plan = Avatar::Plan(o);
  EXPECT_EQ(plan.status().code(), StatusCode::kInvalidArgument);  // 3 rects for 2 frames
  o.num_frames = 3;
  auto missing = Avatar::Plan(o);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("frame_0002.png (or .jpg) is missing"));
}

}  // namespace
}  // namespace lipsync::avatar
