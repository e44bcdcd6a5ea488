#include "inference/execution_provider.h"

#include <dlfcn.h>
#include <onnx/onnx_pb.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include "common/bounded_text.h"
#include "common/log.h"

namespace lipsync::inference {
namespace {

constexpr const char* kCuda = "CUDAExecutionProvider";
constexpr const char* kCpu = "CPUExecutionProvider";

// What the CUDA provider of ONNX Runtime 1.29 needs at run time, in load order (each
// after what it links to). Required: the provider fails without them. Optional: cuDNN
// loads its parts itself on first use; preloading them from the configured
// directories spares it the search, and a failure is only a note.
struct CudaLibrary {
  const char* soname;
  const char* what;
  bool required;
};
constexpr std::array<CudaLibrary, 15> kCudaLibraries{{
    {"libcuda.so.1", "NVIDIA driver", true},
    {"libcudart.so.13", "CUDA 13 runtime", true},
    {"libcublasLt.so.13", "cuBLASLt 13", true},
    {"libcublas.so.13", "cuBLAS 13", true},
    {"libcurand.so.10", "cuRAND (CUDA 13)", true},
    {"libnvrtc.so.13", "NVRTC 13 (cuDNN runtime-compiled engines)", false},
    {"libcudnn_graph.so.9", "cuDNN 9 graph", false},
    {"libcudnn_engines_precompiled.so.9", "cuDNN 9 engines", false},
    {"libcudnn_engines_runtime_compiled.so.9", "cuDNN 9 engines", false},
    {"libcudnn_heuristic.so.9", "cuDNN 9 heuristics", false},
    {"libcudnn_ops.so.9", "cuDNN 9 ops", false},
    {"libcudnn_cnn.so.9", "cuDNN 9 convolutions", false},
    {"libcudnn_adv.so.9", "cuDNN 9 adv", false},
    {"libcudnn.so.9", "cuDNN 9", true},
    {"libnvidia-ml.so.1", "NVML (GPU discovery)", false},
}};

std::string Join(const std::vector<std::string>& items, const char* sep) {
  std::string s;
  for (const auto& i : items) s += (s.empty() ? "" : sep) + i;
  return s;
}

std::string SystemPathDescription() {
  const char* ld = std::getenv("LD_LIBRARY_PATH");
  return std::string("the system library path (LD_LIBRARY_PATH=") +
         (ld && *ld ? Bounded(ld, 400) : "unset") + ", /etc/ld.so.cache, /lib, /usr/lib)";
}

Expected<ExecutionPlan> CpuPlan(const ExecutionConfig& config, std::string why) {
  if (config.require_cuda) {
    return Status::FailedPrecondition("onnx.require_cuda is true but CUDA is not usable: " + why);
  }
  ExecutionPlan plan;
  plan.cuda = false;
  plan.devices = {kCpuDevice};
  plan.provider = kCpu;
  plan.reason = std::move(why);
  LOG_INFO("execution provider: %s (%s)", plan.provider.c_str(), plan.reason.c_str());
  return plan;
}

// A two-node graph (y = x + x on [1,4] floats) that makes the CUDA provider create its
// context, load cuBLAS/cuDNN handles and run one kernel.
std::string ProbeModel() {
  onnx::ModelProto model;
  model.set_ir_version(8);
  auto* opset = model.add_opset_import();
  opset->set_domain(std::string());
  opset->set_version(17);
  auto* graph = model.mutable_graph();
  graph->set_name(std::string("lipsync_cuda_probe"));
  for (auto [list, name] : {std::pair{graph->add_input(), std::string("x")},
                            std::pair{graph->add_output(), std::string("y")}}) {
    list->set_name(name);
    auto* t = list->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_value(1);
    t->mutable_shape()->add_dim()->set_dim_value(4);
  }
  // std::string arguments: GCC 12 misreports -Wrestrict on protobuf's const char* setters.
  const std::string x = "x", y = "y", add = "Add";
  auto* node = graph->add_node();
  node->set_op_type(add);
  *node->add_input() = x;
  *node->add_input() = x;
  *node->add_output() = y;
  return model.SerializeAsString();
}

// One session with the CUDA provider on `device`, one Run. ORT's message on failure.
Status ProbeCuda(const OrtRuntime& runtime, int device) {
  try {
    Ort::SessionOptions options = runtime.MakeSessionOptions();
    LIPSYNC_RETURN_IF_ERROR(AppendCudaProvider(options, device));
    const std::string model = ProbeModel();
    Ort::Session session(const_cast<OrtRuntime&>(runtime).env(), model.data(), model.size(),
                         options);
    std::array<float, 4> x{1, 2, 3, 4}, y{};
    std::array<int64_t, 2> dims{1, 4};
    Ort::MemoryInfo mem = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
    Ort::Value in = Ort::Value::CreateTensor<float>(mem, x.data(), x.size(), dims.data(), 2);
    Ort::Value out = Ort::Value::CreateTensor<float>(mem, y.data(), y.size(), dims.data(), 2);
    const char* in_name = "x";
    const char* out_name = "y";
    session.Run(Ort::RunOptions{nullptr}, &in_name, &in, 1, &out_name, &out, 1);
    if (y[3] != 8.f) {
      return Status::Unavailable("the CUDA probe computed " + std::to_string(y[3]) +
                                 " for 4 + 4 on device " + std::to_string(device));
    }
    return Status::Ok();
  } catch (const Ort::Exception& e) {
    return Status::Unavailable("a probe session on CUDA device " + std::to_string(device) +
                               " failed: " + Bounded(e.what(), 400));
  }
}

}  // namespace

std::string CudaLibraryReport::Describe() const {
  std::string s = Join(missing, "; ");
  if (!notes.empty()) s += (s.empty() ? "" : "; ") + std::string("notes: ") + Join(notes, "; ");
  return s;
}

CudaLibraryReport LoadCudaLibraries(const std::vector<std::string>& dirs) {
  CudaLibraryReport report;
  for (const CudaLibrary& lib : kCudaLibraries) {
    std::string failure;  // a file found that did not load
    void* handle = nullptr;
    for (const auto& dir : dirs) {
      const std::string path = (std::filesystem::path(dir) / lib.soname).string();
      std::error_code ec;
      if (!std::filesystem::exists(path, ec)) continue;
      handle = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
      if (handle) {
        report.loaded.push_back(std::string(lib.soname) + " from " + dir);
        break;
      }
      const char* err = dlerror();
      failure = path + " exists but does not load: " + Bounded(err ? err : "unknown error");
      break;  // a broken first match is reported, never silently skipped
    }
    if (!handle && failure.empty()) {
      handle = dlopen(lib.soname, RTLD_NOW | RTLD_GLOBAL);
      if (handle) {
        report.loaded.push_back(std::string(lib.soname) + " from the system path");
      } else {
        const char* err = dlerror();
        const std::string text = err ? err : "";
        const std::string where =
            (dirs.empty() ? std::string("onnx.cuda_library_dirs (empty)")
                          : "onnx.cuda_library_dirs [" + Join(dirs, ", ") + "]") +
            " and " + SystemPathDescription();
        failure = text.find("No such file") != std::string::npos || text.empty()
                      ? "not found in " + where
                      : "found on the system path but does not load: " + Bounded(text);
      }
    }
    if (handle) continue;  // never dlclose'd: the provider links against it
    std::string line = std::string(lib.soname) + " (" + lib.what + "): " + failure;
    (lib.required ? report.missing : report.notes).push_back(std::move(line));
  }
  return report;
}

Status AppendCudaProvider(Ort::SessionOptions& options, int device_id,
                          const CudaProviderSettings& settings) {
  const OrtApi& api = Ort::GetApi();
  OrtCUDAProviderOptionsV2* cuda = nullptr;
  if (OrtStatus* st = api.CreateCUDAProviderOptions(&cuda)) {
    std::string msg = api.GetErrorMessage(st);
    api.ReleaseStatus(st);
    return Status::Unavailable("this ONNX Runtime cannot create CUDA provider options: " +
                               Bounded(msg));
  }
  const std::string device = std::to_string(device_id);
  const char* keys[] = {"device_id", "cudnn_conv_algo_search", "use_tf32", "enable_cuda_graph",
                        "do_copy_in_default_stream"};
  const char* values[] = {device.c_str(), settings.conv_algo_search.c_str(),
                          settings.use_tf32 ? "1" : "0", settings.enable_cuda_graph ? "1" : "0",
                          settings.do_copy_in_default_stream ? "1" : "0"};
  OrtStatus* st = api.UpdateCUDAProviderOptions(cuda, keys, values, std::size(keys));
  if (!st) st = api.SessionOptionsAppendExecutionProvider_CUDA_V2(options, cuda);
  api.ReleaseCUDAProviderOptions(cuda);
  if (st) {
    std::string msg = api.GetErrorMessage(st);
    api.ReleaseStatus(st);
    return Status::Unavailable("cannot use CUDA device " + device + ": " + Bounded(msg, 400));
  }
  return Status::Ok();
}

Expected<ExecutionPlan> PlanExecution(const ExecutionConfig& config, const OrtRuntime& runtime) {
  if (!config.use_cuda && !config.require_cuda) {
    return CpuPlan(config, "onnx.use_cuda is false");
  }
  if (!runtime.HasProvider(kCuda)) {
    return CpuPlan(config,
                   "use_cuda is true but this ONNX Runtime has no CUDAExecutionProvider "
                   "(library: " +
                       runtime.library_path() + ", version " + runtime.version() +
                       ", providers: " + runtime.ProvidersString() +
                       "; expected the onnxruntime-node 1.29.0 core that scripts/setup.sh "
                       "installs, or a GPU build via onnx.library_path)");
  }
  const std::filesystem::path core_dir =
      std::filesystem::path(runtime.library_path()).parent_path();
  std::error_code ec;
  if (!std::filesystem::exists(core_dir / kCudaProviderLibrary, ec)) {
    return CpuPlan(config, std::string("the CUDA provider library ") + kCudaProviderLibrary +
                               " is not beside the ONNX Runtime core (looked in " +
                               core_dir.string() +
                               "; LIPSYNC_CUDA=1 scripts/setup.sh installs it there)");
  }
  if (config.cuda_device_id < 0) {
    return Status::InvalidArgument("onnx.cuda_device_id is " +
                                   std::to_string(config.cuda_device_id) +
                                   " (expected a GPU ordinal >= 0)");
  }
  int visible = GpuCount();
  int count = config.gpu_count;
  if (count <= 0) {
    if (visible == 0) {
      return CpuPlan(config, NvmlAvailable()
                                 ? "NVML reports no NVIDIA GPU"
                                 : "no NVIDIA driver found (libnvidia-ml.so.1 not loadable), "
                                   "so no GPU to auto-detect");
    }
    count = visible - config.cuda_device_id;
  } else if (visible > 0 && config.cuda_device_id + count > visible) {
    // Clip to the GPUs that exist rather than failing every load on a missing one.
    count = visible - config.cuda_device_id;
  }
  if (count <= 0) {
    return CpuPlan(config, "onnx.cuda_device_id " + std::to_string(config.cuda_device_id) +
                               " is not among the " + std::to_string(visible) +
                               " GPU(s) NVML sees");
  }
  const CudaLibraryReport libraries = LoadCudaLibraries(config.cuda_library_dirs);
  if (!libraries.ok()) {
    return CpuPlan(config, "the CUDA provider's libraries are missing: " + libraries.Describe());
  }
  if (!libraries.notes.empty()) {
    LOG_WARN("CUDA libraries: %s", libraries.Describe().c_str());
  }
  LOG_INFO("CUDA libraries: %s", Join(libraries.loaded, ", ").c_str());
  if (Status probe = ProbeCuda(runtime, config.cuda_device_id); !probe.ok()) {
    return CpuPlan(config, probe.message());
  }
  ExecutionPlan plan;
  plan.cuda = true;
  plan.provider = kCuda;
  for (int i = 0; i < count; ++i) plan.devices.push_back(config.cuda_device_id + i);
  plan.reason = "use_cuda is true, the runtime has CUDAExecutionProvider and " +
                std::to_string(count) + " GPU(s) are in use starting at device " +
                std::to_string(config.cuda_device_id) +
                (config.gpu_count > 0 ? " (gpus.count)" : " (auto-detected by NVML)");
  LOG_INFO("execution provider: %s (%s)", plan.provider.c_str(), plan.reason.c_str());
  return plan;
}

}  // namespace lipsync::inference
