// Loads every generated model in the real ONNX Runtime and checks its contract:
// declared I/O, any batch size, and the behaviour each model promises.
#include "modelgen/model_builder.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "inference/ort_runtime.h"
#include "modelgen/model_cost.h"

namespace lipsync::modelgen {
namespace {

namespace fs = std::filesystem;
using inference::OrtRuntime;

constexpr int64_t kFramePixels = int64_t(kFrameSize) * kFrameSize;
constexpr int64_t kVisualSize = kVisualChannels * kFramePixels;
constexpr int64_t kAudioSize = int64_t(kAudioChannels) * kAudioHeight * kAudioWidth;
constexpr int64_t kOutputSize = 3 * kFramePixels;
constexpr int64_t kMelSize = int64_t(kMelBands) * kMelSteps;

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;  // -1 where symbolic
  std::string batch_symbol;
};

struct Input {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float>* data;
};

class ModelgenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto rt = OrtRuntime::Initialize();
    ASSERT_TRUE(rt.ok()) << rt.status().ToString();
  }

  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("modelgen_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  std::string PathFor(const std::string& name) const { return (dir_ / name).string(); }

  static std::unique_ptr<Ort::Session> Load(const std::string& path) {
    OrtRuntime* rt = OrtRuntime::Get();
    return std::make_unique<Ort::Session>(rt->env(), path.c_str(), rt->MakeSessionOptions());
  }

  static TensorSpec Spec(Ort::TypeInfo info, std::string name) {
    auto tensor = info.GetTensorTypeAndShapeInfo();
    EXPECT_EQ(tensor.GetElementType(), ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) << name;
    std::vector<const char*> symbols(tensor.GetDimensionsCount());
    tensor.GetSymbolicDimensions(symbols.data(), symbols.size());
    return {std::move(name), tensor.GetShape(), symbols.empty() ? "" : symbols[0]};
  }

  static std::vector<TensorSpec> Inputs(Ort::Session& s) {
    Ort::AllocatorWithDefaultOptions alloc;
    std::vector<TensorSpec> out;
    for (size_t i = 0; i < s.GetInputCount(); ++i)
      out.push_back(Spec(s.GetInputTypeInfo(i), s.GetInputNameAllocated(i, alloc).get()));
    return out;
  }
  static std::vector<TensorSpec> Outputs(Ort::Session& s) {
    Ort::AllocatorWithDefaultOptions alloc;
    std::vector<TensorSpec> out;
    for (size_t i = 0; i < s.GetOutputCount(); ++i)
      out.push_back(Spec(s.GetOutputTypeInfo(i), s.GetOutputNameAllocated(i, alloc).get()));
    return out;
  }

  static void ExpectLipSyncIo(Ort::Session& s) {
    auto in = Inputs(s);
    ASSERT_EQ(in.size(), 2u);
    EXPECT_EQ(in[0].name, "input");
    EXPECT_EQ(in[0].shape, (std::vector<int64_t>{-1, 6, 320, 320}));
    EXPECT_EQ(in[0].batch_symbol, "B");
    EXPECT_EQ(in[1].name, "audio");
    EXPECT_EQ(in[1].shape, (std::vector<int64_t>{-1, 32, 16, 16}));
    EXPECT_EQ(in[1].batch_symbol, "B");
    auto out = Outputs(s);
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(out[0].name, "output");
    EXPECT_EQ(out[0].shape, (std::vector<int64_t>{-1, 3, 320, 320}));
    EXPECT_EQ(out[0].batch_symbol, "B");
  }

  // Runs the session; returns the single output and its shape.
  static std::vector<float> Run(Ort::Session& s, const std::vector<Input>& inputs,
                                const std::string& output_name,
                                std::vector<int64_t>* output_shape) {
    auto mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::vector<Ort::Value> values;
    std::vector<const char*> names;
    for (const auto& in : inputs) {
      values.push_back(Ort::Value::CreateTensor<float>(mem, in.data->data(), in.data->size(),
                                                       in.shape.data(), in.shape.size()));
      names.push_back(in.name.c_str());
    }
    const char* out_name = output_name.c_str();
    auto outs =
        s.Run(Ort::RunOptions{nullptr}, names.data(), values.data(), values.size(), &out_name, 1);
    auto info = outs[0].GetTensorTypeAndShapeInfo();
    *output_shape = info.GetShape();
    const float* p = outs[0].GetTensorData<float>();
    return std::vector<float>(p, p + info.GetElementCount());
  }

  static std::vector<float> RunLipSync(Ort::Session& s, std::vector<float>& visual,
                                       std::vector<float>& audio, int64_t batch) {
    std::vector<int64_t> shape;
    auto out =
        Run(s, {{"input", {batch, 6, 320, 320}, &visual}, {"audio", {batch, 32, 16, 16}, &audio}},
            "output", &shape);
    EXPECT_EQ(shape, (std::vector<int64_t>{batch, 3, 320, 320}));
    return out;
  }

  // [batch,1,80,16] mel -> [batch,512] features.
  static std::vector<float> Encode(Ort::Session& s, std::vector<float>& mel, int64_t batch) {
    std::vector<int64_t> shape;
    auto out = Run(s, {{"mel", {batch, 1, 80, 16}, &mel}}, "features", &shape);
    EXPECT_EQ(shape, (std::vector<int64_t>{batch, 512}));
    return out;
  }

  static std::vector<float> RandomValues(size_t n, uint32_t seed, float lo, float hi) {
    std::mt19937 gen(seed);
    std::uniform_real_distribution<float> dist(lo, hi);
    std::vector<float> v(n);
    for (float& x : v) x = dist(gen);
    return v;
  }

  fs::path dir_;
};

