// The uint8-wrapped graph (graph_wrap.h) on the CPU provider against the float model:
// within one level, out-of-range values clipped (not wrapped), NaN -> 0, the float
// interface unchanged, and refusals for what it cannot wrap.
#include "inference/graph_wrap.h"

#include <gtest/gtest.h>
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <random>

#include "inference/ort_runtime.h"
#include "modelgen/graph_builder.h"
#include "modelgen/lipsync_io.h"
#include "modelgen/model_builder.h"

namespace lipsync::inference {
namespace {

using modelgen::GraphBuilder;
constexpr int kSize = 16;

void DeclareIo(GraphBuilder& graph, int size) {
  graph.AddBatchedInput("input", {6, size, size});
  graph.AddBatchedInput("audio", {32, 16, 16});
  graph.AddBatchedOutput("output", {3, size, size});
}

// output = input[:,0:3] * scale + offset (plus 0 * mean(audio), so audio is used).
std::string AffineModel(float scale, float offset) {
  GraphBuilder graph("affine");
  DeclareIo(graph, kSize);
  std::string face = modelgen::SliceChannels(graph, "input", 0, 3);
  std::string scaled = graph.AddNode("Mul", {face, graph.AddScalar("scale", scale)});
  std::string audio = graph.AddNode("ReduceMean", {"audio"}, {modelgen::IntAttr("keepdims", 0)});
  std::string zero = graph.AddNode("Mul", {audio, graph.AddScalar("zero", 0.f)});
  std::string shifted = graph.AddNode("Add", {scaled, graph.AddScalar("offset", offset)});
  graph.AddNode("Add", {shifted, zero}, {}, "output");
  return graph.model().SerializeAsString();
}

// output = sqrt(input[:,0:3] - 2): NaN everywhere for inputs in [0,1].
std::string NanModel() {
  GraphBuilder graph("nan");
  DeclareIo(graph, kSize);
  std::string face = modelgen::SliceChannels(graph, "input", 0, 3);
  std::string negative = graph.AddNode("Sub", {face, graph.AddScalar("two", 2.f)});
  graph.AddNode("Sqrt", {negative}, {}, "output");
  return graph.model().SerializeAsString();
}

class GraphWrapTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { ASSERT_TRUE(OrtRuntime::Initialize().ok()); }

  static std::unique_ptr<Ort::Session> Session(const std::string& bytes) {
    OrtRuntime* runtime = OrtRuntime::Get();
    Ort::SessionOptions options = runtime->MakeSessionOptions();
    return std::make_unique<Ort::Session>(runtime->env(), bytes.data(), bytes.size(), options);
  }

  // Runs `session` on one input (float or uint8 visual) and returns the named output's
  // bytes.
  template <typename T>
  static std::vector<uint8_t> Run(Ort::Session& session, const char* visual_name,
                                  std::vector<T>& visual, int batch, int size,
                                  const char* output_name) {
    Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    std::array<int64_t, 4> vdims{batch, 6, size, size};
    std::array<int64_t, 4> adims{batch, 32, 16, 16};
    std::vector<float> audio(static_cast<size_t>(batch) * 32 * 16 * 16, 0.25f);
    std::array<Ort::Value, 2> inputs{
        Ort::Value::CreateTensor<T>(mem, visual.data(), visual.size(), vdims.data(), 4),
        Ort::Value::CreateTensor<float>(mem, audio.data(), audio.size(), adims.data(), 4)};
    const char* input_names[] = {visual_name, "audio"};
    auto outputs =
        session.Run(Ort::RunOptions{nullptr}, input_names, inputs.data(), 2, &output_name, 1);
    auto info = outputs[0].GetTensorTypeAndShapeInfo();
    const size_t elem = info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 ? 1 : 4;
    const auto* data = static_cast<const uint8_t*>(outputs[0].GetTensorRawData());
    return std::vector<uint8_t>(data, data + info.GetElementCount() * elem);
  }

  static std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int> dist(0, 255);
    std::vector<uint8_t> v(n);
    for (auto& x : v) x = static_cast<uint8_t>(dist(rng));
    return v;
  }

  // The CPU path today: v/255.0f in, round(clamp(x,0,1)*255) out (onnx_model.cc).
  static std::vector<uint8_t> FloatReference(const std::string& model, std::vector<uint8_t>& u8,
                                             int batch, int size) {
    std::vector<float> visual(u8.size());
    for (size_t i = 0; i < u8.size(); ++i) visual[i] = static_cast<float>(u8[i]) / 255.0f;
    auto session = Session(model);
    auto bytes = Run(*session, "input", visual, batch, size, "output");
    std::vector<uint8_t> out(bytes.size() / 4);
    for (size_t i = 0; i < out.size(); ++i) {
      float x;
      std::memcpy(&x, bytes.data() + i * 4, 4);
      float v = x > 0.f ? (x < 1.f ? x : 1.f) : 0.f;
      out[i] = static_cast<uint8_t>(std::round(v * 255.f));
    }
    return out;
  }

