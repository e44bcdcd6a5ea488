// The I/O declarations shared by the three lip-sync graphs (see model_builder.h), so
// the demo, bench and identity models cannot drift apart. Internal to modelgen.
#pragma once

#include <string>

#include "modelgen/graph_builder.h"

namespace lipsync::modelgen {

inline constexpr const char* kVisualInputName = "input";
inline constexpr const char* kAudioInputName = "audio";
inline constexpr const char* kFrameOutputName = "output";

// Declares `input`, `audio` and `output` on `graph`.
void DeclareLipSyncIo(GraphBuilder& graph);

// Adds a Slice of channels [begin, end) of a [B,C,H,W] tensor; returns its name.
std::string SliceChannels(GraphBuilder& graph, const std::string& tensor, int64_t begin,
                          int64_t end, const std::string& output_name = "");

}  // namespace lipsync::modelgen
