#include "modelgen/graph_builder.h"

#include <onnx/checker.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <numbers>

namespace lipsync::modelgen {
namespace {

void SetBatchedShape(onnx::ValueInfoProto* info, const std::string& name,
                     const std::vector<int64_t>& per_sample_dims) {
  info->set_name(name);
  auto* tensor_type = info->mutable_type()->mutable_tensor_type();
  tensor_type->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = tensor_type->mutable_shape();
  shape->add_dim()->set_dim_param(kBatchDim);
  for (int64_t d : per_sample_dims) shape->add_dim()->set_dim_value(d);
}

}  // namespace

onnx::AttributeProto IntAttr(const std::string& name, int64_t value) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(value);
  return a;
}

onnx::AttributeProto IntsAttr(const std::string& name, const std::vector<int64_t>& values) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INTS);
  for (int64_t v : values) a.add_ints(v);
  return a;
}

onnx::AttributeProto FloatAttr(const std::string& name, float value) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::FLOAT);
  a.set_f(value);
  return a;
}

onnx::AttributeProto StringAttr(const std::string& name, const std::string& value) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::STRING);
  a.set_s(value);
  return a;
}

GraphBuilder::GraphBuilder(const std::string& graph_name) {
  model_.set_ir_version(kIrVersion);
  model_.set_producer_name("lipsync-modelgen");
  model_.set_producer_version("1.0");
  auto* opset = model_.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpsetVersion);
  graph_ = model_.mutable_graph();
  graph_->set_name(graph_name);
}

void GraphBuilder::AddBatchedInput(const std::string& name,
                                   const std::vector<int64_t>& per_sample_dims) {
  SetBatchedShape(graph_->add_input(), name, per_sample_dims);
}

void GraphBuilder::AddBatchedOutput(const std::string& name,
                                    const std::vector<int64_t>& per_sample_dims) {
  SetBatchedShape(graph_->add_output(), name, per_sample_dims);
}

std::string GraphBuilder::UniqueName(const std::string& hint) {
  return hint + "_" + std::to_string(next_id_++);
}

std::string GraphBuilder::AddFloatTensor(const std::string& name_hint,
                                         const std::vector<int64_t>& shape,
                                         const std::vector<float>& values) {
  auto* t = graph_->add_initializer();
  std::string name = UniqueName(name_hint);
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : shape) t->add_dims(d);
  // raw_data is little-endian float32, which is this machine's layout (x86-64/arm64).
  t->mutable_raw_data()->assign(reinterpret_cast<const char*>(values.data()),
                                values.size() * sizeof(float));
  return name;
}

std::string GraphBuilder::AddInt64Tensor(const std::string& name_hint,
                                         const std::vector<int64_t>& shape,
                                         const std::vector<int64_t>& values) {
  auto* t = graph_->add_initializer();
  std::string name = UniqueName(name_hint);
  t->set_name(name);
  t->set_data_type(onnx::TensorProto::INT64);
  for (int64_t d : shape) t->add_dims(d);
  for (int64_t v : values) t->add_int64_data(v);
  return name;
}

std::string GraphBuilder::AddNode(const std::string& op_type,
                                  const std::vector<std::string>& inputs,
                                  const std::vector<onnx::AttributeProto>& attributes,
                                  const std::string& output_name) {
  auto* node = graph_->add_node();
  std::string out = output_name.empty() ? UniqueName(op_type) : output_name;
  node->set_op_type(op_type);
  node->set_name(out + "_node");
  for (const auto& in : inputs) node->add_input(in);
  node->add_output(out);
  for (const auto& a : attributes) *node->add_attribute() = a;
  return out;
}

Status GraphBuilder::Save(const std::string& path) const {
  try {
    onnx::checker::check_model(model_);
  } catch (const std::exception& e) {
    return Status::Internal(
        "generated model '" + graph_->name() +
        "' fails the ONNX checker (expected a valid opset-17 graph): " + e.what());
  }
  const std::string tmp_path = path + ".tmp";
  {
    std::ofstream out(tmp_path, std::ios::binary | std::ios::trunc);
    if (!out) {
      return Status::FailedPrecondition("cannot open '" + tmp_path +
                                        "' for writing (expected a writable directory)");
    }
    if (!model_.SerializeToOstream(&out) || !out.flush()) {
      std::remove(tmp_path.c_str());
      return Status::FailedPrecondition("writing model to '" + tmp_path +
                                        "' failed (disk full or not writable?)");
    }
  }
  if (std::rename(tmp_path.c_str(), path.c_str()) != 0) {
    std::string err = std::strerror(errno);
    std::remove(tmp_path.c_str());
    return Status::FailedPrecondition("cannot move '" + tmp_path + "' to '" + path + "': " + err);
  }
  return Status::Ok();
}

uint64_t SeededNormal::NextBits() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double SeededNormal::NextUniform() { return double(NextBits() >> 11) * 0x1.0p-53; }

float SeededNormal::Next() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = NextUniform();
  double u2 = NextUniform();
  if (u1 < 1e-300) u1 = 1e-300;
  double r = std::sqrt(-2.0 * std::log(u1));
  double theta = 2.0 * std::numbers::pi * u2;
  spare_ = float(r * std::sin(theta));
  has_spare_ = true;
  return float(r * std::cos(theta));
}

}  // namespace lipsync::modelgen
