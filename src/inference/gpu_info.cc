#include "inference/gpu_info.h"

#include <dlfcn.h>

#include <mutex>

namespace lipsync::inference {
namespace {

// The few NVML entry points we use, declared here so no NVIDIA header is needed to
// build. Signatures follow nvml.h (stable ABI since NVML v2).
using NvmlReturn = int;
using NvmlDevice = void*;
struct NvmlMemory {
  unsigned long long total;
  unsigned long long free;
  unsigned long long used;
};

struct NvmlUtilization {
  unsigned int gpu;     // percent of time a kernel ran, over the last sample period
  unsigned int memory;  // percent of time device memory was read or written
};

struct Nvml {
  bool ok = false;
  // Optional (older drivers may lack it): null leaves utilization unknown.
  NvmlReturn (*device_get_utilization_rates)(NvmlDevice, NvmlUtilization*) = nullptr;
  NvmlReturn (*device_get_count)(unsigned int*) = nullptr;
  NvmlReturn (*device_get_handle_by_index)(unsigned int, NvmlDevice*) = nullptr;
  NvmlReturn (*device_get_name)(NvmlDevice, char*, unsigned int) = nullptr;
  NvmlReturn (*device_get_memory_info)(NvmlDevice, NvmlMemory*) = nullptr;
};

template <typename Fn>
bool Bind(void* lib, const char* name, Fn* out) {
  *out = reinterpret_cast<Fn>(dlsym(lib, name));
  return *out != nullptr;
}

const Nvml& GetNvml() {
  static Nvml nvml;
  static std::once_flag once;
  std::call_once(once, [] {
    // Never dlclose'd: NVML stays initialised for the life of the process.
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) return;
    NvmlReturn (*init)() = nullptr;
    if (!Bind(lib, "nvmlInit_v2", &init) ||
        !Bind(lib, "nvmlDeviceGetCount_v2", &nvml.device_get_count) ||
        !Bind(lib, "nvmlDeviceGetHandleByIndex_v2", &nvml.device_get_handle_by_index) ||
        !Bind(lib, "nvmlDeviceGetName", &nvml.device_get_name) ||
        !Bind(lib, "nvmlDeviceGetMemoryInfo", &nvml.device_get_memory_info)) {
      return;
    }
    (void)Bind(lib, "nvmlDeviceGetUtilizationRates", &nvml.device_get_utilization_rates);
    nvml.ok = init() == 0;
  });
  return nvml;
}

bool DeviceHandle(int device, NvmlDevice* handle) {
  const Nvml& nvml = GetNvml();
  return nvml.ok && device >= 0 &&
         nvml.device_get_handle_by_index(static_cast<unsigned>(device), handle) == 0;
}

}  // namespace

bool NvmlAvailable() { return GetNvml().ok; }

int GpuCount() {
  const Nvml& nvml = GetNvml();
  unsigned int count = 0;
  if (!nvml.ok || nvml.device_get_count(&count) != 0) return 0;
  return static_cast<int>(count);
}

std::vector<GpuStatus> QueryGpus() {
  std::vector<GpuStatus> gpus;
  const Nvml& nvml = GetNvml();
  int count = GpuCount();
  for (int i = 0; i < count; ++i) {
    NvmlDevice handle = nullptr;
    if (!DeviceHandle(i, &handle)) continue;
    GpuStatus gpu;
    gpu.device_id = i;
    char name[96] = {};
    if (nvml.device_get_name(handle, name, sizeof(name)) == 0) gpu.name = name;
    NvmlMemory mem{};
    if (nvml.device_get_memory_info(handle, &mem) == 0) {
      gpu.memory_used_mb = static_cast<int64_t>(mem.used >> 20);
      gpu.memory_total_mb = static_cast<int64_t>(mem.total >> 20);
    }
    NvmlUtilization utilization{};
    if (nvml.device_get_utilization_rates &&
        nvml.device_get_utilization_rates(handle, &utilization) == 0) {
      gpu.utilization_percent = static_cast<int>(utilization.gpu);
    }
    gpus.push_back(std::move(gpu));
  }
  return gpus;
}

std::optional<int64_t> GpuMemoryUsedBytes(int device) {
  NvmlDevice handle = nullptr;
  if (!DeviceHandle(device, &handle)) return std::nullopt;
  NvmlMemory mem{};
  if (GetNvml().device_get_memory_info(handle, &mem) != 0) return std::nullopt;
  return static_cast<int64_t>(mem.used);
}

}  // namespace lipsync::inference
