// The demo audio encoder: a fixed positive linear map of the mel window, so its
// output tracks loudness (what the demo lip-sync model turns into mouth opening).
#include <vector>

#include "modelgen/graph_builder.h"
#include "modelgen/model_builder.h"

namespace lipsync::modelgen {
namespace {
constexpr uint64_t kEncoderSeed = 0x6175646965ull;  // fixed: one encoder for every avatar
// A window of full-scale mel (+4 everywhere) maps to features of about this value.
constexpr float kFullScaleFeature = 1.0f;
// Mel windows a hair above the silence floor (-4) still map to exactly 0, so room
// noise after normalisation keeps the demo mouth shut.
constexpr float kNoiseFloorFeature = 0.02f;
}  // namespace

Status WriteAudioEncoderModel(const std::string& path) {
  GraphBuilder graph("lipsync_audio_encoder");
  graph.AddBatchedInput("mel", {1, kMelBands, kMelSteps});
  graph.AddBatchedOutput("features", {kAudioFeatureSize});

  constexpr int kInputs = kMelBands * kMelSteps;
  SeededNormal rng(kEncoderSeed);
  std::vector<float> weights(size_t(kInputs) * kAudioFeatureSize);
  // Uniform in [0.5, 1.5) x mean weight: every weight positive, so each feature is
  // monotonic in each mel value; the mean makes full scale land at kFullScaleFeature.
  const double mean_weight = kFullScaleFeature / kInputs;
  for (float& w : weights) w = float(mean_weight * (0.5 + rng.NextUniform()));
  std::vector<float> bias(kAudioFeatureSize, -kNoiseFloorFeature);

  // (mel + 4) / 8 maps the normalised range onto [0,1]; clipping keeps out-of-range
  // input (louder than the normaliser allows) from inverting the monotonicity.
  std::string level = graph.AddNode("Add", {"mel", graph.AddScalar("mel_offset", 4.0f)});
  level = graph.AddNode("Mul", {level, graph.AddScalar("mel_scale", 1.0f / 8.0f)});
  level = graph.AddNode(
      "Clip", {level, graph.AddScalar("clip_min", 0.0f), graph.AddScalar("clip_max", 1.0f)});
  std::string flat = graph.AddNode("Flatten", {level}, {IntAttr("axis", 1)});
  std::string w = graph.AddFloatTensor("projection", {kInputs, kAudioFeatureSize}, weights);
  std::string b = graph.AddFloatTensor("noise_floor", {kAudioFeatureSize}, bias);
  std::string projected = graph.AddNode("Gemm", {flat, w, b});
  graph.AddNode("Relu", {projected}, {}, "features");
  return graph.Save(path);
}

}  // namespace lipsync::modelgen
