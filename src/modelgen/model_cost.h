// Static cost of an ONNX model file: parameters and multiply-accumulates per sample,
// computed from the file itself (ONNX shape inference fills in every tensor's shape),
// so it checks what a generator wrote rather than what it meant to write.
//
// Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace lipsync::modelgen {

struct ModelCost {
  int64_t parameters = 0;       // elements of all float initializers (weights + biases)
  int64_t macs_per_sample = 0;  // Conv, Gemm and MatMul multiply-accumulates at batch 1
};

// NOT_FOUND if the file is missing; INVALID_ARGUMENT if it is not a parseable ONNX
// model or a Conv/Gemm/MatMul output shape cannot be inferred (all dims but the batch
// must be known).
Expected<ModelCost> MeasureModelCost(const std::string& path);

}  // namespace lipsync::modelgen
