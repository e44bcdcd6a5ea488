#include "inference/onnx_model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>

#include "inference/execution_provider.h"
#include "inference/ort_runtime.h"
#include "inference/test_models.h"
#include "modelgen/model_builder.h"

namespace lipsync::inference {
namespace {

namespace fs = std::filesystem;

class OnnxModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_TRUE(OrtRuntime::Initialize().ok());
    dir_ =
        new fs::path(fs::temp_directory_path() / ("onnx_model_test_" + std::to_string(::getpid())));
    fs::create_directories(*dir_);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
  }
  static std::string Path(const std::string& name) { return (*dir_ / name).string(); }

  static std::vector<float> Random(size_t n, float lo, float hi, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
  }

  static fs::path* dir_;
};
fs::path* OnnxModelTest::dir_ = nullptr;

TEST_F(OnnxModelTest, ReadsShapesFromTheFile) {
  ASSERT_TRUE(testing::WriteScaledModel(Path("s24.onnx"), 24, 1.f).ok());
  auto model = OnnxModel::Load({Path("s24.onnx"), ""}, -1);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ((*model)->visual_channels(), 6);
  EXPECT_EQ((*model)->input_height(), 24);
  EXPECT_EQ((*model)->input_width(), 24);
  EXPECT_EQ((*model)->output_height(), 24);
  EXPECT_EQ((*model)->output_width(), 24);
  EXPECT_EQ((*model)->visual_shape().ToString(), "[-1,6,24,24]");
  EXPECT_EQ((*model)->device_id(), -1);
  EXPECT_FALSE((*model)->has_audio_encoder());
  EXPECT_GT((*model)->memory_bytes(), 0);

  ASSERT_TRUE(modelgen::WriteIdentityModel(Path("identity.onnx")).ok());
  auto full = OnnxModel::Load({Path("identity.onnx"), ""}, -1);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  EXPECT_EQ((*full)->input_height(), 320);
  EXPECT_EQ((*full)->output_width(), 320);
}

TEST_F(OnnxModelTest, WrongSizesAreInvalidArgumentWithExpectedBytes) {
  ASSERT_TRUE(testing::WriteScaledModel(Path("s16.onnx"), 16, 1.f).ok());
  auto model = OnnxModel::Load({Path("s16.onnx"), ""}, -1);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const size_t visual = 3 * 6 * 16 * 16 * 4, audio = 3 * 8192 * 4;
  EXPECT_TRUE((*model)->CheckInputSizes(3, visual, audio).ok());

  Status st = (*model)->CheckInputSizes(3, visual - 4, audio);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find(std::to_string(visual)), std::string::npos) << st.message();
  EXPECT_NE(st.message().find(std::to_string(visual - 4)), std::string::npos) << st.message();

  st = (*model)->CheckInputSizes(3, visual, 8192 * 4);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find(std::to_string(audio)), std::string::npos) << st.message();

  EXPECT_EQ((*model)->CheckInputSizes(0, 0, 0).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*model)->CheckInputSizes(-2, 0, 0).code(), StatusCode::kInvalidArgument);
  std::string out;
  std::vector<float> v(6 * 16 * 16), a(8192);
  EXPECT_EQ((*model)->Run(0, v.data(), a.data(), OutputFormat::kFloat32, &out).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ((*model)
                ->Run(1, static_cast<const float*>(nullptr), a.data(), OutputFormat::kFloat32, &out)
                .code(),
            StatusCode::kInvalidArgument);
}

TEST_F(OnnxModelTest, IdentityIsBitExactAtBatch1And7And24) {
  ASSERT_TRUE(modelgen::WriteIdentityModel(Path("identity.onnx")).ok());
  auto loaded = OnnxModel::Load({Path("identity.onnx"), ""}, -1);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const OnnxModel& model = **loaded;
  const size_t plane = 320 * 320;
  for (int batch : {1, 7, 24}) {
    auto visual = Random(batch * 6 * plane, -1.f, 2.f, 100 + batch);
    auto audio = Random(batch * 8192, -1.f, 1.f, 200 + batch);
    std::string out;
    ASSERT_TRUE(model.Run(batch, visual.data(), audio.data(), OutputFormat::kFloat32, &out).ok());
    ASSERT_EQ(out.size(), batch * 3 * plane * sizeof(float));
    for (int b = 0; b < batch; ++b) {
      // Frame b of the output is channels 0-2 of frame b of the input, byte for byte.
      ASSERT_EQ(std::memcmp(out.data() + b * 3 * plane * sizeof(float),
                            visual.data() + b * 6 * plane, 3 * plane * sizeof(float)),
                0)
          << "batch " << batch << " frame " << b;
    }
  }
}

