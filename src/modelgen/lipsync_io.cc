#include "modelgen/lipsync_io.h"

#include "modelgen/model_builder.h"

namespace lipsync::modelgen {

void DeclareLipSyncIo(GraphBuilder& graph) {
  graph.AddBatchedInput(kVisualInputName, {kVisualChannels, kFrameSize, kFrameSize});
  graph.AddBatchedInput(kAudioInputName, {kAudioChannels, kAudioHeight, kAudioWidth});
  graph.AddBatchedOutput(kFrameOutputName, {3, kFrameSize, kFrameSize});
}

std::string SliceChannels(GraphBuilder& graph, const std::string& tensor, int64_t begin,
                          int64_t end, const std::string& output_name) {
  std::string starts = graph.AddInt64Tensor("slice_starts", {1}, {begin});
  std::string ends = graph.AddInt64Tensor("slice_ends", {1}, {end});
  std::string axes = graph.AddInt64Tensor("slice_axes", {1}, {1});
  return graph.AddNode("Slice", {tensor, starts, ends, axes}, {}, output_name);
}

}  // namespace lipsync::modelgen