// ---------- identity ----------

TEST_F(ModelgenTest, IdentityOutputsFaceChannelsBitExactForAnyBatch) {
  const std::string path = PathFor("identity.onnx");
  ASSERT_TRUE(WriteIdentityModel(path).ok());
  auto session = Load(path);
  ExpectLipSyncIo(*session);
  for (int64_t batch : {1, 7}) {
    auto visual = RandomValues(size_t(batch * kVisualSize), uint32_t(batch), 0.f, 1.f);
    auto audio = RandomValues(size_t(batch * kAudioSize), 99, -3.f, 3.f);
    auto out = RunLipSync(*session, visual, audio, batch);
    ASSERT_EQ(out.size(), size_t(batch * kOutputSize));
    for (int64_t b = 0; b < batch; ++b) {
      const float* face = visual.data() + b * kVisualSize;
      const float* got = out.data() + b * kOutputSize;
      ASSERT_EQ(std::memcmp(face, got, kOutputSize * sizeof(float)), 0) << "sample " << b;
    }
  }
}

// ---------- demo ----------

constexpr float kSkin[3] = {0.45f, 0.55f, 0.75f};  // BGR

float Luma(float b, float g, float r) { return 0.114f * b + 0.587f * g + 0.299f * r; }

// A batch of uniform skin-coloured faces (channels 3-5 masked as the server does).
std::vector<float> SkinFaces(int64_t batch) {
  std::vector<float> v(size_t(batch * kVisualSize), 0.f);
  for (int64_t b = 0; b < batch; ++b)
    for (int c = 0; c < 3; ++c)
      std::fill_n(v.begin() + b * kVisualSize + c * kFramePixels, kFramePixels, kSkin[c]);
  return v;
}

// Pixels of sample `b` inside the mouth's bounding box clearly darker than the skin.
int DarkMouthPixels(const std::vector<float>& out, int64_t b) {
  const float* o = out.data() + b * kOutputSize;
  const float skin_luma = Luma(kSkin[0], kSkin[1], kSkin[2]);
  int count = 0;
  for (int y = kMouthCenterY - kMouthMaxHalfHeight; y <= kMouthCenterY + kMouthMaxHalfHeight; ++y)
    for (int x = kMouthCenterX - kMouthHalfWidth; x <= kMouthCenterX + kMouthHalfWidth; ++x) {
      int64_t i = int64_t(y) * kFrameSize + x;
      if (Luma(o[i], o[kFramePixels + i], o[2 * kFramePixels + i]) < skin_luma - 0.1f) ++count;
    }
  return count;
}