TEST_F(OnnxModelTest, Uint8OutputIsTheRoundedClampedFloatOutput) {
  ASSERT_TRUE(testing::WriteScaledModel(Path("half.onnx"), 16, 0.75f).ok());
  auto loaded = OnnxModel::Load({Path("half.onnx"), ""}, -1);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  const int batch = 5;
  auto visual = Random(batch * 6 * 256, -0.5f, 1.8f, 7);
  std::vector<float> audio(batch * 8192, 0.f);
  std::string as_float, as_u8;
  ASSERT_TRUE(
      (*loaded)->Run(batch, visual.data(), audio.data(), OutputFormat::kFloat32, &as_float).ok());
  ASSERT_TRUE(
      (*loaded)->Run(batch, visual.data(), audio.data(), OutputFormat::kUint8, &as_u8).ok());
  ASSERT_EQ(as_u8.size(), static_cast<size_t>(batch * 3 * 256));
  ASSERT_EQ(as_float.size(), as_u8.size() * 4);
  int clamped_low = 0, clamped_high = 0;
  for (size_t i = 0; i < as_u8.size(); ++i) {
    float x;
    std::memcpy(&x, as_float.data() + i * 4, 4);
    int expected = static_cast<int>(std::round(std::min(1.f, std::max(0.f, x)) * 255.f));
    clamped_low += x < 0;
    clamped_high += x > 1;
    ASSERT_EQ(static_cast<uint8_t>(as_u8[i]), expected) << "value " << i << " float " << x;
  }
  EXPECT_GT(clamped_low, 0);  // the input really exercised the clamp on both sides
  EXPECT_GT(clamped_high, 0);
}

// The uint8 forms both ways: on the wrapped graph (ONNX Runtime converts) and on the
// plain one (OnnxModel converts on the CPU), against the float path of the same model:
// within one level (ONNX Round is half to even), out-of-range outputs clipped.
TEST_F(OnnxModelTest, Uint8VisualInputMatchesTheFloatPathWrappedOrNot) {
  ASSERT_TRUE(testing::WriteScaledModel(Path("u8.onnx"), 16, 1.6f).ok());
  const int batch = 3;
  std::mt19937 rng(11);
  std::vector<uint8_t> pixels(batch * 6 * 256);
  for (auto& p : pixels) p = static_cast<uint8_t>(rng() % 256);
  std::vector<float> as_floats(pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) as_floats[i] = pixels[i] / 255.0f;
  std::vector<float> audio(batch * 8192, 0.f);
  for (bool wrap : {true, false}) {
    SCOPED_TRACE(wrap ? "wrapped" : "plain");
    auto model = OnnxModel::Load({Path("u8.onnx"), ""}, -1, nullptr, wrap);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    EXPECT_EQ((*model)->uint8_io(), wrap);
    std::string from_floats, from_u8, float_from_u8;
    ASSERT_TRUE((*model)
                    ->Run(batch, as_floats.data(), audio.data(), OutputFormat::kUint8, &from_floats)
                    .ok());
    ASSERT_TRUE(
        (*model)->Run(batch, pixels.data(), audio.data(), OutputFormat::kUint8, &from_u8).ok());
    ASSERT_TRUE(
        (*model)
            ->Run(batch, pixels.data(), audio.data(), OutputFormat::kFloat32, &float_from_u8)
            .ok());
    ASSERT_EQ(from_u8.size(), static_cast<size_t>(batch * 3 * 256));
    ASSERT_EQ(from_floats.size(), from_u8.size());
    ASSERT_EQ(float_from_u8.size(), from_u8.size() * 4);
    int clipped = 0;
    for (size_t i = 0; i < from_u8.size(); ++i) {
      const int a = static_cast<uint8_t>(from_u8[i]);
      const int b = static_cast<uint8_t>(from_floats[i]);
      ASSERT_LE(std::abs(a - b), 1) << "value " << i;
      float x;
      std::memcpy(&x, float_from_u8.data() + i * 4, 4);
      const size_t frame = i / (3 * 256), k = i % (3 * 256);
      ASSERT_EQ(x, as_floats[frame * 6 * 256 + k] * 1.6f) << "value " << i;  // v/255 exactly
      clipped += x > 1.f && a == 255;
    }
    EXPECT_GT(clipped, 0);  // the scale pushed values past 1: clipped to 255, not wrapped
    EXPECT_EQ((*model)
                  ->Run(batch, static_cast<const uint8_t*>(nullptr), audio.data(),
                        OutputFormat::kUint8, &from_u8)
                  .code(),
              StatusCode::kInvalidArgument);
  }
}

