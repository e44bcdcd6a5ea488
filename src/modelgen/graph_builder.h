// GraphBuilder: a small convenience layer over the ONNX protobuf classes for the
// model generators in this folder. It owns one onnx::ModelProto under construction
// (opset 17, ir_version 8), hands out unique tensor names, stores weights as raw_data
// (one memcpy per tensor, so a 46 MB model writes in well under a second) and
// validates the result with onnx::checker before writing it.
//
// Not thread-safe: one builder per model, used by one thread. Used by the generators
// here and by tests elsewhere that need small custom models (tests/inference).
#pragma once

#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace lipsync::modelgen {

inline constexpr int64_t kOpsetVersion = 17;  // newest opset both libonnx 1.12 and ORT know
inline constexpr int64_t kIrVersion = 8;
// Symbolic batch dimension of every generated model's inputs and outputs.
inline constexpr const char* kBatchDim = "B";

onnx::AttributeProto IntAttr(const std::string& name, int64_t value);
onnx::AttributeProto IntsAttr(const std::string& name, const std::vector<int64_t>& values);
onnx::AttributeProto FloatAttr(const std::string& name, float value);
onnx::AttributeProto StringAttr(const std::string& name, const std::string& value);

class GraphBuilder {
 public:
  explicit GraphBuilder(const std::string& graph_name);

  // Declares a float32 graph input/output of shape [B, per_sample_dims...].
  void AddBatchedInput(const std::string& name, const std::vector<int64_t>& per_sample_dims);
  void AddBatchedOutput(const std::string& name, const std::vector<int64_t>& per_sample_dims);

  // Adds a float32 / int64 constant tensor and returns its (unique) name.
  std::string AddFloatTensor(const std::string& name_hint, const std::vector<int64_t>& shape,
                             const std::vector<float>& values);
  std::string AddInt64Tensor(const std::string& name_hint, const std::vector<int64_t>& shape,
                             const std::vector<int64_t>& values);
  std::string AddScalar(const std::string& name_hint, float value) {
    return AddFloatTensor(name_hint, {}, {value});
  }

  // Appends a node with one output and returns the output's name: `output_name` when
  // given (used for graph outputs), otherwise a fresh name derived from the op type.
  // An empty string in `inputs` marks an omitted optional input.
  std::string AddNode(const std::string& op_type, const std::vector<std::string>& inputs,
                      const std::vector<onnx::AttributeProto>& attributes = {},
                      const std::string& output_name = "");

  const onnx::ModelProto& model() const { return model_; }

  // Validates the model with onnx::checker (INTERNAL with the checker's message when
  // the graph is malformed: a bug in the generator) and writes it atomically (temp
  // file + rename). FAILED_PRECONDITION naming the path if it cannot be written.
  Status Save(const std::string& path) const;

 private:
  std::string UniqueName(const std::string& hint);

  onnx::ModelProto model_;
  onnx::GraphProto* graph_;
  int64_t next_id_ = 0;
};

// Deterministic N(0, 1) samples from a 64-bit seed, identical on every platform and
// standard library (splitmix64 + Box-Muller), so a seed names one exact model.
class SeededNormal {
 public:
  explicit SeededNormal(uint64_t seed) : state_(seed) {}
  float Next();
  // Uniform in [0, 1).
  double NextUniform();

 private:
  uint64_t NextBits();
  uint64_t state_;
  bool has_spare_ = false;
  float spare_ = 0.f;
};

}  // namespace lipsync::modelgen
