#include "inference/execution_provider.h"

#include "common/log.h"

namespace lipsync::inference {
namespace {

constexpr const char* kCuda = "CUDAExecutionProvider";
constexpr const char* kCpu = "CPUExecutionProvider";

Expected<ExecutionPlan> CpuPlan(const ExecutionConfig& config, std::string why) {
  if (config.require_cuda) {
    return Status::FailedPrecondition("onnx.require_cuda is true but CUDA is not usable: " + why +
                                      " (expected a GPU build of ONNX Runtime via "
                                      "onnx.library_path and a visible NVIDIA GPU)");
  }
  ExecutionPlan plan;
  plan.cuda = false;
  plan.devices = {kCpuDevice};
  plan.provider = kCpu;
  plan.reason = std::move(why);
  LOG_INFO("execution provider: %s (%s)", plan.provider.c_str(), plan.reason.c_str());
  return plan;
}

}  // namespace

Expected<ExecutionPlan> PlanExecution(const ExecutionConfig& config, const OrtRuntime& runtime) {
  if (!config.use_cuda && !config.require_cuda) {
    return CpuPlan(config, "onnx.use_cuda is false");
  }
  if (!runtime.HasProvider(kCuda)) {
    return CpuPlan(config,
                   "use_cuda is true but this ONNX Runtime has no CUDAExecutionProvider "
                   "(library: " +
                       runtime.library_path() + ", version " + runtime.version() +
                       ", providers: " + runtime.ProvidersString() + ")");
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
    if (count <= 0) {
      return CpuPlan(config, "onnx.cuda_device_id " + std::to_string(config.cuda_device_id) +
                                 " is not among the " + std::to_string(visible) +
                                 " GPU(s) NVML sees");
    }
  } else if (visible > 0 && config.cuda_device_id + count > visible) {
    // Clip to the GPUs that exist rather than failing every load on a missing one.
    count = visible - config.cuda_device_id;
    if (count <= 0) {
      return CpuPlan(config, "onnx.cuda_device_id " + std::to_string(config.cuda_device_id) +
                                 " is not among the " + std::to_string(visible) +
                                 " GPU(s) NVML sees");
    }
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
