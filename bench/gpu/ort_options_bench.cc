// Raw ONNX Runtime on the bench model (unet_328-sized) under the CUDA provider's
// options, side by side in one process, each variant its own session:
//
//   ort_options_bench [--ort-library PATH] [--model bench.onnx] [--batches 1,8,32]
//                     [--seconds 2] [--cuda-library-dirs DIR:DIR] [--device 0]
//                     [--variants exhaustive_tf32,heuristic_tf32,...] [--cpu]
//                     [--gpu-count N]
//
//   exhaustive_tf32  ORT's default cuDNN algorithm search (reruns per new input shape)
//   heuristic_tf32   cudnn_conv_algo_search HEURISTIC (the server's setting), TF32 on
//   heuristic_fp32   HEURISTIC, TF32 off
//   u8_binding       heuristic_tf32 on the uint8-wrapped graph (inference/graph_wrap.h)
//                    with I/O binding: uint8 in and out through pinned host buffers
//                    (CPU buffers with --cpu), only uint8 crosses PCIe
//   cuda_graph       heuristic_tf32 + enable_cuda_graph, inputs/outputs bound to device
//                    buffers at fixed addresses (one session per batch size; compute
//                    only: the buffers are not refilled between runs). Skipped with --cpu.
//
// Per variant and batch: the first Run (session warm-up + the algorithm search a new
// batch size triggers: the p99 stall) and ms/frame over --seconds after it.
// --cpu runs every variant on the CPU provider: the dry run of bench/gpu/run_all.sh
// (exercises options, wrapping and I/O binding; the figures mean nothing there).
// Without --model the bench model is written to /tmp. Not run by ctest.
#include <onnxruntime_cxx_api.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/flags.h"
#include "inference/execution_provider.h"
#include "inference/graph_wrap.h"
#include "inference/ort_runtime.h"
#include "modelgen/model_builder.h"

namespace {

using namespace lipsync;
namespace inf = lipsync::inference;
using Clock = std::chrono::steady_clock;

std::vector<std::string> Split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, sep))
    if (!item.empty()) out.push_back(item);
  return out;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Variant {
  std::string name;
  inf::CudaProviderSettings settings;
  bool u8 = false;          // wrapped graph, uint8 I/O through pinned host buffers
  bool cuda_graph = false;  // device buffers, one session per batch
};

struct Buffers {
  std::vector<Ort::Value> inputs;  // visual, audio
  Ort::Value output{nullptr};
};

class Bench {
 public:
  Bench(inf::OrtRuntime* runtime, bool cpu, int device, double seconds)
      : runtime_(runtime), cpu_(cpu), device_(device), seconds_(seconds) {}

  std::unique_ptr<Ort::Session> Session(const std::string& model, const Variant& v) {
    Ort::SessionOptions options = runtime_->MakeSessionOptions();
    if (!cpu_) {
      Status st = inf::AppendCudaProvider(options, device_, v.settings);
      if (!st.ok()) throw std::runtime_error(st.ToString());
    }
    return std::make_unique<Ort::Session>(runtime_->env(), model.data(), model.size(), options);
  }

