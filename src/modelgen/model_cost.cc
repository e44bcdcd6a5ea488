#include "modelgen/model_cost.h"

#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>

#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <unordered_map>
#include <vector>

namespace lipsync::modelgen {
namespace {

using Shape = std::vector<int64_t>;  // -1 for an unknown or symbolic dimension

Shape ShapeOf(const onnx::ValueInfoProto& info) {
  Shape shape;
  for (const auto& dim : info.type().tensor_type().shape().dim()) {
    shape.push_back(dim.has_dim_value() ? dim.dim_value() : -1);
  }
  return shape;
}

// Elements per sample: the product of every dimension after the batch.
std::optional<int64_t> PerSampleElements(const Shape& shape) {
  if (shape.empty()) return std::nullopt;
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) {
    if (shape[i] < 0) return std::nullopt;
    n *= shape[i];
  }
  return n;
}

std::optional<int64_t> AttrInt(const onnx::NodeProto& node, const std::string& name) {
  for (const auto& a : node.attribute())
    if (a.name() == name) return a.i();
  return std::nullopt;
}

}  // namespace

Expected<ModelCost> MeasureModelCost(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return Status::NotFound("model file '" + path + "' does not exist (expected an .onnx file)");
  }
  onnx::ModelProto model;
  {
    std::ifstream in(path, std::ios::binary);
    if (!in || !model.ParseFromIstream(&in)) {
      return Status::InvalidArgument("'" + path +
                                     "' is not a parseable ONNX model (expected a ModelProto)");
    }
  }
  try {
    onnx::shape_inference::InferShapes(model);
  } catch (const std::exception& e) {
    return Status::InvalidArgument("shape inference failed on '" + path + "': " + e.what());
  }

  const auto& graph = model.graph();
  std::unordered_map<std::string, Shape> shapes;
  ModelCost cost;
  for (const auto& init : graph.initializer()) {
    Shape dims(init.dims().begin(), init.dims().end());
    if (init.data_type() == onnx::TensorProto::FLOAT) {
      int64_t n = 1;
      for (int64_t d : dims) n *= d;
      cost.parameters += n;
    }
    shapes[init.name()] = std::move(dims);
  }
  for (const auto& v : graph.input()) shapes.emplace(v.name(), ShapeOf(v));
  for (const auto& v : graph.value_info()) shapes.emplace(v.name(), ShapeOf(v));
  for (const auto& v : graph.output()) shapes.emplace(v.name(), ShapeOf(v));

  for (const auto& node : graph.node()) {
    const std::string& op = node.op_type();
    if (op != "Conv" && op != "Gemm" && op != "MatMul") continue;
    auto unknown = [&](const std::string& what) {
      return Status::InvalidArgument("cannot size " + op + " node '" + node.name() + "' in '" +
                                     path + "': " + what +
                                     " unknown (expected static shapes except the batch)");
    };
    if (node.input_size() < 2 || node.output_size() < 1) return unknown("inputs");
    auto out_it = shapes.find(node.output(0));
    auto w_it = shapes.find(node.input(1));
    if (out_it == shapes.end()) return unknown("output shape");
    if (w_it == shapes.end() || w_it->second.size() < 2) return unknown("weight shape");
    auto out_elements = PerSampleElements(out_it->second);
    if (!out_elements) return unknown("output shape");
    const Shape& w = w_it->second;
    int64_t reduction = 1;  // multiply-accumulates per output element
    if (op == "Conv") {
      for (size_t i = 1; i < w.size(); ++i) reduction *= w[i];
    } else if (op == "Gemm") {
      reduction = AttrInt(node, "transB").value_or(0) ? w[1] : w[0];
    } else {
      reduction = w[w.size() - 2];
    }
    if (reduction < 0) return unknown("weight shape");
    cost.macs_per_sample += *out_elements * reduction;
  }
  return cost;
}

}  // namespace lipsync::modelgen
