// The demo lip-sync model: no learned weights, just a mouth whose opening follows the
// audio energy, drawn over the face with soft edges. It makes the whole pipeline's
// behaviour visible (talking -> moving mouth, silence -> closed mouth) at a cost of a
// few elementwise ops per pixel.
#include <algorithm>
#include <cmath>
#include <vector>

#include "modelgen/lipsync_io.h"
#include "modelgen/model_builder.h"

namespace lipsync::modelgen {
namespace {

// Audio energy (mean square of the features) at which the mouth is half open. The
// demo audio encoder gives features around 0.3-0.6 for speech, i.e. energy 0.1-0.4,
// so speech spans roughly half to fully open.
constexpr float kEnergyHalfOpen = 0.1f;
// Width of the sigmoid edge, in pixels.
constexpr float kEdgeSoftness = 0.8f;
// The mask is shifted inward by this many pixels so a closed mouth (zero opening)
// leaves at most sigmoid(-2.5) ~ 8% of a lip line instead of a half-dark row.
constexpr float kClosedMargin = 2.0f;
// The dark interior is this fraction of the lips' height.
constexpr float kInteriorFraction = 0.7f;
// BGR, in [0,1]: lips a muted red, the interior nearly black with a red cast.
constexpr float kLipColor[3] = {0.16f, 0.14f, 0.50f};
constexpr float kInteriorColor[3] = {0.04f, 0.03f, 0.12f};

}  // namespace

Status WriteDemoLipSyncModel(const std::string& path) {
  GraphBuilder graph("lipsync_demo");
  DeclareLipSyncIo(graph);

  // opening = e / (e + k) in [0, 1), half_height = opening * max half-height (pixels).
  std::string squared = graph.AddNode("Mul", {kAudioInputName, kAudioInputName});
  std::string energy =
      graph.AddNode("ReduceMean", {squared}, {IntsAttr("axes", {1, 2, 3}), IntAttr("keepdims", 1)});
  std::string denominator =
      graph.AddNode("Add", {energy, graph.AddScalar("energy_half_open", kEnergyHalfOpen)});
  std::string opening = graph.AddNode("Div", {energy, denominator});
  std::string half_height = graph.AddNode(
      "Mul", {opening, graph.AddScalar("max_half_height", float(kMouthMaxHalfHeight))});

  // Per column: the ellipse's half-height at unit opening, sqrt(1 - (dx/half_width)^2),
  // pre-divided by the softness. Per pixel: the distance from the mouth's centre line
  // plus the closed margin, plus the distance beyond the mouth's corners (so the faint
  // closed-mouth line stops at the corners instead of crossing the face), likewise.
  // Then the signed distance to the ellipse edge, in softness units, is
  // half_height * column - distance (broadcast to [B,1,H,W]).
  std::vector<float> column(kFrameSize), interior_column(kFrameSize);
  std::vector<float> row_distance(kFrameSize), column_distance(kFrameSize);
  for (int x = 0; x < kFrameSize; ++x) {
    float dx = float(x - kMouthCenterX) / float(kMouthHalfWidth);
    column[x] = std::sqrt(std::max(0.0f, 1.0f - dx * dx)) / kEdgeSoftness;
    interior_column[x] = column[x] * kInteriorFraction;
    column_distance[x] =
        std::max(0.0f, std::fabs(float(x - kMouthCenterX)) - kMouthHalfWidth) / kEdgeSoftness;
  }
  for (int y = 0; y < kFrameSize; ++y) {
    row_distance[y] = (std::fabs(float(y - kMouthCenterY)) + kClosedMargin) / kEdgeSoftness;
  }
  std::string column_map = graph.AddFloatTensor("column_profile", {1, 1, 1, kFrameSize}, column);
  std::string interior_column_map =
      graph.AddFloatTensor("interior_column_profile", {1, 1, 1, kFrameSize}, interior_column);
  // [1,1,H,1] + [1,1,1,W]: constant, so ONNX Runtime folds it into one map at load.
  std::string distance_map = graph.AddNode(
      "Add", {graph.AddFloatTensor("row_distance", {1, 1, kFrameSize, 1}, row_distance),
              graph.AddFloatTensor("corner_distance", {1, 1, 1, kFrameSize}, column_distance)});

  std::string mouth_mask = graph.AddNode(
      "Sigmoid",
      {graph.AddNode("Sub", {graph.AddNode("Mul", {half_height, column_map}), distance_map})});
  std::string interior_mask = graph.AddNode(
      "Sigmoid", {graph.AddNode("Sub", {graph.AddNode("Mul", {half_height, interior_column_map}),
                                        distance_map})});

  // mouth colour = lips, blending to the interior colour inside the inner ellipse.
  std::vector<float> lip(kLipColor, kLipColor + 3), lip_to_interior(3);
  for (int c = 0; c < 3; ++c) lip_to_interior[c] = kInteriorColor[c] - kLipColor[c];
  std::string mouth_color = graph.AddNode(
      "Add",
      {graph.AddNode("Mul", {interior_mask, graph.AddFloatTensor("lip_to_interior", {1, 3, 1, 1},
                                                                 lip_to_interior)}),
       graph.AddFloatTensor("lip_color", {1, 3, 1, 1}, lip)});

  // output = face + mouth_mask * (mouth_color - face), clipped so out-of-range faces
  // still give the post-sigmoid range every real model has.
  std::string face = SliceChannels(graph, kVisualInputName, 0, 3);
  std::string blended = graph.AddNode(
      "Add", {face, graph.AddNode("Mul", {mouth_mask, graph.AddNode("Sub", {mouth_color, face})})});
  graph.AddNode("Clip",
                {blended, graph.AddScalar("clip_min", 0.0f), graph.AddScalar("clip_max", 1.0f)}, {},
                kFrameOutputName);
  return graph.Save(path);
}

}  // namespace lipsync::modelgen