  // One line per batch: first Run, then steady-state ms/frame.
  void Run(const Variant& v, const std::string& float_model, const std::string& u8_model,
           const std::vector<int>& batches) {
    std::unique_ptr<Ort::Session> shared;
    for (int batch : batches) {
      const Clock::time_point created = Clock::now();
      std::unique_ptr<Ort::Session> own;
      if (v.cuda_graph || !shared) {
        own = Session(v.u8 ? u8_model : float_model, v);
        if (!v.cuda_graph) shared = std::move(own);
      }
      Ort::Session& session = v.cuda_graph ? *own : *shared;
      const double create_ms =
          v.cuda_graph || batch == batches.front() ? Ms(Clock::now() - created) : 0;
      Ort::IoBinding binding(session);
      // CPU: the default allocator; CUDA: the session's pinned-host or device allocator.
      Ort::AllocatorWithDefaultOptions cpu_allocator;
      std::unique_ptr<Ort::Allocator> session_allocator;
      std::string note;
      if (!cpu_) {
        try {
          session_allocator = std::make_unique<Ort::Allocator>(session, MemoryFor(v));
        } catch (const Ort::Exception& e) {
          if (v.cuda_graph) throw;
          // No pinned allocator from this session: pageable host memory (ORT copies).
          note = " (pageable: " + std::string(e.what()).substr(0, 120) + ")";
        }
      }
      OrtAllocator* allocator = session_allocator ? static_cast<OrtAllocator*>(*session_allocator)
                                                  : static_cast<OrtAllocator*>(cpu_allocator);
      const std::array<int64_t, 4> vdims{batch, 6, 320, 320}, adims{batch, 32, 16, 16},
          odims{batch, 3, 320, 320};
      auto visual = v.u8 ? Ort::Value::CreateTensor(allocator, vdims.data(), 4,
                                                    ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)
                         : Ort::Value::CreateTensor(allocator, vdims.data(), 4,
                                                    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      auto audio =
          Ort::Value::CreateTensor(allocator, adims.data(), 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      auto output = v.u8 ? Ort::Value::CreateTensor(allocator, odims.data(), 4,
                                                    ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8)
                         : Ort::Value::CreateTensor(allocator, odims.data(), 4,
                                                    ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      if (!v.cuda_graph) Fill(visual, audio, v.u8, batch);
      binding.BindInput(v.u8 ? inf::kVisualU8Name : "input", visual);
      binding.BindInput("audio", audio);
      binding.BindOutput(v.u8 ? inf::kOutputU8Name : "output", output);
      Ort::RunOptions run_options;
      const Clock::time_point first = Clock::now();
      session.Run(run_options, binding);
      binding.SynchronizeOutputs();
      const double first_ms = Ms(Clock::now() - first);
      int runs = 0;
      const Clock::time_point start = Clock::now();
      const Clock::time_point end = start + std::chrono::duration_cast<Clock::duration>(
                                                std::chrono::duration<double>(seconds_));
      do {
        session.Run(run_options, binding);
        binding.SynchronizeOutputs();
        ++runs;
      } while (Clock::now() < end);
      const double elapsed = Ms(Clock::now() - start);
      std::printf("| %s%s | %d | %.1f | %.1f | %.3f | %d |\n", v.name.c_str(), note.c_str(), batch,
                  create_ms, first_ms, elapsed / runs / batch, runs);
      std::fflush(stdout);
    }
  }

 private:
  Ort::MemoryInfo MemoryFor(const Variant& v) const {
    if (v.cuda_graph)
      return Ort::MemoryInfo("Cuda", OrtDeviceAllocator, device_, OrtMemTypeDefault);
    // Pinned host memory: the provider copies it to and from the device asynchronously.
    return Ort::MemoryInfo("CudaPinned", OrtDeviceAllocator, device_, OrtMemTypeCPUOutput);
  }

  static void Fill(Ort::Value& visual, Ort::Value& audio, bool u8, int batch) {
    std::mt19937 rng(batch);
    const size_t n = static_cast<size_t>(batch) * 6 * 320 * 320;
    if (u8) {
      auto* p = visual.GetTensorMutableData<uint8_t>();
      for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(rng());
    } else {
      auto* p = visual.GetTensorMutableData<float>();
      for (size_t i = 0; i < n; ++i) p[i] = static_cast<float>(rng() % 256) / 255.0f;
    }
    auto* a = audio.GetTensorMutableData<float>();
    for (size_t i = 0; i < static_cast<size_t>(batch) * 8192; ++i) a[i] = (rng() % 1000) / 1000.f;
  }

  inf::OrtRuntime* runtime_;
  bool cpu_;
  int device_;
  double seconds_;
};

int Main(int argc, char** argv) {
  auto flags = Flags::Parse(argc - 1, argv + 1,
                            {"ort-library", "model", "batches", "seconds", "cuda-library-dirs",
                             "device", "variants", "gpu-count"},
                            {"cpu"});
  if (!flags.ok()) {
    std::fprintf(stderr, "%s\n", flags.status().ToString().c_str());
    return 2;
  }
  const bool cpu = flags->Has("cpu");
  auto device_flag = flags->GetInt("device", 0);
  auto seconds_flag = flags->GetDouble("seconds", 2.0);
  auto gpu_count_flag = flags->GetInt("gpu-count", 0);
  if (!device_flag.ok() || !seconds_flag.ok() || !gpu_count_flag.ok()) {
    std::fprintf(stderr, "--device, --gpu-count and --seconds take numbers\n");
    return 2;
  }
  const int device = static_cast<int>(*device_flag);
  const double seconds = *seconds_flag;
  std::vector<int> batches;
  for (const auto& b : Split(flags->GetString("batches", "1,8,32"), ','))
    batches.push_back(std::stoi(b));
  inf::OrtRuntimeOptions ort;
  ort.library_path = flags->GetString("ort-library");
  auto runtime = inf::OrtRuntime::Initialize(ort);
  if (!runtime.ok()) {
    std::fprintf(stderr, "%s\n", runtime.status().ToString().c_str());
    return 1;
  }
  if (!cpu) {
    inf::ExecutionConfig config;
    config.require_cuda = true;
    config.cuda_device_id = device;
    // Set: trust it instead of NVML (the dry run reaches the library checks so).
    config.gpu_count = static_cast<int>(*gpu_count_flag);
    config.cuda_library_dirs = Split(flags->GetString("cuda-library-dirs"), ':');
    auto plan = inf::PlanExecution(config, **runtime);
    if (!plan.ok()) {
      std::fprintf(stderr, "%s\n", plan.status().ToString().c_str());
      return 1;
    }
  }
  std::string model_path = flags->GetString("model");
  const bool generated = model_path.empty();
  if (generated) {
    model_path = "/tmp/lipsync_ort_options_" + std::to_string(::getpid()) + ".onnx";
    if (Status s = modelgen::WriteBenchModel(model_path, 1); !s.ok()) {
      std::fprintf(stderr, "writing the bench model: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  std::string float_model;
  {
    std::ifstream in(model_path, std::ios::binary);
    float_model.assign(std::istreambuf_iterator<char>(in), {});
  }
  if (generated) std::filesystem::remove(model_path);
  auto u8_model = inf::WrapUint8Io(float_model, model_path);
  if (!u8_model.ok()) {
    std::fprintf(stderr, "%s\n", u8_model.status().ToString().c_str());
    return 1;
  }

  std::vector<Variant> all;
  inf::CudaProviderSettings exhaustive;
  exhaustive.conv_algo_search = "EXHAUSTIVE";
  inf::CudaProviderSettings heuristic;  // the defaults: HEURISTIC, TF32
  inf::CudaProviderSettings fp32 = heuristic;
  fp32.use_tf32 = false;
  inf::CudaProviderSettings graph = heuristic;
  graph.enable_cuda_graph = true;
  all.push_back({"exhaustive_tf32", exhaustive});
  all.push_back({"heuristic_tf32", heuristic});
  all.push_back({"heuristic_fp32", fp32});
  all.push_back({"u8_binding", heuristic, true});
  all.push_back({"cuda_graph", graph, false, true});
  const auto wanted = Split(flags->GetString("variants", ""), ',');
  std::printf("ORT %s at %s | %s | %.1f s per point\n", (*runtime)->version().c_str(),
              (*runtime)->library_path().c_str(), cpu ? "CPU provider (dry run)" : "CUDA provider",
              seconds);
  std::printf("| variant | batch | session ms | first run ms | ms/frame | runs |\n");
  std::printf("| --- | --- | --- | --- | --- | --- |\n");
  Bench bench(*runtime, cpu, device, seconds);
  int failures = 0;
  for (const auto& v : all) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), v.name) == wanted.end())
      continue;
    if (cpu && v.cuda_graph) {
      std::printf("| %s | - | skipped on the CPU provider | | | |\n", v.name.c_str());
      continue;
    }
    try {
      bench.Run(v, float_model, *u8_model, batches);
    } catch (const std::exception& e) {
      ++failures;
      std::printf("| %s | - | FAILED: %.300s | | | |\n", v.name.c_str(), e.what());
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) { return Main(argc, argv); }