  struct Compared {
    std::vector<uint8_t> input, got, want;  // got: wrapped graph; want: float model + CPU
  };
  // Random uint8 frames through the wrapped graph (uint8 in and out) and through the
  // float model with today's CPU conversions; every value within one level.
  static Compared CompareWrapped(const std::string& model, int batch, int size, uint32_t seed) {
    Compared c;
    auto wrapped = WrapUint8Io(model, "model");
    EXPECT_TRUE(wrapped.ok()) << wrapped.status().ToString();
    if (!wrapped.ok()) return c;
    c.input = RandomBytes(static_cast<size_t>(batch) * 6 * size * size, seed);
    c.want = FloatReference(model, c.input, batch, size);
    auto session = Session(*wrapped);
    c.got = Run(*session, kVisualU8Name, c.input, batch, size, kOutputU8Name);
    EXPECT_EQ(c.got.size(), c.want.size());
    for (size_t i = 0; i < c.got.size() && i < c.want.size(); ++i) {
      if (std::abs(int{c.got[i]} - int{c.want[i]}) > 1) {
        ADD_FAILURE() << "value " << i << ": " << int{c.got[i]} << " vs " << int{c.want[i]};
        break;
      }
    }
    return c;
  }
};

TEST_F(GraphWrapTest, Uint8InAndOutMatchTheFloatModelWithinOneLevel) {
  Compared c = CompareWrapped(AffineModel(0.8f, 0.1f), 3, kSize, 1);
  ASSERT_FALSE(c.got.empty());
  size_t exact = 0;
  for (size_t i = 0; i < c.got.size(); ++i) exact += c.got[i] == c.want[i];
  // Round-half-to-even differs from std::round only at exact halves.
  EXPECT_GT(exact, c.got.size() * 95 / 100);
}

TEST_F(GraphWrapTest, OutOfRangeValuesAreClippedNotWrapped) {
  // Outputs span [-1.5, 2.5]: both ends leave [0,1] by far.
  Compared c = CompareWrapped(AffineModel(4.f, -1.5f), 2, kSize, 2);
  ASSERT_FALSE(c.got.empty());
  const auto& got = c.got;
  const auto& u8 = c.input;
  size_t low = 0, high = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    // The pre-clip value from the input: face channels are the first 3 of 6.
    const size_t frame = i / (3 * kSize * kSize), rest = i % (3 * kSize * kSize);
    const float x = u8[frame * 6 * kSize * kSize + rest] / 255.0f * 4.f - 1.5f;
    if (x < -0.01f) {
      ++low;
      EXPECT_EQ(got[i], 0) << "value " << i << " (" << x << ") must clip to 0";
    } else if (x > 1.01f) {
      ++high;
      EXPECT_EQ(got[i], 255) << "value " << i << " (" << x << ") must clip to 255";
    }
  }
  EXPECT_GT(low, got.size() / 5);
  EXPECT_GT(high, got.size() / 5);
}

TEST_F(GraphWrapTest, NanBecomesZero) {
  auto wrapped = WrapUint8Io(NanModel(), "nan");
  ASSERT_TRUE(wrapped.ok()) << wrapped.status().ToString();
  auto u8 = RandomBytes(6 * kSize * kSize, 3);
  auto session = Session(*wrapped);
  auto got = Run(*session, kVisualU8Name, u8, 1, kSize, kOutputU8Name);
  ASSERT_EQ(got.size(), 3u * kSize * kSize);
  for (uint8_t v : got) ASSERT_EQ(v, 0);
}

TEST_F(GraphWrapTest, FloatInterfaceIsUnchanged) {
  const std::string model = AffineModel(0.7f, 0.05f);
  auto wrapped = WrapUint8Io(model, "affine");
  ASSERT_TRUE(wrapped.ok()) << wrapped.status().ToString();
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> dist(0.f, 1.f);
  std::vector<float> visual(2 * 6 * kSize * kSize);
  for (auto& v : visual) v = dist(rng);
  auto original = Session(model);
  auto session = Session(*wrapped);
  auto want = Run(*original, "input", visual, 2, kSize, "output");
  auto got = Run(*session, "input", visual, 2, kSize, "output");
  EXPECT_EQ(got, want);  // bit-identical floats
}

