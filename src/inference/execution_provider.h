// Decides, once at startup, which ONNX Runtime execution provider serves the models
// (CUDA or CPU) and on which devices, and says why in one human line. Owns the CUDA
// provider's run-time prerequisites: its library beside the ONNX Runtime core, the
// NVIDIA driver, CUDA 13 and cuDNN 9 (system paths or onnx.cuda_library_dirs), and the
// CUDA provider options every session uses.
//
// Stateless functions; thread-safe. Libraries loaded by LoadCudaLibraries stay loaded
// until exit.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <string>
#include <vector>

#include "common/status.h"
#include "inference/gpu_info.h"
#include "inference/ort_runtime.h"

namespace lipsync::inference {

inline constexpr int kCpuDevice = -1;
inline constexpr const char* kCudaProviderLibrary = "libonnxruntime_providers_cuda.so";

struct ExecutionConfig {
  bool use_cuda = true;
  bool require_cuda = false;  // true: no usable CUDA is FAILED_PRECONDITION
  int cuda_device_id = 0;     // first GPU ordinal to use
  int gpu_count = 0;          // 0 = auto (NVML)
  // Searched in order before the system library path for the CUDA 13 / cuDNN 9
  // libraries, e.g. NVIDIA's pip wheels: <site-packages>/nvidia/cu13/lib and
  // <site-packages>/nvidia/cudnn/lib (config: onnx.cuda_library_dirs).
  std::vector<std::string> cuda_library_dirs;
};

struct ExecutionPlan {
  bool cuda = false;
  std::vector<int> devices;  // GPU ordinals; {kCpuDevice} = CPU
  std::string provider;      // "CUDAExecutionProvider" / "CPUExecutionProvider"
  std::string reason;        // one human line: why this was chosen
};

// CUDA when use_cuda, the runtime has CUDAExecutionProvider with
// libonnxruntime_providers_cuda.so beside the core library, a GPU is there (NVML, or
// gpu_count set explicitly: the operator is trusted), the CUDA libraries load
// (LoadCudaLibraries) and a probe session runs on the first device. Devices
// cuda_device_id .. cuda_device_id+count-1, clipped to what exists. Otherwise CPU with
// the reason (which library, where it looked, or ORT's message). require_cuda and no
// usable CUDA -> FAILED_PRECONDITION with the reason. Logs the choice at INFO.
Expected<ExecutionPlan> PlanExecution(const ExecutionConfig& config, const OrtRuntime& runtime);

struct CudaLibraryReport {
  std::vector<std::string> loaded;   // "libcublas.so.13 from /dir" or "... from the system path"
  std::vector<std::string> missing;  // one line per required library: which, where it looked
  std::vector<std::string> notes;    // optional libraries that did not load (cuDNN parts)
  bool ok() const { return missing.empty(); }
  // "libcudart.so.13: not found in /a, /b or the system library path; ..." (bounded).
  std::string Describe() const;
};

// Loads (RTLD_NOW | RTLD_GLOBAL) the NVIDIA driver library and the CUDA 13 and cuDNN 9
// libraries the CUDA provider needs, each from the first of `dirs` holding it, else from
// the system library path, so the provider's own dlopen finds them by soname (a
// process cannot change its library path after start). Idempotent.
CudaLibraryReport LoadCudaLibraries(const std::vector<std::string>& dirs);

// CUDA provider options, each kept only if it pays (docs/PERFORMANCE.md, GPU section).
struct CudaProviderSettings {
  // ORT's cudnn_conv_algo_search: "EXHAUSTIVE" (ORT's default: reruns the search for
  // every new input shape, a p99 stall per new batch size), "HEURISTIC", "DEFAULT".
  std::string conv_algo_search = "HEURISTIC";
  bool use_tf32 = true;            // TF32 tensor cores for float32 MatMul/Conv
  bool enable_cuda_graph = false;  // fixed shapes only; one graph per session
  bool do_copy_in_default_stream = true;
};

// Appends the CUDA provider for `device_id` with `settings` to `options`. UNAVAILABLE
// with ORT's message when this ONNX Runtime cannot (no provider, missing libraries).
// Never throws.
Status AppendCudaProvider(Ort::SessionOptions& options, int device_id,
                          const CudaProviderSettings& settings = {});

}  // namespace lipsync::inference