TEST_F(ModelgenTest, DemoMouthOpensWithAudioEnergyAndStaysClosedOnSilence) {
  const std::string path = PathFor("demo.onnx");
  ASSERT_TRUE(WriteDemoLipSyncModel(path).ok());
  auto session = Load(path);
  ExpectLipSyncIo(*session);

  // One batch, one audio level per sample: the energy must act per sample.
  const std::vector<float> levels = {0.f, 0.1f, 0.2f, 0.4f, 0.8f};
  const int64_t batch = int64_t(levels.size());
  auto visual = SkinFaces(batch);
  std::vector<float> audio(size_t(batch * kAudioSize));
  for (int64_t b = 0; b < batch; ++b)
    std::fill_n(audio.begin() + b * kAudioSize, kAudioSize, levels[size_t(b)]);
  auto out = RunLipSync(*session, visual, audio, batch);

  std::vector<int> dark;
  for (int64_t b = 0; b < batch; ++b) {
    dark.push_back(DarkMouthPixels(out, b));
    std::printf("demo: audio level %.2f -> %d dark mouth pixels\n", levels[size_t(b)], dark.back());
  }
  EXPECT_EQ(dark[0], 0) << "silence must leave the mouth closed";
  for (size_t i = 1; i < dark.size(); ++i)
    EXPECT_GT(dark[i], dark[i - 1]) << "level " << levels[i] << " vs " << levels[i - 1];
  // A wide-open mouth still fits the documented box (its area is < pi*44*30).
  EXPECT_LT(dark.back(), int(3.1416 * kMouthHalfWidth * kMouthMaxHalfHeight));
  EXPECT_GT(dark.back(), 1000);

  if (const char* dump = std::getenv("MODELGEN_DUMP_DIR")) {
    std::ofstream f(std::string(dump) + "/demo_out.f32", std::ios::binary);
    f.write(reinterpret_cast<const char*>(out.data()), std::streamsize(out.size() * sizeof(float)));
  }
  // Away from the mouth the face passes through; everything stays in [0,1].
  for (int64_t b = 0; b < batch; ++b)
    for (int c = 0; c < 3; ++c)
      for (int y : {0, 100, 180, kMouthCenterY, 319})
        EXPECT_FLOAT_EQ(out[size_t(b * kOutputSize + c * kFramePixels + y * kFrameSize + 20)],
                        kSkin[c]);
  for (float v : out) ASSERT_TRUE(v >= 0.f && v <= 1.f) << v;
}

TEST_F(ModelgenTest, DemoRunsAtBatchSevenAndClipsOutOfRangeFaces) {
  const std::string path = PathFor("demo.onnx");
  ASSERT_TRUE(WriteDemoLipSyncModel(path).ok());
  auto session = Load(path);
  auto visual = RandomValues(size_t(7 * kVisualSize), 3, -0.5f, 1.5f);
  auto audio = RandomValues(size_t(7 * kAudioSize), 4, -2.f, 2.f);
  auto out = RunLipSync(*session, visual, audio, 7);
  for (float v : out) ASSERT_TRUE(v >= 0.f && v <= 1.f) << v;
}

// ---------- audio encoder ----------

TEST_F(ModelgenTest, AudioEncoderDeclaresMelToFeatures) {
  const std::string path = PathFor("audio_encoder.onnx");
  ASSERT_TRUE(WriteAudioEncoderModel(path).ok());
  auto session = Load(path);
  auto in = Inputs(*session);
  ASSERT_EQ(in.size(), 1u);
  EXPECT_EQ(in[0].name, "mel");
  EXPECT_EQ(in[0].shape, (std::vector<int64_t>{-1, 1, 80, 16}));
  EXPECT_EQ(in[0].batch_symbol, "B");
  auto out = Outputs(*session);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].name, "features");
  EXPECT_EQ(out[0].shape, (std::vector<int64_t>{-1, 512}));
}

// One mel window per level, every value at that level.
std::vector<float> ConstantMels(const std::vector<float>& levels) {
  std::vector<float> mel;
  for (float level : levels) mel.insert(mel.end(), size_t(kMelSize), level);
  return mel;
}

double MeanOf(const float* p, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += p[i];
  return sum / double(n);
}

