// Finite-value checks on client tensors (float32 little-endian bytes as they arrive
// in a request), used by InferenceServer's request validation: a NaN or infinity is
// rejected naming the tensor and the frame before it reaches a model.
//
// One pass over the bytes, branch-free per value (the exponent bits are tested with
// integer ops, so the loop vectorizes); any alignment. Thread-safe (pure functions).
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#include "common/status.h"

namespace lipsync::inference {

struct NonFinite {
  size_t frame = 0;  // frame index in the tensor
  size_t value = 0;  // value index inside that frame
  bool nan = false;  // false: +-infinity
};

// The first NaN/Inf in `bytes` (float32 LE, frames of `floats_per_frame` values; a
// trailing partial frame is checked too). nullopt when every value is finite.
std::optional<NonFinite> FindNonFinite(std::string_view bytes, size_t floats_per_frame);

// INVALID_ARGUMENT naming `tensor` and the frame when FindNonFinite finds one.
// `shared_tensor`: one tensor used for every frame (says so instead of a frame index).
Status CheckFinite(std::string_view bytes, size_t floats_per_frame, const char* tensor,
                   bool shared_tensor = false);

}  // namespace lipsync::inference
