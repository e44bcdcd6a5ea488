#include "demo/make_demo.h"

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <filesystem>

#include <sys/stat.h>
#include <unistd.h>

#include "image/image.h"
#include "inference/ort_runtime.h"
#include "modelgen/model_builder.h"

namespace lipsync::demo {
namespace {

namespace fs = std::filesystem;

class MakeDemoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = (fs::temp_directory_path() /
             ("make_demo_test_" + std::to_string(::getpid()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
    fs::remove_all(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  MakeDemoOptions SmallOptions() const {
    MakeDemoOptions options;
    options.out_dir = root_;
    options.avatar = AvatarSpec{160, 120, 3, 9};
    options.tenants = {"demo", "identity"};
    return options;
  }

  std::string root_;
};

ino_t Inode(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_ino;
}

TEST_F(MakeDemoTest, WritesTenantsInTheGuidesLayoutSharingFrames) {
  MakeDemoOptions options = SmallOptions();
  std::vector<std::string> stages;
  options.progress = [&](const std::string& stage, int, int) { stages.push_back(stage); };
  ASSERT_TRUE(MakeDemo(options).ok());
  for (const char* tenant : {"demo", "identity"}) {
    const std::string dir = root_ + "/" + tenant;
    for (const char* file : {"frames/frame_0000.png", "frames/frame_0002.png", "crop_rects.json",
                             "checkpoint/model_best.onnx", "checkpoint/audio_encoder.onnx"}) {
      EXPECT_TRUE(fs::exists(dir + "/" + file)) << dir << "/" << file;
    }
    EXPECT_FALSE(fs::exists(dir + "/frames/frame_0003.png"));
  }
  EXPECT_FALSE(fs::exists(root_ + "/bench"));  // not asked for
  // One encoding, linked: same inode.
  EXPECT_EQ(Inode(root_ + "/demo/frames/frame_0001.png"),
            Inode(root_ + "/identity/frames/frame_0001.png"));
  EXPECT_EQ(image::ReadFileBytes(root_ + "/demo/crop_rects.json").value(),
            image::ReadFileBytes(root_ + "/identity/crop_rects.json").value());
  // Different models per tenant.
  EXPECT_NE(image::ReadFileBytes(root_ + "/demo/checkpoint/model_best.onnx").value(),
            image::ReadFileBytes(root_ + "/identity/checkpoint/model_best.onnx").value());
  EXPECT_NE(std::find(stages.begin(), stages.end(), "demo: frames"), stages.end());
  EXPECT_NE(std::find(stages.begin(), stages.end(), "identity: linked frames"), stages.end());
}

TEST_F(MakeDemoTest, RerunSkipsFinishedWorkAndForceRedoesIt) {
  MakeDemoOptions options = SmallOptions();
  ASSERT_TRUE(MakeDemo(options).ok());
  const std::string frame = root_ + "/demo/frames/frame_0000.png";
  const std::string model = root_ + "/identity/checkpoint/model_best.onnx";
  const ino_t frame_inode = Inode(frame), model_inode = Inode(model);
  const std::string frame_bytes = image::ReadFileBytes(frame).value();

  std::vector<std::string> stages;
  options.progress = [&](const std::string& stage, int, int) { stages.push_back(stage); };
  ASSERT_TRUE(MakeDemo(options).ok());
  EXPECT_EQ(stages, (std::vector<std::string>{"demo: up to date", "identity: up to date"}));
  EXPECT_EQ(Inode(frame), frame_inode);  // not rewritten
  EXPECT_EQ(Inode(model), model_inode);

  // A missing file makes that tenant redo its work.
  fs::remove(model);
  stages.clear();
  ASSERT_TRUE(MakeDemo(options).ok());
  EXPECT_EQ(stages.front(), "demo: up to date");
  EXPECT_TRUE(fs::exists(model));

  options.force = true;
  ASSERT_TRUE(MakeDemo(options).ok());
  EXPECT_NE(Inode(frame), frame_inode);                         // rewritten...
  EXPECT_EQ(image::ReadFileBytes(frame).value(), frame_bytes);  // ...to the same bytes
  EXPECT_EQ(Inode(frame), Inode(root_ + "/identity/frames/frame_0000.png"));

  // Other options are other work.
  options.force = false;
  options.avatar.frames = 2;
  stages.clear();
  ASSERT_TRUE(MakeDemo(options).ok());
  EXPECT_EQ(stages.front(), "demo: frames");
  EXPECT_FALSE(fs::exists(root_ + "/identity/frames/frame_0002.png"));
}

TEST_F(MakeDemoTest, RejectsBadOptions) {
  MakeDemoOptions options = SmallOptions();
  options.tenants = {"demo", "nope"};
  Status st = MakeDemo(options);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("'nope'"), std::string::npos);
  options.tenants = {"demo", "demo"};
  EXPECT_EQ(MakeDemo(options).code(), StatusCode::kInvalidArgument);
  options.tenants = {};
  EXPECT_EQ(MakeDemo(options).code(), StatusCode::kInvalidArgument);
  options = SmallOptions();
  options.out_dir = "";
  EXPECT_EQ(MakeDemo(options).code(), StatusCode::kInvalidArgument);
  options = SmallOptions();
  options.avatar.frames = 0;
  EXPECT_EQ(MakeDemo(options).code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(root_ + "/demo"));
}

// End to end through the real demo model: with loud audio, the pixels it changes in
// the ROI built from the generated avatar sit on the avatar's own mouth.
TEST_F(MakeDemoTest, DemoModelOpensTheAvatarsMouth) {
  MakeDemoOptions options = SmallOptions();
  options.avatar = AvatarSpec{640, 360, 1, 4};
  options.tenants = {"demo"};
  ASSERT_TRUE(MakeDemo(options).ok());
  auto runtime = inference::OrtRuntime::Initialize();
  ASSERT_TRUE(runtime.ok()) << runtime.status().ToString();
  Ort::Session session((*runtime)->env(), (root_ + "/demo/checkpoint/model_best.onnx").c_str(),
                       (*runtime)->MakeSessionOptions());

  const image::Image frame = image::ReadImageFile(root_ + "/demo/frames/frame_0000.png").value();
  const CropRect crop = AvatarCropRect(options.avatar, 0);
  // Nearest-neighbour ROI is enough here: we only ask where the model paints.
  std::vector<float> visual(6 * 320 * 320, 0.f);
  for (int v = 0; v < 320; ++v) {
    for (int u = 0; u < 320; ++u) {
      const int x = crop.x1 + std::min(crop.size() - 1, int((u + 4.5f) * crop.size() / 328.f));
      const int y = crop.y1 + std::min(crop.size() - 1, int((v + 4.5f) * crop.size() / 328.f));
      const uint8_t* p = frame.row(y) + 3 * x;
      for (int c = 0; c < 3; ++c) visual[(c * 320 + v) * 320 + u] = p[2 - c] / 255.f;  // BGR
    }
  }
  std::vector<float> audio(32 * 16 * 16, 1.0f);
  const std::array<int64_t, 4> visual_shape{1, 6, 320, 320}, audio_shape{1, 32, 16, 16};
  auto memory = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::array<Ort::Value, 2> inputs{
      Ort::Value::CreateTensor<float>(memory, visual.data(), visual.size(), visual_shape.data(), 4),
      Ort::Value::CreateTensor<float>(memory, audio.data(), audio.size(), audio_shape.data(), 4)};
  const char* input_names[] = {"input", "audio"};
  const char* output_names[] = {"output"};
  auto outputs = session.Run(Ort::RunOptions{}, input_names, inputs.data(), 2, output_names, 1);
  const float* out = outputs[0].GetTensorData<float>();

  double sum_u = 0, sum_v = 0, weight = 0;
  for (int v = 0; v < 320; ++v) {
    for (int u = 0; u < 320; ++u) {
      double change = 0;
      for (int c = 0; c < 3; ++c)
        change += std::abs(out[(c * 320 + v) * 320 + u] - visual[(c * 320 + v) * 320 + u]);
      sum_u += change * u;
      sum_v += change * v;
      weight += change;
    }
  }
  ASSERT_GT(weight, 10.0) << "loud audio should open the mouth";
  EXPECT_NEAR(sum_u / weight, modelgen::kMouthCenterX, 8);
  EXPECT_NEAR(sum_v / weight, modelgen::kMouthCenterY, 8);
}

}  // namespace
}  // namespace lipsync::demo