TEST_F(ModelgenTest, AudioEncoderKeepsEnergySilenceZeroLouderLarger) {
  const std::string path = PathFor("audio_encoder.onnx");
  ASSERT_TRUE(WriteAudioEncoderModel(path).ok());
  auto session = Load(path);
  const std::vector<float> levels = {-4.f, -3.f, -1.5f, 0.f, 2.f, 4.f};
  auto mel = ConstantMels(levels);
  auto features = Encode(*session, mel, int64_t(levels.size()));
  std::vector<double> means;
  for (size_t b = 0; b < levels.size(); ++b) {
    const float* f = features.data() + b * kAudioFeatureSize;
    means.push_back(MeanOf(f, kAudioFeatureSize));
    for (int i = 0; i < kAudioFeatureSize; ++i) ASSERT_TRUE(std::isfinite(f[i]) && f[i] >= 0.f);
  }
  EXPECT_LT(means[0], 1e-6) << "silence must give ~0 features";
  for (size_t i = 1; i < means.size(); ++i)
    EXPECT_GT(means[i], means[i - 1]) << "mel level " << levels[i];
  EXPECT_GT(means.back(), 0.5) << "full-scale mel should give large features";

  // Any batch: 7 windows of random speech-like mel.
  auto random_mel = RandomValues(size_t(7 * kMelSize), 5, -4.f, 4.f);
  auto random_features = Encode(*session, random_mel, 7);
  EXPECT_EQ(random_features.size(), size_t(7 * kAudioFeatureSize));
}

// The chain the servers run: mel -> encoder -> 16 vectors tiled to [32,16,16] -> demo.
TEST_F(ModelgenTest, LouderMelGivesWiderDemoMouthEndToEnd) {
  const std::string encoder_path = PathFor("audio_encoder.onnx");
  const std::string demo_path = PathFor("demo.onnx");
  ASSERT_TRUE(WriteAudioEncoderModel(encoder_path).ok());
  ASSERT_TRUE(WriteDemoLipSyncModel(demo_path).ok());
  auto encoder = Load(encoder_path);
  auto demo = Load(demo_path);

  const std::vector<float> levels = {-4.f, -2.5f, -1.f, 1.f};  // silence .. loud speech
  const int64_t batch = int64_t(levels.size());
  auto mel = ConstantMels(levels);
  auto features = Encode(*encoder, mel, batch);
  std::vector<float> audio;
  for (int64_t b = 0; b < batch; ++b)
    for (int window = 0; window < 16; ++window)
      audio.insert(audio.end(), features.begin() + b * kAudioFeatureSize,
                   features.begin() + (b + 1) * kAudioFeatureSize);
  ASSERT_EQ(audio.size(), size_t(batch * kAudioSize));
  auto visual = SkinFaces(batch);
  auto out = RunLipSync(*demo, visual, audio, batch);
  std::vector<int> dark;
  for (int64_t b = 0; b < batch; ++b) {
    dark.push_back(DarkMouthPixels(out, b));
    std::printf("encoder+demo: mel %.1f -> mean feature %.3f -> %d dark mouth pixels\n",
                levels[size_t(b)],
                MeanOf(features.data() + b * kAudioFeatureSize, kAudioFeatureSize), dark.back());
  }
  EXPECT_EQ(dark[0], 0);
  for (size_t i = 1; i < dark.size(); ++i) EXPECT_GT(dark[i], dark[i - 1]) << "mel " << levels[i];
}

// ---------- bench ----------

TEST_F(ModelgenTest, BenchModelHasUnet328SizeAndGivesFiniteUnitRangeOutput) {
  const std::string path = PathFor("bench.onnx");
  ASSERT_TRUE(WriteBenchModel(path, 7).ok());
  auto cost = MeasureModelCost(path);
  ASSERT_TRUE(cost.ok()) << cost.status().ToString();
  std::printf("bench model: %.3f M parameters, %.3f GMAC per frame, %.1f MB\n",
              cost->parameters / 1e6, cost->macs_per_sample / 1e9,
              double(fs::file_size(path)) / 1e6);
  EXPECT_NEAR(double(cost->parameters), 12.2e6, 0.15 * 12.2e6);
  EXPECT_NEAR(double(cost->macs_per_sample), 4.9e9, 0.15 * 4.9e9);

  auto session = Load(path);
  ExpectLipSyncIo(*session);
  auto visual = RandomValues(size_t(2 * kVisualSize), 11, 0.f, 1.f);
  auto audio = RandomValues(size_t(2 * kAudioSize), 12, -1.f, 1.f);
  std::vector<float> visual1(visual.begin(), visual.begin() + kVisualSize);
  std::vector<float> audio1(audio.begin(), audio.begin() + kAudioSize);

  auto start = std::chrono::steady_clock::now();
  auto out1 = RunLipSync(*session, visual1, audio1, 1);
  double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("bench model: batch 1 CPU Run %.0f ms (first run, one-off)\n", ms);
  double lo = 1, hi = 0;
  for (float v : out1) {
    ASSERT_TRUE(std::isfinite(v) && v >= 0.f && v <= 1.f) << v;
    lo = std::min<double>(lo, v);
    hi = std::max<double>(hi, v);
  }
  std::printf("bench model: batch 1 output range [%.3f, %.3f]\n", lo, hi);
  EXPECT_LT(lo, hi) << "output should depend on the input, not be constant";

  // Batch 2: sample 0 is the batch-1 input, so its output must match.
  auto out2 = RunLipSync(*session, visual, audio, 2);
  ASSERT_EQ(out2.size(), size_t(2 * kOutputSize));
  for (int64_t i = 0; i < kOutputSize; i += 97) ASSERT_NEAR(out2[size_t(i)], out1[size_t(i)], 1e-4);
}