TEST_F(GraphWrapTest, IoBindingReusesCallerBuffersForUint8InAndOut) {
  // The per-worker path: buffers allocated once (pinned host memory on a GPU, plain
  // memory here), bound once, refilled and rerun; ORT writes into the bound output.
  const std::string model = AffineModel(0.9f, 0.02f);
  auto wrapped = WrapUint8Io(model, "affine");
  ASSERT_TRUE(wrapped.ok()) << wrapped.status().ToString();
  auto session = Session(*wrapped);
  const int batch = 2;
  std::vector<uint8_t> visual(static_cast<size_t>(batch) * 6 * kSize * kSize);
  std::vector<float> audio(static_cast<size_t>(batch) * 32 * 16 * 16, 0.5f);
  std::vector<uint8_t> output(static_cast<size_t>(batch) * 3 * kSize * kSize, 7);
  Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::array<int64_t, 4> vdims{batch, 6, kSize, kSize}, adims{batch, 32, 16, 16},
      odims{batch, 3, kSize, kSize};
  Ort::IoBinding binding(*session);
  binding.BindInput(kVisualU8Name, Ort::Value::CreateTensor<uint8_t>(
                                       mem, visual.data(), visual.size(), vdims.data(), 4));
  binding.BindInput(
      "audio", Ort::Value::CreateTensor<float>(mem, audio.data(), audio.size(), adims.data(), 4));
  binding.BindOutput(kOutputU8Name, Ort::Value::CreateTensor<uint8_t>(
                                        mem, output.data(), output.size(), odims.data(), 4));
  for (uint32_t round = 0; round < 3; ++round) {
    auto fresh = RandomBytes(visual.size(), 10 + round);
    std::copy(fresh.begin(), fresh.end(), visual.begin());
    session->Run(Ort::RunOptions{nullptr}, binding);
    binding.SynchronizeOutputs();
    auto want = Run(*session, kVisualU8Name, fresh, batch, kSize, kOutputU8Name);
    ASSERT_EQ(output, want) << "round " << round;
  }
}

TEST_F(GraphWrapTest, DemoLipSyncModelAtFullSize) {
  // The generated demo network (320x320, convolutions), batch 1.
  const std::string path = ::testing::TempDir() + "graph_wrap_demo.onnx";
  ASSERT_TRUE(modelgen::WriteDemoLipSyncModel(path).ok());
  std::string model;
  {
    FILE* f = std::fopen(path.c_str(), "rb");
    ASSERT_NE(f, nullptr);
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) model.append(buf, n);
    std::fclose(f);
    std::remove(path.c_str());
  }
  Compared c = CompareWrapped(model, 1, 320, 5);
  EXPECT_EQ(c.got.size(), 3u * 320 * 320);
}

TEST_F(GraphWrapTest, RefusesWhatItCannotWrap) {
  auto garbage = WrapUint8Io("not an onnx model at all", "junk");
  EXPECT_EQ(garbage.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(garbage.status().message().find("'junk'"), std::string::npos);

  GraphBuilder wrong("wrong_names");
  wrong.AddBatchedInput("x", {6, kSize, kSize});
  wrong.AddBatchedOutput("output", {3, kSize, kSize});
  modelgen::SliceChannels(wrong, "x", 0, 3, "output");
  auto names = WrapUint8Io(wrong.model().SerializeAsString(), "wrong");
  EXPECT_EQ(names.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(names.status().message().find("'input'"), std::string::npos);

  onnx::ModelProto old_opset;
  ASSERT_TRUE(old_opset.ParseFromString(AffineModel(1.f, 0.f)));
  old_opset.mutable_opset_import(0)->set_version(10);
  auto opset = WrapUint8Io(old_opset.SerializeAsString(), "old");
  EXPECT_EQ(opset.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(opset.status().message().find("opset 10"), std::string::npos);

  onnx::ModelProto fixed;
  ASSERT_TRUE(fixed.ParseFromString(AffineModel(1.f, 0.f)));
  fixed.mutable_graph()
      ->mutable_input(0)
      ->mutable_type()
      ->mutable_tensor_type()
      ->mutable_shape()
      ->mutable_dim(0)
      ->set_dim_value(4);
  auto batch = WrapUint8Io(fixed.SerializeAsString(), "fixed");
  EXPECT_EQ(batch.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(batch.status().message().find("symbolic batch"), std::string::npos);

  // Wrapping twice: the uint8 names are taken.
  auto once = WrapUint8Io(AffineModel(1.f, 0.f), "once");
  ASSERT_TRUE(once.ok());
  auto twice = WrapUint8Io(*once, "twice");
  EXPECT_EQ(twice.status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace lipsync::inference
