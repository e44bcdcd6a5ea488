// NVIDIA GPU discovery and memory figures through NVML, loaded with
// dlopen("libnvidia-ml.so.1") at run time so the binary runs where no NVIDIA driver
// is installed (then every query reports "no GPU").
//
// Thread-safe. NVML is initialised once, on first use, and stays loaded until exit.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "inference/api.h"

namespace lipsync::inference {

// True when libnvidia-ml.so.1 loaded and nvmlInit succeeded.
bool NvmlAvailable();
// Number of GPUs NVML sees; 0 without NVML.
int GpuCount();
// One entry per GPU (name, memory used/total in MB, utilization); empty without NVML. The
// loaded_models/active_requests fields are left 0 for callers to fill in.
std::vector<GpuStatus> QueryGpus();
// Device memory in use on `device` in bytes (all processes), or nullopt when unknown.
std::optional<int64_t> GpuMemoryUsedBytes(int device);

}  // namespace lipsync::inference