// One-off CPU timing, skipped unless MODELGEN_BENCH_RUNS=N is set (never asserted).
TEST_F(ModelgenTest, BenchModelCpuTiming) {
  const char* runs_env = std::getenv("MODELGEN_BENCH_RUNS");
  if (!runs_env) GTEST_SKIP() << "set MODELGEN_BENCH_RUNS=N to time the bench model";
  const int runs = std::max(1, std::atoi(runs_env));
  const std::string path = PathFor("bench.onnx");
  ASSERT_TRUE(WriteBenchModel(path, 7).ok());
  auto load_start = std::chrono::steady_clock::now();
  auto session = Load(path);
  std::printf(
      "bench model: session load %.0f ms\n",
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start)
          .count());
  for (int64_t batch : {1, 4}) {
    auto visual = RandomValues(size_t(batch * kVisualSize), 1, 0.f, 1.f);
    auto audio = RandomValues(size_t(batch * kAudioSize), 2, -1.f, 1.f);
    RunLipSync(*session, visual, audio, batch);  // warm-up
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < runs; ++i) RunLipSync(*session, visual, audio, batch);
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    std::printf("bench model: batch %ld, %d runs: %.1f ms per Run, %.1f ms per frame\n",
                long(batch), runs, ms / runs, ms / runs / double(batch));
  }
}

TEST_F(ModelgenTest, BenchModelIsDeterministicPerSeed) {
  ASSERT_TRUE(WriteBenchModel(PathFor("a.onnx"), 1).ok());
  ASSERT_TRUE(WriteBenchModel(PathFor("b.onnx"), 1).ok());
  auto read = [](const std::string& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  std::string a = read(PathFor("a.onnx"));
  EXPECT_GT(a.size(), 40u * 1000 * 1000);
  EXPECT_TRUE(a == read(PathFor("b.onnx")));
}

// ---------- cost measurement and errors ----------

TEST_F(ModelgenTest, MeasureModelCostCountsTheEncoderExactly) {
  const std::string path = PathFor("audio_encoder.onnx");
  ASSERT_TRUE(WriteAudioEncoderModel(path).ok());
  auto cost = MeasureModelCost(path);
  ASSERT_TRUE(cost.ok()) << cost.status().ToString();
  // Gemm 1280x512 plus its bias; the other float tensors are four scalars.
  EXPECT_EQ(cost->parameters, kMelSize * kAudioFeatureSize + kAudioFeatureSize + 4);
  EXPECT_EQ(cost->macs_per_sample, kMelSize * kAudioFeatureSize);
}

TEST_F(ModelgenTest, ErrorsAreValues) {
  EXPECT_EQ(MeasureModelCost(PathFor("missing.onnx")).status().code(), StatusCode::kNotFound);
  {
    std::ofstream garbage(PathFor("garbage.onnx"), std::ios::binary);
    garbage << "this is not a protobuf \xff\xff\xff";
  }
  EXPECT_EQ(MeasureModelCost(PathFor("garbage.onnx")).status().code(),
            StatusCode::kInvalidArgument);
  Status st = WriteIdentityModel(PathFor("no/such/dir/identity.onnx"));
  EXPECT_EQ(st.code(), StatusCode::kFailedPrecondition) << st.ToString();
  EXPECT_NE(st.message().find("no/such/dir"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace lipsync::modelgen