TEST_F(OnnxModelTest, ConcurrentRunsGiveTheSameAnswer) {
  ASSERT_TRUE(testing::WriteScaledModel(Path("s16c.onnx"), 16, 0.5f).ok());
  auto loaded = OnnxModel::Load({Path("s16c.onnx"), ""}, -1);
  ASSERT_TRUE(loaded.ok());
  auto visual = Random(4 * 6 * 256, 0.f, 1.f, 3);
  std::vector<float> audio(4 * 8192, 0.f);
  std::string reference;
  ASSERT_TRUE(
      (*loaded)->Run(4, visual.data(), audio.data(), OutputFormat::kFloat32, &reference).ok());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        std::string out;
        Status st = (*loaded)->Run(4, visual.data(), audio.data(), OutputFormat::kFloat32, &out);
        if (!st.ok() || out != reference) ++mismatches;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(OnnxModelTest, BadFilesAreClearErrors) {
  auto missing = OnnxModel::Load({Path("nope.onnx"), ""}, -1);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  ASSERT_TRUE(testing::WriteCorruptModel(Path("corrupt.onnx")).ok());
  auto corrupt = OnnxModel::Load({Path("corrupt.onnx"), ""}, -1);
  EXPECT_EQ(corrupt.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(corrupt.status().message().find(Path("corrupt.onnx")), std::string::npos)
      << corrupt.status().message();

  ASSERT_TRUE(testing::WriteWrongNamesModel(Path("names.onnx")).ok());
  auto names = OnnxModel::Load({Path("names.onnx"), ""}, -1);
  EXPECT_EQ(names.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(names.status().message().find("x [-1,6,16,16]"), std::string::npos)
      << names.status().message();

  // A lip-sync model is not an audio encoder.
  ASSERT_TRUE(testing::WriteScaledModel(Path("s16e.onnx"), 16, 1.f).ok());
  auto bad_encoder = OnnxModel::Load({Path("s16e.onnx"), Path("s16e.onnx")}, -1);
  EXPECT_EQ(bad_encoder.status().code(), StatusCode::kFailedPrecondition);
}

// Hostile files: a truncated model, one declaring enormous frames (refused before any
// allocation is sized by them), and one whose tensor names are huge (quoted bounded).
TEST_F(OnnxModelTest, HostileFilesAreBoundedClearErrors) {
  ASSERT_TRUE(testing::WriteScaledModel(Path("whole.onnx"), 16, 0.5f).ok());
  const auto size = fs::file_size(Path("whole.onnx"));
  fs::copy_file(Path("whole.onnx"), Path("truncated.onnx"));
  fs::resize_file(Path("truncated.onnx"), size / 2);
  auto truncated = OnnxModel::Load({Path("truncated.onnx"), ""}, -1);
  EXPECT_EQ(truncated.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(truncated.status().message().find(Path("truncated.onnx")), std::string::npos)
      << truncated.status().message();

  // [B,6,100000,100000] float32 would be 240 GB per frame for the warm-up run.
  ASSERT_TRUE(testing::WriteScaledModel(Path("huge_dims.onnx"), 100000, 1.f).ok());
  auto huge = OnnxModel::Load({Path("huge_dims.onnx"), ""}, -1);
  EXPECT_EQ(huge.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(huge.status().message().find("[-1,6,100000,100000]"), std::string::npos)
      << huge.status().message();
  EXPECT_NE(huge.status().message().find("refused before allocating"), std::string::npos);

  const std::string long_name(20000, 'n');
  ASSERT_TRUE(testing::WriteNamedInputModel(Path("long_name.onnx"), long_name).ok());
  auto named = OnnxModel::Load({Path("long_name.onnx"), ""}, -1);
  EXPECT_EQ(named.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(named.status().message().find("more bytes cut"), std::string::npos)
      << named.status().message().substr(0, 500);
  EXPECT_LT(named.status().message().size(), 1000u);
}

TEST_F(OnnxModelTest, AudioEncoderEncodesMelWindows) {
  ASSERT_TRUE(testing::WriteScaledModel(Path("s16a.onnx"), 16, 1.f).ok());
  ASSERT_TRUE(modelgen::WriteAudioEncoderModel(Path("enc.onnx")).ok());
  auto plain = OnnxModel::Load({Path("s16a.onnx"), ""}, -1);
  ASSERT_TRUE(plain.ok());
  std::vector<float> mel(3 * 80 * 16, -4.f);  // silence
  EXPECT_EQ((*plain)->EncodeAudio(mel.data(), 3).status().code(), StatusCode::kFailedPrecondition);

  auto model = OnnxModel::Load({Path("s16a.onnx"), Path("enc.onnx")}, -1);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_TRUE((*model)->has_audio_encoder());
  for (size_t i = 80 * 16; i < 2 * 80 * 16; ++i) mel[i] = 2.f;  // window 1 is loud
  auto features = (*model)->EncodeAudio(mel.data(), 3);
  ASSERT_TRUE(features.ok()) << features.status().ToString();
  ASSERT_EQ(features->size(), 3u * 512);
  double silent = 0, loud = 0;
  for (int i = 0; i < 512; ++i) {
    silent += std::abs((*features)[i]);
    loud += (*features)[512 + i];
  }
  EXPECT_EQ(silent, 0.0);
  EXPECT_GT(loud, 0.0);
  EXPECT_EQ((*model)->EncodeAudio(mel.data(), 0).status().code(), StatusCode::kInvalidArgument);
}

TEST(ExecutionProviderTest, PlansCpuWithAReasonWhenCudaIsOffOrMissing) {
  auto rt = OrtRuntime::Initialize();
  ASSERT_TRUE(rt.ok());
  ExecutionConfig off;
  off.use_cuda = false;
  auto plan = PlanExecution(off, **rt);
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->cuda);
  EXPECT_EQ(plan->devices, std::vector<int>{kCpuDevice});
  EXPECT_EQ(plan->provider, "CPUExecutionProvider");
  EXPECT_NE(plan->reason.find("use_cuda is false"), std::string::npos);

  ExecutionConfig on;
  auto auto_plan = PlanExecution(on, **rt);
  ASSERT_TRUE(auto_plan.ok());
  ExecutionConfig required;
  required.require_cuda = true;
  auto required_plan = PlanExecution(required, **rt);
  if (!(*rt)->HasProvider("CUDAExecutionProvider")) {
    EXPECT_FALSE(auto_plan->cuda);
    EXPECT_NE(auto_plan->reason.find("no CUDAExecutionProvider"), std::string::npos)
        << auto_plan->reason;
    EXPECT_NE(auto_plan->reason.find((*rt)->library_path()), std::string::npos);
    EXPECT_EQ(required_plan.status().code(), StatusCode::kFailedPrecondition);
  } else if (GpuCount() > 0) {
    // A GPU and the provider in the runtime: CUDA only if the provider library, the
    // CUDA/cuDNN libraries (onnx.cuda_library_dirs) and a probe all work; otherwise the
    // logged CPU fallback names what was missing, and require_cuda refuses to start.
    EXPECT_EQ(required_plan.ok(), auto_plan->cuda) << auto_plan->reason;
    if (!auto_plan->cuda) {
      EXPECT_EQ(auto_plan->devices, std::vector<int>{kCpuDevice});
      EXPECT_FALSE(auto_plan->reason.empty());
      EXPECT_EQ(required_plan.status().code(), StatusCode::kFailedPrecondition);
    }
  }
}

TEST(GpuInfoTest, QueryMatchesCountAndNeverFails) {
  auto gpus = QueryGpus();
  EXPECT_EQ(static_cast<int>(gpus.size()), GpuCount());
  for (const auto& g : gpus) EXPECT_GT(g.memory_total_mb, 0);
  if (!NvmlAvailable()) {
    EXPECT_FALSE(GpuMemoryUsedBytes(0).has_value());
  }
}

}  // namespace
}  // namespace lipsync::inference
