#include "inference/ort_runtime.h"

#include <dlfcn.h>

#include <memory>
#include <mutex>

namespace lipsync::inference {
namespace {
std::mutex g_mu;
OrtRuntime* g_runtime = nullptr;
}  // namespace

OrtRuntime::OrtRuntime(std::string path, std::string version, Ort::Env env)
    : library_path_(std::move(path)), version_(std::move(version)), env_(std::move(env)) {
  try {
    providers_ = Ort::GetAvailableProviders();
  } catch (const Ort::Exception&) {
  }
}

Expected<OrtRuntime*> OrtRuntime::Initialize(const OrtRuntimeOptions& options) {
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_runtime) return g_runtime;
  std::string path =
      options.library_path.empty() ? LIPSYNC_DEFAULT_ORT_LIBRARY : options.library_path;
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* err = dlerror();
    return Status::FailedPrecondition("cannot load ONNX Runtime library '" + path +
                                      "': " + (err ? err : "unknown error") +
                                      " (set onnx.library_path to libonnxruntime.so of "
                                      "ONNX Runtime >= 1." +
                                      std::to_string(ORT_API_VERSION) + ")");
  }
  using GetApiBaseFn = const OrtApiBase* (*)();
  auto get_api_base = reinterpret_cast<GetApiBaseFn>(dlsym(handle, "OrtGetApiBase"));
  if (!get_api_base) {
    return Status::FailedPrecondition("'" + path +
                                      "' is not an ONNX Runtime library (no OrtGetApiBase)");
  }
  const OrtApiBase* base = get_api_base();
  std::string version = base->GetVersionString ? base->GetVersionString() : "?";
  const OrtApi* api = base->GetApi(ORT_API_VERSION);
  if (!api) {
    return Status::FailedPrecondition("ONNX Runtime at '" + path + "' is version " + version +
                                      ", which lacks API version " +
                                      std::to_string(ORT_API_VERSION) + " (need ONNX Runtime 1." +
                                      std::to_string(ORT_API_VERSION) + " or newer)");
  }
  Ort::InitApi(api);
  try {
    OrtThreadingOptions* threading = nullptr;
    Ort::ThrowOnError(api->CreateThreadingOptions(&threading));
    if (options.intra_op_threads > 0) {
      Ort::ThrowOnError(api->SetGlobalIntraOpNumThreads(threading, options.intra_op_threads));
    }
    if (options.inter_op_threads > 0) {
      Ort::ThrowOnError(api->SetGlobalInterOpNumThreads(threading, options.inter_op_threads));
    }
    Ort::Env env(threading, ORT_LOGGING_LEVEL_WARNING, options.log_id.c_str());
    api->ReleaseThreadingOptions(threading);
    if (options.shared_cpu_arena) {
      // ORT's default arena settings (extend by powers of two, no cap).
      const Ort::MemoryInfo cpu("Cpu", OrtArenaAllocator, 0, OrtMemTypeDefault);
      const Ort::ArenaCfg arena(0, -1, -1, -1);
      env.CreateAndRegisterAllocator(cpu, arena);
    }
    g_runtime = new OrtRuntime(path, version, std::move(env));  // lives until exit
    g_runtime->shared_cpu_arena_ = options.shared_cpu_arena;
    return g_runtime;
  } catch (const Ort::Exception& e) {
    return Status::Internal(std::string("creating the ONNX Runtime environment failed: ") +
                            e.what());
  }
}

OrtRuntime* OrtRuntime::Get() {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_runtime;
}

bool OrtRuntime::HasProvider(const std::string& name) const {
  for (const auto& p : providers_)
    if (p == name) return true;
  return false;
}

std::string OrtRuntime::ProvidersString() const {
  std::string s;
  for (const auto& p : providers_) s += (s.empty() ? "" : ", ") + p;
  return s;
}

Ort::SessionOptions OrtRuntime::MakeSessionOptions() const {
  Ort::SessionOptions so;
  so.DisablePerSessionThreads();
  so.SetGraphOptimizationLevel(GraphOptimizationLevel::ORT_ENABLE_ALL);
  if (shared_cpu_arena_) so.AddConfigEntry("session.use_env_allocators", "1");
  return so;
}

}  // namespace lipsync::inference
