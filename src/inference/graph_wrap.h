// Rewrites a lip-sync model (ONNX bytes) at load time so that ONNX Runtime itself
// turns the uint8 visual input into the model's float input and the float output into
// uint8, on whatever device runs the graph: on a GPU only uint8 crosses PCIe (4x fewer
// bytes each way) and the conversion loops leave the server's CPU.
//
// The wire format stays as it is (inference.proto VISUAL_UINT8 = round(x*255) bytes,
// UINT8 output = round(clamp(x,0,1)*255)): only where the conversion runs moves.
//
// The wrapped graph keeps the original interface and adds a uint8 one beside it:
//   inputs   input      float [B,C,H,W]  (as before)       } feed exactly one of the two;
//            input_u8   uint8 [B,C,H,W]  v -> v / 255.0f   } the other defaults to empty
//            audio      unchanged
//   outputs  output     float [B,3,OH,OW] (as before)
//            output_u8  uint8 [B,3,OH,OW] = Cast(Round(Clip(x*255, 0, 255))), NaN -> 0
// The two visual inputs meet in a Concat along the batch axis; the unfed one is an
// overridable initializer of batch 0 (ONNX IR >= 4 graph-input defaults), so one
// session serves both forms without a second copy of the weights. Round is ONNX's
// (half to even): at most one level from the CPU path's std::round, only at exact
// halves. ORT logs a warning per load that the two defaults "will not be treated as
// constant" (intended); a caller may lower that session's log severity to ERROR.
//
// Stateless functions; thread-safe. The input is untrusted (a tenant's file): parsing
// is bounded by the bytes given, nothing is allocated from declared sizes, and every
// refusal is FAILED_PRECONDITION naming what was found and what is needed, so the
// caller can keep the unwrapped model and convert on the CPU.
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace lipsync::inference {

inline constexpr const char* kVisualU8Name = "input_u8";
inline constexpr const char* kOutputU8Name = "output_u8";

// `model` is a serialized ONNX ModelProto whose graph has a float input "input" of
// shape [B,C,H,W] (B symbolic, C,H,W fixed) and a float output "output". `what` names
// the model in messages (e.g. its path). Returns the serialized wrapped model.
// Refused (FAILED_PRECONDITION): bytes that do not parse, default-domain opset < 11
// (Round and Clip's min/max inputs need 11) or IR version < 4, a fixed batch
// dimension, subgraphs (If/Loop/Scan), external tensor data, or names already taken.
Expected<std::string> WrapUint8Io(std::string_view model, const std::string& what);

}  // namespace lipsync::inference
