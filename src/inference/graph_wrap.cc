#include "inference/graph_wrap.h"

#include <onnx/onnx_pb.h>

#include <climits>
#include <set>
#include <vector>

namespace lipsync::inference {
namespace {

constexpr const char* kVisualName = "input";
constexpr const char* kOutputName = "output";
constexpr int64_t kMinOpset = 11;     // Round; Clip with min/max as inputs
constexpr int64_t kMinIrVersion = 4;  // graph inputs with initializer defaults

Status Refuse(const std::string& what, const std::string& why) {
  return Status::FailedPrecondition("cannot wrap model '" + what + "' for uint8 input/output on " +
                                    "the device: " + why);
}

const onnx::ValueInfoProto* FindValue(
    const google::protobuf::RepeatedPtrField<onnx::ValueInfoProto>& list, const std::string& name) {
  for (const auto& v : list)
    if (v.name() == name) return &v;
  return nullptr;
}

bool IsFloatTensor(const onnx::ValueInfoProto& v) {
  return v.type().has_tensor_type() &&
         v.type().tensor_type().elem_type() == onnx::TensorProto::FLOAT;
}

bool HasSubgraph(const onnx::NodeProto& node) {
  for (const auto& a : node.attribute()) {
    if (a.has_g() || a.graphs_size() > 0 || a.type() == onnx::AttributeProto::GRAPH ||
        a.type() == onnx::AttributeProto::GRAPHS) {
      return true;
    }
  }
  return false;
}

onnx::AttributeProto IntAttribute(const char* name, int64_t value) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(value);
  return a;
}

onnx::NodeProto MakeNode(const std::string& op, const std::vector<std::string>& inputs,
                         const std::string& output,
                         const std::vector<onnx::AttributeProto>& attributes = {}) {
  onnx::NodeProto node;
  node.set_op_type(op);
  node.set_name("lipsync_wrap/" + output);
  for (const auto& in : inputs) node.add_input(in);
  node.add_output(output);
  for (const auto& a : attributes) *node.add_attribute() = a;
  return node;
}

// Every name the graph uses (values, initializers, nodes), to keep ours apart.
std::set<std::string> NamesInUse(const onnx::GraphProto& graph) {
  std::set<std::string> names;
  for (const auto& v : graph.input()) names.insert(v.name());
  for (const auto& v : graph.output()) names.insert(v.name());
  for (const auto& v : graph.value_info()) names.insert(v.name());
  for (const auto& t : graph.initializer()) names.insert(t.name());
  for (const auto& n : graph.node()) {
    names.insert(n.name());
    for (const auto& s : n.input()) names.insert(s);
    for (const auto& s : n.output()) names.insert(s);
  }
  return names;
}

}  // namespace

