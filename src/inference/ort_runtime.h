// The process-wide ONNX Runtime: the shared library (dlopen'ed at run time, so an
// operator can point `onnx.library_path` at a GPU build without rebuilding), the C++
// API bound to it, and one global Ort::Env with a global thread pool that every
// session shares (per-session pools make thousands of sessions slow to create), and
// one CPU arena allocator registered on it that every CPU session uses
// (session.use_env_allocators): a per-session arena keeps each model's peak
// activations for good (~550 MB at batch 1 for the unet_328-sized bench model), so
// with it shared a loaded-but-idle tenant holds only its weights (docs/PERFORMANCE.md,
// "Model cold start"). The shared arena grows to the peak of the runs in flight at
// once and is never returned; it is not counted in any one model's memory_bytes once
// the model that first grew it is unloaded.
//
// Thread-safe. Initialize once; Get() afterwards. The runtime lives until exit.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <string>

#include "common/status.h"

namespace lipsync::inference {

struct OrtRuntimeOptions {
  std::string library_path;  // empty: the bundled library (LIPSYNC_DEFAULT_ORT_LIBRARY)
  int intra_op_threads = 0;  // 0: ORT's default
  int inter_op_threads = 1;
  bool shared_cpu_arena = true;  // one CPU arena for every session (see above)
  std::string log_id = "lipsync";
};

class OrtRuntime {
 public:
  // Loads the library and creates the environment. A missing file, a library that is
  // not ONNX Runtime, or one too old for our API version is FAILED_PRECONDITION with
  // the path and the versions. Calling it again with other options returns the first
  // runtime (one per process).
  static Expected<OrtRuntime*> Initialize(const OrtRuntimeOptions& options = {});
  // The initialized runtime, or nullptr before Initialize succeeded.
  static OrtRuntime* Get();

  Ort::Env& env() { return env_; }
  const std::string& library_path() const { return library_path_; }
  const std::string& version() const { return version_; }
  // Providers this library was built with, e.g. {"CUDAExecutionProvider", "CPUExecutionProvider"}.
  bool HasProvider(const std::string& name) const;
  std::string ProvidersString() const;
  bool shared_cpu_arena() const { return shared_cpu_arena_; }
  // Session options wired to the global thread pool (and the shared CPU arena).
  Ort::SessionOptions MakeSessionOptions() const;

 private:
  OrtRuntime(std::string path, std::string version, Ort::Env env);
  std::string library_path_;
  std::string version_;
  Ort::Env env_;
  std::vector<std::string> providers_;
  bool shared_cpu_arena_ = false;
};

}  // namespace lipsync::inference
