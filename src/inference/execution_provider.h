// Decides, once at startup, which ONNX Runtime execution provider serves the models
// (CUDA or CPU) and on which devices, and says why in one human line.
//
// Stateless functions; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "inference/gpu_info.h"
#include "inference/ort_runtime.h"

namespace lipsync::inference {

inline constexpr int kCpuDevice = -1;

struct ExecutionConfig {
  bool use_cuda = true;
  bool require_cuda = false;  // true: no usable CUDA is FAILED_PRECONDITION
  int cuda_device_id = 0;     // first GPU ordinal to use
  int gpu_count = 0;          // 0 = auto (NVML)
};

struct ExecutionPlan {
  bool cuda = false;
  std::vector<int> devices;  // GPU ordinals; {kCpuDevice} = CPU
  std::string provider;      // "CUDAExecutionProvider" / "CPUExecutionProvider"
  std::string reason;        // one human line: why this was chosen
};

// CUDA when use_cuda, the runtime has CUDAExecutionProvider, and NVML sees a GPU
// (devices cuda_device_id .. cuda_device_id+count-1, clipped to what exists; with
// gpu_count set explicitly and no NVML, trusts the operator). Otherwise CPU with the
// reason. require_cuda and no usable CUDA -> FAILED_PRECONDITION with the reason.
// Logs the choice at INFO.
Expected<ExecutionPlan> PlanExecution(const ExecutionConfig& config, const OrtRuntime& runtime);

}  // namespace lipsync::inference
