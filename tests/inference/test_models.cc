#include "inference/test_models.h"

#include <fstream>
#include <vector>

#include "modelgen/graph_builder.h"
#include "modelgen/lipsync_io.h"

namespace lipsync::inference::testing {
namespace {
using modelgen::GraphBuilder;

void DeclareIo(GraphBuilder& graph, int size, const char* visual_name) {
  graph.AddBatchedInput(visual_name, {6, size, size});
  graph.AddBatchedInput("audio", {32, 16, 16});
  graph.AddBatchedOutput("output", {3, size, size});
}
}  // namespace

Status WriteScaledModel(const std::string& path, int size, float scale) {
  GraphBuilder graph("test_scaled");
  DeclareIo(graph, size, "input");
  if (scale == 1.f) {
    modelgen::SliceChannels(graph, "input", 0, 3, "output");
  } else {
    std::string face = modelgen::SliceChannels(graph, "input", 0, 3);
    graph.AddNode("Mul", {face, graph.AddScalar("scale", scale)}, {}, "output");
  }
  return graph.Save(path);
}

Status WriteHeavyIdentityModel(const std::string& path, int size, int64_t weight_floats) {
  GraphBuilder graph("test_heavy_identity");
  DeclareIo(graph, size, "input");
  std::string weights = graph.AddFloatTensor(
      "weights", {weight_floats}, std::vector<float>(static_cast<size_t>(weight_floats), 0.f));
  // Indices come from a runtime input, so ORT cannot fold the weights away.
  std::string indices = graph.AddNode("Cast", {"audio"}, {modelgen::IntAttr("to", 7)});
  std::string gathered = graph.AddNode("Gather", {weights, indices});
  std::string mean =
      graph.AddNode("ReduceMean", {gathered},
                    {modelgen::IntsAttr("axes", {1, 2, 3}), modelgen::IntAttr("keepdims", 1)});
  std::string face = modelgen::SliceChannels(graph, "input", 0, 3);
  graph.AddNode("Add", {face, mean}, {}, "output");
  return graph.Save(path);
}

Status WriteWrongNamesModel(const std::string& path) {
  GraphBuilder graph("test_wrong_names");
  DeclareIo(graph, 16, "x");
  modelgen::SliceChannels(graph, "x", 0, 3, "output");
  return graph.Save(path);
}

Status WriteNamedInputModel(const std::string& path, const std::string& name) {
  GraphBuilder graph("test_named_input");
  DeclareIo(graph, 16, name.c_str());
  modelgen::SliceChannels(graph, name, 0, 3, "output");
  return graph.Save(path);
}

Status WriteCorruptModel(const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << "this is not an ONNX protobuf \x01\x02\x03 garbage";
  return out ? Status::Ok() : Status::FailedPrecondition("cannot write " + path);
}

}  // namespace lipsync::inference::testing
