// The identity model: output = the unmasked face. Lets pipeline tests check pixel
// paths end to end with a model whose answer is known exactly.
#include "modelgen/lipsync_io.h"
#include "modelgen/model_builder.h"

namespace lipsync::modelgen {

Status WriteIdentityModel(const std::string& path) {
  GraphBuilder graph("lipsync_identity");
  DeclareLipSyncIo(graph);
  SliceChannels(graph, kVisualInputName, 0, 3, kFrameOutputName);
  return graph.Save(path);
}

}  // namespace lipsync::modelgen