Expected<std::string> WrapUint8Io(std::string_view bytes, const std::string& what) {
  if (bytes.size() > static_cast<size_t>(INT_MAX)) {
    return Refuse(what, std::to_string(bytes.size()) + " bytes (expected under 2 GiB)");
  }
  onnx::ModelProto model;
  if (!model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    return Refuse(what, "the bytes do not parse as an ONNX ModelProto");
  }
  if (model.ir_version() < kMinIrVersion) {
    return Refuse(what, "IR version " + std::to_string(model.ir_version()) +
                            " (expected >= " + std::to_string(kMinIrVersion) + ")");
  }
  int64_t opset = -1;
  for (const auto& o : model.opset_import()) {
    if (o.domain().empty() || o.domain() == "ai.onnx") opset = o.version();
  }
  if (opset < kMinOpset) {
    return Refuse(what, "default-domain opset " + std::to_string(opset) +
                            " (expected >= " + std::to_string(kMinOpset) + ")");
  }
  onnx::GraphProto* graph = model.mutable_graph();
  const onnx::ValueInfoProto* visual = FindValue(graph->input(), kVisualName);
  const onnx::ValueInfoProto* output = FindValue(graph->output(), kOutputName);
  if (!visual || !output || !IsFloatTensor(*visual) || !IsFloatTensor(*output)) {
    return Refuse(what,
                  "expected a float32 graph input 'input' and a float32 graph output 'output'");
  }
  const auto& shape = visual->type().tensor_type().shape();
  bool shape_ok = visual->type().tensor_type().has_shape() && shape.dim_size() == 4 &&
                  !shape.dim(0).has_dim_value();
  for (int i = 1; shape_ok && i < 4; ++i) {
    shape_ok = shape.dim(i).has_dim_value() && shape.dim(i).dim_value() > 0;
  }
  if (!shape_ok) {
    return Refuse(what, "the input 'input' is not [B,C,H,W] with a symbolic batch and fixed C,H,W");
  }
  if (FindValue(graph->output(), kVisualName)) {
    return Refuse(what, "'input' is also a graph output");
  }
  for (const auto& t : graph->initializer()) {
    if (t.name() == kVisualName) return Refuse(what, "'input' also has an initializer");
    if (t.data_location() == onnx::TensorProto::EXTERNAL) {
      return Refuse(what, "it keeps tensor data in external files");
    }
  }
  for (const auto& n : graph->node()) {
    if (HasSubgraph(n)) return Refuse(what, "it has subgraphs (If/Loop/Scan nodes)");
  }

  std::set<std::string> used = NamesInUse(*graph);
  for (const char* ours : {kVisualU8Name, kOutputU8Name}) {
    if (used.count(ours)) return Refuse(what, std::string("the name '") + ours + "' is taken");
  }
  // Internal names: "lipsync_wrap_<role>", suffixed until unused.
  auto fresh = [&used](const std::string& role) {
    std::string name = "lipsync_wrap_" + role;
    for (int i = 1; used.count(name); ++i) name = "lipsync_wrap_" + role + "_" + std::to_string(i);
    used.insert(name);
    return name;
  };
  const std::string visual_f32 = fresh("visual");
  const std::string k255 = fresh("k255");
  const std::string k0 = fresh("k0");
  const std::string u8_as_float = fresh("u8_as_float");
  const std::string u8_scaled = fresh("u8_scaled");
  const std::string is_nan = fresh("is_nan");
  const std::string finite = fresh("finite");
  const std::string scaled = fresh("scaled");
  const std::string clipped = fresh("clipped");
  const std::string rounded = fresh("rounded");

  // The original graph now reads the Concat's result instead of the graph input.
  for (auto& n : *graph->mutable_node()) {
    for (auto& in : *n.mutable_input())
      if (in == kVisualName) in = visual_f32;
  }

  // The uint8 input: same shape, uint8. Both visual inputs default to batch 0.
  onnx::ValueInfoProto u8_input = *visual;
  u8_input.set_name(kVisualU8Name);
  u8_input.mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::UINT8);
  *graph->add_input() = u8_input;
  for (auto [name, type] : {std::pair{kVisualName, onnx::TensorProto::FLOAT},
                            std::pair{kVisualU8Name, onnx::TensorProto::UINT8}}) {
    onnx::TensorProto* empty = graph->add_initializer();
    empty->set_name(name);
    empty->set_data_type(type);
    empty->add_dims(0);
    for (int i = 1; i < 4; ++i) empty->add_dims(shape.dim(i).dim_value());
    empty->set_raw_data("");
  }
  for (auto [name, value] : {std::pair{k255, 255.0f}, std::pair{k0, 0.0f}}) {
    onnx::TensorProto* scalar = graph->add_initializer();
    scalar->set_name(name);
    scalar->set_data_type(onnx::TensorProto::FLOAT);
    scalar->add_float_data(value);
  }

  // Head: input_u8 -> float / 255, joined with the float input along the batch axis.
  std::vector<onnx::NodeProto> head = {
      MakeNode("Cast", {kVisualU8Name}, u8_as_float,
               {IntAttribute("to", onnx::TensorProto::FLOAT)}),
      MakeNode("Div", {u8_as_float, k255}, u8_scaled),
      MakeNode("Concat", {u8_scaled, kVisualName}, visual_f32, {IntAttribute("axis", 0)}),
  };
  // Tail: output -> uint8 (NaN -> 0, clipped to [0,255], rounded).
  std::vector<onnx::NodeProto> tail = {
      MakeNode("IsNaN", {kOutputName}, is_nan),
      MakeNode("Where", {is_nan, k0, kOutputName}, finite),
      MakeNode("Mul", {finite, k255}, scaled),
      MakeNode("Clip", {scaled, k0, k255}, clipped),
      MakeNode("Round", {clipped}, rounded),
      MakeNode("Cast", {rounded}, kOutputU8Name, {IntAttribute("to", onnx::TensorProto::UINT8)}),
  };
  google::protobuf::RepeatedPtrField<onnx::NodeProto> nodes;
  for (auto& n : head) *nodes.Add() = std::move(n);
  for (auto& n : *graph->mutable_node()) *nodes.Add() = std::move(n);
  for (auto& n : tail) *nodes.Add() = std::move(n);
  graph->mutable_node()->Swap(&nodes);

  onnx::ValueInfoProto u8_output = *output;
  u8_output.set_name(kOutputU8Name);
  u8_output.mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::UINT8);
  *graph->add_output() = u8_output;

  std::string out;
  if (!model.SerializeToString(&out)) {
    return Refuse(what, "the wrapped model does not serialize (over 2 GiB?)");
  }
  return out;
}

}  // namespace lipsync::inference
